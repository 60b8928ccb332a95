#pragma once
// FollowedName: the membership policy of one DNS-discovered cluster. Each refresh's result goes
// in; what comes out is when to query next, whether shards need a new snapshot (and which), and
// what to log. The caller keeps the I/O (queries, timers, handing snapshots to shards) and the
// clock. Pure: every decision is reproducible in tests. Owner: the control thread, one per
// DNS-followed cluster. Never includes core/.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "discovery/answer.h"
#include "discovery/dns_message.h"
#include "discovery/membership.h"
#include "discovery/refresh.h"
#include "lb/endpoint.h"

namespace ringlb::discovery {

/// How long to hold a member missing from answers when the answers may be capped at 8 records
/// (Route 53 / Cloud Map MULTIVALUE): a whole number of `interval_ns` intervals, at least 3 and
/// at most 100, so that with `members` members fewer than 1/100 of a member is wrongly dropped
/// per refresh. 3 intervals when there are 8 members or fewer (no answer is capped then).
int64_t capped_answer_hold(int64_t interval_ns, size_t members);

/// "1.5s", "0.25s": a duration for log lines and client-visible notes.
std::string seconds_text(int64_t ns);

class FollowedName {  // owner: control thread
 public:
  /// `name`/`type`: what is followed, for notes and logs. `policy.hold_ns` >= 0 is a configured
  /// hold, used as is; -1 derives it (see hold_for).
  FollowedName(std::string name, RecordType type, RefreshPolicy policy, uint64_t seed);

  enum class Log { kNone, kInfo, kWarn };
  /// What the caller must do after an outcome.
  struct Step {
    int64_t next_query_in_ns = 0;  // arm the refresh timer this far from now
    lb::EndpointSetPtr publish;    // non-null: hand this snapshot to every shard
    Log log = Log::kNone;          // once per change of state (ok / empty / failure)
    std::string log_text;          // "DNS svc.local A: ok: 3 records, ttl 5s; 3 members"
  };

  /// Records a refresh's final result at now_ns (never one with `unresolved` targets left):
  /// - kOk: members in the answer join or stay; absent ones leave after hold_for(answer size).
  /// - kEmpty (NXDOMAIN, no records): the members stay until answers have been empty for
  ///   stale_after, then all leave.
  /// - kFailure: nothing changes (keep the last good set); the schedule backs off.
  /// A snapshot is published on the first outcome, when the members change, and while the set
  /// is empty whenever the reason clients will read (EndpointSet::note) changes.
  Step record(const LookupResult& result, int64_t now_ns);

  /// The hold for members absent from an answer of `answer_size` records: the configured hold;
  /// else 3 x the refresh interval, raised to capped_answer_hold when the answer may have been
  /// capped (8 records or more).
  int64_t hold_for(size_t answer_size) const;

  /// A first real answer (records, NXDOMAIN or NODATA) is in; failures do not count.
  bool answered() const { return answered_; }
  const Membership& membership() const { return members_; }
  const RefreshSchedule& schedule() const { return schedule_; }
  /// "ok: 3 records, ttl 5s", "NXDOMAIN", "timeout", ... ("no answer yet" before the first).
  const std::string& last_result() const { return last_result_; }
  int64_t last_refresh_ns() const { return last_refresh_ns_; }
  const std::string& name() const { return name_; }

 private:
  lb::EndpointSetPtr snapshot(const std::string& note);

  std::string name_;
  RecordType type_;
  bool hold_configured_;
  int64_t configured_hold_ns_;
  Membership members_;
  RefreshSchedule schedule_;
  uint64_t version_ = 1;
  bool answered_ = false;
  bool published_ = false;
  std::string published_note_;
  std::string last_result_ = "no answer yet";
  int64_t last_refresh_ns_ = 0;
};

}  // namespace ringlb::discovery
