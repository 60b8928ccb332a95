#pragma once
// Logging: one line per call, never interleaved with another thread's line. Any thread.
//
// While the log writer runs (start_log_writer() .. stop_log_writer()), a call formats its line on
// the caller's stack, copies it into a bounded lock-free ring (LogRing) and returns: no lock, no
// blocking syscall (at most one non-blocking eventfd write to wake a sleeping writer), so a shard
// never waits for stderr. One writer thread drains the ring to stderr with writev. When the ring
// is full the line is dropped and counted, and the writer reports "log: N lines dropped (buffer
// full)" as soon as it has room. Lines from one thread keep their order.
//
// Before the writer starts and after it stops, a call writes its line itself with write(2), as
// at start-up (config errors) and shutdown, so nothing is lost there. Before _exit, call
// log_flush() so lines still in the ring get out.
#include <cstdarg>
#include <cstddef>
#include <cstdint>

/// Defined while the queued writer exists (benchmarks that also build against the old logger).
#define RINGLB_LOG_HAS_WRITER 1

namespace ringlb::core::base {

enum class LogLevel { kDebug, kInfo, kWarn, kError };

void set_log_level(LogLevel level);
bool log_enabled(LogLevel level);
void log(LogLevel level, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

struct LogWriterOptions {
  /// Lines the ring holds (rounded up to a power of two); each slot holds one line of up to
  /// 2 KiB, so the default costs 256 KiB of resident memory (idle RSS is a floor we keep: 6 MB).
  /// Log lines are rare on shards; a burst past this is dropped and counted.
  size_t slots = 128;
};

/// Starts the writer thread; from then on log() only enqueues. Also arranges a stop at exit().
/// False (and logging stays direct) if it already runs or the thread or eventfd cannot be made.
/// Control thread (start-up), before the shards start.
bool start_log_writer(const LogWriterOptions& options = {});

/// Stops the writer after it has written every queued line; later log() calls write directly.
/// Blocks until the lines are out (as a direct write would). No-op if it is not running.
/// Control thread; never a thread that must not block.
void stop_log_writer();

/// Waits (at most `timeout_ms`) until every line logged before the call has been written.
/// True if they were (or no writer runs). For the last words before _exit() or abort().
/// Any thread that may block.
bool log_flush(int timeout_ms = 1000);

/// Lines dropped because the ring was full, since the process started. Any thread.
uint64_t log_dropped_lines();

/// Where lines go: 2 (stderr) unless changed. For tests and benchmarks; change it only while the
/// writer is stopped.
void set_log_fd(int fd);

#define RINGLB_LOG(level, ...)                                                                   \
  do {                                                                                           \
    if (::ringlb::core::base::log_enabled(level)) ::ringlb::core::base::log(level, __VA_ARGS__); \
  } while (0)
#define LOG_DEBUG(...) RINGLB_LOG(::ringlb::core::base::LogLevel::kDebug, __VA_ARGS__)
#define LOG_INFO(...) RINGLB_LOG(::ringlb::core::base::LogLevel::kInfo, __VA_ARGS__)
#define LOG_WARN(...) RINGLB_LOG(::ringlb::core::base::LogLevel::kWarn, __VA_ARGS__)
#define LOG_ERROR(...) RINGLB_LOG(::ringlb::core::base::LogLevel::kError, __VA_ARGS__)

}  // namespace ringlb::core::base
