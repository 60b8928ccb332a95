#pragma once
// Shard-to-control reports: what a shard saw happen to an upstream (connect failed, connection
// Shard-to-control reports: what a shard saw happen to an upstream (connect failed, connection
// lost, GOAWAY, PING timeout), what its outlier detector did about it (ejected an endpoint, or
// would have but for max_ejected_percent), and, once, that a draining shard has closed its
// listeners. Shards act on what they see at once and locally; they also tell the control thread,
// which decides what every shard should see next (it confirms or takes back an ejection and
// tells every shard) and shows it to operators. Owner: the queue is shared: post() from any shard
// thread, take_all() and the eventfd from the control thread only.
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/runtime/shard_snapshot.h"

namespace ringlb::core::runtime {

struct ShardReport {
  enum class Kind : uint8_t {
    kConnectFailed,
    kConnectionLost,
    kGoaway,
    kListenersClosed,  // draining: this shard has left the listening group (no endpoint)
    kPingTimeout,
    kEjected,     // the shard ejected `key` for `duration_ns` (its own detector tripped)
    kNotEjected,  // it tripped, but ejecting would pass max_ejected_percent on that shard
                  // (kKinds counts up to it: the kinds below are not about an endpoint)
    kSnapshot,    // the answer to ShardMessage::kCollect `collect_id`: `snapshot`
  };
  static constexpr size_t kKinds = static_cast<size_t>(Kind::kNotEjected) + 1;
  ShardReport* next = nullptr;
  Kind kind = Kind::kConnectFailed;
  unsigned shard = 0;
  size_t cluster = 0;
  std::string endpoint;  // "ip:port"
  std::string detail;    // why, in words ("3 consecutive UNAVAILABLE" for ejections)
  // kEjected / kNotEjected only:
  std::string key;          // lb::endpoint_key: what shards know the endpoint by
  int64_t duration_ns = 0;  // the shard's own ejection length (kEjected)
  size_t members = 0;       // the cluster's size as that shard sees it (for the cap)
  // kSnapshot only:
  uint64_t collect_id = 0;
  std::unique_ptr<ShardSnapshot> snapshot;
  // The shard's config generation (proxy::Context::generation()) when it posted this: `cluster`
  // is an index into that snapshot's clusters. The control thread drops endpoint reports of
  // another generation (a reload crossed them).
  uint64_t generation = 0;
};

const char* report_kind_name(ShardReport::Kind k);

/// A lock-free multi-producer queue (a Treiber stack handed over whole) plus an eventfd that
/// wakes the control thread. Reports come out in the order each shard posted them.
class ReportQueue {
 public:
  ReportQueue();
  ~ReportQueue();
  ReportQueue(const ReportQueue&) = delete;
  ReportQueue& operator=(const ReportQueue&) = delete;

  /// Any thread. Takes ownership of `r`. Never blocks (one eventfd write).
  void post(ShardReport* r);
  /// Control thread: every report posted so far, oldest first. Clears the eventfd.
  std::vector<ShardReport*> take_all();
  /// For the control thread's reactor (poll_in). -1 if the eventfd could not be made.
  int fd() const { return fd_; }

 private:
  std::atomic<ShardReport*> head_{nullptr};
  int fd_ = -1;
};

}  // namespace ringlb::core::runtime
