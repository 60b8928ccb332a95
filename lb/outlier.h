#pragma once
// Passive outlier detection: what one endpoint's recent outcomes say about it, and how long an
// ejection lasts. Pure logic; time is passed in (nanoseconds on one monotonic clock), so tests
// are exact. Eligibility, never membership: an ejection sets lb::kEjected beside the snapshot.
//
// Owner: whoever holds the state. A shard keeps one EndpointOutlier per endpoint it knows (in
// core/proxy's EndpointState) and counts the outcomes of its own attempts; the control thread
// keeps one per endpoint it has heard of: its record of who is ejected, until when, and how many
// ejections in a row, which every shard is told. OutlierDetector itself is immutable policy.
#include <cstddef>
#include <cstdint>
#include <optional>

namespace ringlb::lb {

/// How one attempt at an endpoint ended, as far as the endpoint's health goes.
enum class Outcome : uint8_t {
  kSuccess,       // the backend answered OK
  kLocalFailure,  // local-origin: connect failed, connection lost or reset, PING or per-try
                  // timeout: the backend did not answer at all
  kUnavailable,   // the backend answered grpc-status 14 UNAVAILABLE
  kOtherStatus,   // the backend answered another status: it works, the error is the app's
};

/// Which count crossed its threshold.
enum class EjectReason : uint8_t { kLocalFailures, kUnavailable };
/// "consecutive local-origin failures" / "consecutive UNAVAILABLE", for log lines.
const char* eject_reason_text(EjectReason r);

struct OutlierPolicy {
  bool enabled = true;
  uint32_t consecutive_failures = 3;     // 0: local-origin failures never eject
  uint32_t consecutive_unavailable = 3;  // 0: UNAVAILABLE answers never eject
  int64_t base_ejection_ns = 5'000'000'000;
  int64_t max_ejection_ns = 60'000'000'000;  // >= base
  uint32_t max_ejected_percent = 50;
};

/// How many of `members` endpoints may be out (ejected) at once: floor(members x percent / 100).
/// Rounding down means the cap is never exceeded: 3 endpoints at 50% may have 1 ejected (1.5
/// rounds down), 2 at 50% may have 1, and a cluster of one never ejects its only endpoint below
/// 100%. (Envoy rounds the other way and ejects one more than the share; we do not.)
size_t max_ejectable(size_t members, uint32_t percent);

/// The length of the k-th ejection in a row (k >= 1): base x 2^(k-1), at most max.
int64_t ejection_duration(const OutlierPolicy& p, uint32_t k);

/// One endpoint's outlier state. Plain data: the shard's copy lives in its EndpointState and is
/// overwritten by what the control thread decides (ejected_until_ns, streak).
struct EndpointOutlier {
  uint32_t local_failures = 0;   // consecutive local-origin failures
  uint32_t unavailable = 0;      // consecutive UNAVAILABLE answers
  uint32_t streak = 0;           // k: ejections in a row, as of the last one (before decay)
  int64_t ejected_until_ns = 0;  // != 0: ejected until then
  int64_t returned_ns = 0;       // when the last ejection ended (the decay counts from here)

  bool ejected() const { return ejected_until_ns != 0; }
};

/// A count reached its threshold: the endpoint should be ejected (if the cap allows).
struct Trip {
  EjectReason reason = EjectReason::kLocalFailures;
  uint32_t count = 0;  // the consecutive count that reached the threshold
};

/// Passive outlier ejection for one cluster (its policy; the state is per endpoint, passed in).
///
/// Counting: a local-origin failure adds one to `local_failures`, an UNAVAILABLE answer one to
/// `unavailable`. A success or any other status proves the backend works and zeroes both; a
/// local failure does not zero the UNAVAILABLE count, nor the other way round (neither proves
/// anything works). Outcomes that arrive while the endpoint is ejected (calls that were already
/// in flight) are not counted. When a count reaches its threshold both counts restart from 0,
/// whether or not the ejection then happens, so a capped endpoint must fail that many times
/// again to be considered again.
///
/// Backoff: the k-th ejection in a row lasts base x 2^(k-1), capped at max (5 s, 10 s, 20 s,
/// 40 s, 60 s, 60 s ... with the defaults); k stops growing once max is reached. The streak
/// decays while the endpoint stays in: after an ejection ends, each stretch of time in rotation
/// as long as the current step's ejection takes one step off (k -> k-1), then the next, shorter
/// stretch the next step. So after a 20 s ejection (k = 3) an endpoint that fails again at
/// once is ejected for 40 s; one that first stays in for 20 s, for 20 s again; after 30 s in,
/// for 10 s; after 35 s, for 5 s: it has started over. (Envoy takes one step off per detection
/// interval instead; tying
/// the decay to the ejection lengths needs no interval timer, and is computed on demand.)
class OutlierDetector {
 public:
  explicit OutlierDetector(OutlierPolicy p = {});
  const OutlierPolicy& policy() const { return p_; }
  bool enabled() const { return p_.enabled; }

  /// Counts one attempt's outcome at `s`. Returns a Trip when a count reached its threshold
  /// (the counts have then restarted); nothing when disabled or while `s` is ejected.
  std::optional<Trip> count(EndpointOutlier& s, Outcome o) const;

  /// Ejects `s` (not ejected) at `now` if the cap allows: `already` of `members` endpoints are
  /// ejected now, not counting `s`. Decays the streak for the time since the last ejection
  /// ended, adds one, and sets ejected_until_ns. Returns the duration, or 0 when the cap said no
  /// (then `s` is unchanged).
  int64_t eject(EndpointOutlier& s, int64_t now, size_t members, size_t already) const;

  /// Ends `s`'s ejection if it is due at `now`. True if it ended (returned_ns = now).
  bool expire(EndpointOutlier& s, int64_t now) const;

  /// `s`'s streak after the decay up to `now` (s not ejected); what eject() builds on.
  uint32_t decayed_streak(const EndpointOutlier& s, int64_t now) const;

 private:
  OutlierPolicy p_;
  uint32_t max_streak_ = 1;  // the first k whose ejection is already max long
};

}  // namespace ringlb::lb
