#pragma once
// The access log: one JSON line per call (log.access: stdout, a file, or off).
//
// Each shard formats its line on its own thread, straight into its own bounded byte ring (single
// producer, single consumer; lines packed end to end, access_buffer lines and access_buffer x
// 512 bytes at most): no lock, no allocation, no syscall while the writer is awake. One writer
// thread for all shards drains the rings with writev, one or two iovecs per shard and pass (the
// ring's wrap), so a pass costs one syscall however many lines it carries, and the bytes the
// shard wrote stay within a few hundred KiB of cache. A full ring drops the line and counts it
// on the shard (never waits); the writer says
// "access log: N lines dropped (buffer full)" in the process log at most once per 10 s, and once
// more at stop for what is left.
//
// Waking: the writer blocks on an eventfd only after it found every ring empty and said so
// (sleeping_); a shard writes the eventfd only when it sees that flag, so a busy writer costs the
// shards nothing. After a pass that wrote lines the writer naps before looking again, so under
// load lines go out in batches and the shards never wake it; the nap adapts (1 to 16 ms) so a
// pass carries 1/8 to 3/8 of the fullest ring: fewer wake-ups and writes, no full rings.
//
// Owner: built by the server on the control thread before the shards start; AccessLogShard::log
// runs on its shard thread only; stop() on the control thread after every shard has stopped.
#include <sys/uio.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "core/config/config.h"
#include "core/proxy/call_record.h"

namespace ringlb::core::runtime {

/// The longest access-log line, newline included. Longer field values are truncated to fit.
inline constexpr size_t kAccessLineMax = 2048;

/// The per-second part of the time field ("2026-11-29T22:19:00"), kept between lines.
struct WallSecondCache {
  int64_t second = -1;
  char text[20] = {};
};

/// Formats the access-log line for `r` into `out` (kAccessLineMax bytes): one JSON object and a
/// newline. `wall_ns`: the wall clock (CLOCK_REALTIME) at the call's end. Returns the length.
/// Any thread; no allocation.
size_t format_access_line(const proxy::CallRecord& r, const config::Config& config, int64_t wall_ns,
                          WallSecondCache& cache, char* out);

/// Whether `r` counts as a successful call for log.access_sample: gRPC status 0 (gRPC), status
/// below 400 (plain HTTP/2), and no flags.
bool access_log_success(const proxy::CallRecord& r);

class AccessLog;

/// One shard's side of the access log: its ring, its sampler and its counters.
/// Owner: the shard thread calls log(); the writer thread reads the ring; lines() and dropped()
/// are relaxed atomics any thread may read.
class AccessLogShard {
 public:
  AccessLogShard(AccessLog& log, size_t lines, double sample, uint64_t seed);
  AccessLogShard(const AccessLogShard&) = delete;
  AccessLogShard& operator=(const AccessLogShard&) = delete;

  /// Shard thread: formats the line for `r` into the ring (or drops it, counted, when the ring
  /// is full; or skips a successful call the sampler leaves out). Never blocks.
  void log(const proxy::CallRecord& r, const config::Config& config);

  /// Lines queued so far / dropped because the ring was full. Any thread (relaxed).
  uint64_t lines() const { return queued_.load(std::memory_order_relaxed); }
  uint64_t dropped() const { return dropped_.load(std::memory_order_relaxed); }
  /// Lines the ring holds at most / its size in bytes.
  size_t capacity() const { return line_cap_; }
  size_t bytes() const { return byte_mask_ + 1; }

  /// A ring position: lines (mod 2^24) and bytes (mod 2^40) in one word, so the writer reads
  /// both with one load. Differences of two positions are taken per field.
  static constexpr unsigned kByteBits = 40;
  static constexpr uint64_t kByteField = (uint64_t{1} << kByteBits) - 1;
  static constexpr uint64_t kLineField = (uint64_t{1} << (64 - kByteBits)) - 1;
  static uint64_t pack(uint64_t lines, uint64_t bytes) {
    return (lines << kByteBits) | (bytes & kByteField);
  }
  static uint64_t lines_between(uint64_t from, uint64_t to) {
    return ((to >> kByteBits) - (from >> kByteBits)) & kLineField;
  }
  static uint64_t bytes_between(uint64_t from, uint64_t to) { return (to - from) & kByteField; }

 private:
  friend class AccessLog;

