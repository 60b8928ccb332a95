#pragma once
// RefreshSchedule: when to query a DNS name next, how to back off when the resolver fails, and
// when a run of empty answers has lasted long enough to believe. Pure: the caller passes the
// time and an RNG seed, so every decision is reproducible in tests. Owner: the control thread,
// one schedule per DNS-discovered cluster.
#include <cstdint>
#include <optional>

namespace ringlb::discovery {

struct RefreshPolicy {
  int64_t min_refresh_ns = 1'000'000'000, max_refresh_ns = 30'000'000'000;
  int64_t stale_after_ns = 300'000'000'000;  // NXDOMAIN/empty answers keep the last set this long
  int64_t hold_ns = -1;                      // -1: derived = 3 x the current refresh interval
  int64_t backoff_base_ns = 250'000'000;     // first retry after a failure
};

enum class QueryOutcome {
  kOk,
  kEmpty /* NXDOMAIN or no records */,
  kFailure /* timeout, SERVFAIL, REFUSED, malformed */
};

class RefreshSchedule {  // owner: control thread
 public:
  /// Out-of-range policy values are repaired rather than trusted: min_refresh >= 1 ns,
  /// max_refresh >= min_refresh, backoff_base >= 1 ns.
  RefreshSchedule(RefreshPolicy p, uint64_t seed);

  /// Records an outcome at now_ns; returns the delay until the next query:
  /// kOk: clamp(ttl, min_refresh, max_refresh) (TTL 0 -> min_refresh); resets failures and the
  ///   empty streak.
  /// kEmpty: same cadence as the last good interval (or min_refresh), starts/continues the empty
  ///   streak. The server did answer, so it also resets the failure count.
  /// kFailure: exponential backoff from backoff_base, doubling, capped at max_refresh, with
  ///   jitter (uniform in [d/2, d]). Neither starts nor ends an empty streak: a resolver that
  ///   stops answering tells us nothing new about the name.
  int64_t record(QueryOutcome o, uint32_t ttl_s, int64_t now_ns);
  /// Configured hold, or 3 x the last good interval (min_refresh before the first good answer).
  int64_t hold_ns() const;
  /// True once answers have been empty (kEmpty) continuously for stale_after since the first
  /// empty one; only a kOk ends the streak.
  bool stale(int64_t now_ns) const;
  int consecutive_failures() const { return failures_; }
  /// Whether the last outcome differs in kind from the one before (so the caller logs once per
  /// change of state). The first outcome ever recorded counts as a change.
  bool state_changed() const { return changed_; }

  std::optional<QueryOutcome> last_outcome() const { return last_; }
  /// Interval from the last kOk (min_refresh before any).
  int64_t good_interval_ns() const { return good_interval_ns_; }
  /// When the current empty streak began; nullopt when there is none.
  std::optional<int64_t> empty_since_ns() const { return empty_since_ns_; }

 private:
  uint64_t next_random();

  RefreshPolicy policy_;
  uint64_t rng_;
  int64_t good_interval_ns_;
  int failures_ = 0;
  std::optional<int64_t> empty_since_ns_;
  std::optional<QueryOutcome> last_;
  bool changed_ = false;
};

}  // namespace ringlb::discovery