  AccessLog& log_;
  size_t line_cap_ = 0;
  size_t byte_mask_ = 0;
  std::unique_ptr<char[]> ring_;  // pages are touched only as the ring first goes round
  // Shard only.
  uint64_t tail_lines_ = 0;  // lines and bytes published (the unpacked tail_)
  uint64_t tail_bytes_ = 0;
  uint64_t head_seen_ = 0;     // head_ as last read: room without a shared load
  uint64_t sample_below_ = 0;  // a successful call is kept if random < this
  bool sample_all_ = true;
  uint64_t random_ = 0;
  WallSecondCache wall_;
  char scratch_[kAccessLineMax];  // a line that would straddle the ring's end is formatted here
  // Shard writes, the writer reads.
  alignas(64) std::atomic<uint64_t> tail_{0};  // pack(lines, bytes) published
  std::atomic<uint64_t> queued_{0};
  std::atomic<uint64_t> dropped_{0};
  // Writer side.
  alignas(64) std::atomic<uint64_t> head_{0};  // pack(lines, bytes) written out
  uint64_t head_bytes_ = 0;                    // writer only: head_'s bytes, unwrapped
  uint64_t dropped_reported_ = 0;              // writer only
};

/// The writer and the shards' rings. See the top of this file.
class AccessLog {
 public:
  /// From the config: null with log.access off; null and `error` if the file cannot be opened.
  /// Control thread, at start-up.
  static std::unique_ptr<AccessLog> create(const config::LogConfig& c, unsigned shards,
                                           std::string& error);
  /// Writes to `fd` (owned and closed if `own_fd`), `shards` rings of `lines` lines each (at
  /// least 2) in `lines` x 512 bytes (rounded up to a power of two, at least 8 KiB). `path` (may
  /// be empty) is what reopen() opens.
  AccessLog(int fd, bool own_fd, std::string path, unsigned shards, size_t lines, double sample);
  ~AccessLog();  // stop()
  AccessLog(const AccessLog&) = delete;
  AccessLog& operator=(const AccessLog&) = delete;

  /// Shard `i`'s side, for its ShardSetup.
  AccessLogShard* shard(unsigned i) { return shards_[i].get(); }
  unsigned shard_count() const { return static_cast<unsigned>(shards_.size()); }

  /// Starts the writer thread. False and `error` if it cannot. Control thread.
  bool start(std::string& error);
  /// Writes every queued line, reports drops not yet reported, and joins the writer. Call it
  /// once the shards have stopped (a line queued after it is never written). Idempotent.
  void stop();
  /// Log rotation: opens the path again (a file target) and writes there from the next batch
  /// on. False and `error` if the open failed (the old file stays). Control thread.
  bool reopen(std::string& error);

  /// Lines written so far. Any thread (relaxed).
  uint64_t written() const { return written_.load(std::memory_order_relaxed); }
  /// Lines dropped (rings full) that the writer has reported in the process log.
  uint64_t dropped_reported() const { return dropped_reported_.load(std::memory_order_relaxed); }

 private:
  friend class AccessLogShard;
  void run();
  /// Writes what the rings hold (one writev); returns the lines written.
  size_t drain_once();
  /// Logs the drops not yet reported, if `force` or 10 s passed since the last report.
  void report_drops(bool force);
  bool any_queued() const;
  /// Shard side: the writer sleeps; wake it (one eventfd write, by whoever wins the flag).
  void wake_if_sleeping();
  void wake();

  std::vector<std::unique_ptr<AccessLogShard>> shards_;
  std::atomic<int> fd_;
  bool own_fd_;
  std::string path_;
  int wake_fd_ = -1;
  std::thread thread_;
  // Read by every shard after each line: alone on its cache line, written only when the
  // writer goes to sleep or is woken.
  alignas(64) std::atomic<bool> sleeping_{false};  // the writer: about to block on wake_fd_
  alignas(64) std::atomic<bool> stop_{false};
  std::atomic<int> pending_fd_{-1};  // reopen(): the writer switches to it between batches
  std::atomic<uint64_t> written_{0};
  std::atomic<uint64_t> dropped_reported_{0};
  int64_t last_report_ns_ = 0;    // writer only
  std::vector<uint64_t> take_;    // writer only: per shard, the tail_ a pass wrote up to
  std::vector<iovec> iov_;        // writer only: two per shard
  size_t last_fill_eighths_ = 0;  // writer only: the last pass's share of its fullest ring
};

}  // namespace ringlb::core::runtime
