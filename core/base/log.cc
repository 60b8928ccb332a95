#include "core/base/log.h"

#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <mutex>
#include <system_error>
#include <thread>

#include "core/base/log_ring.h"

namespace ringlb::core::base {
namespace {

const char* const kNames[] = {"debug", "info", "warn", "error"};
constexpr size_t kBatch = 64;  // lines per writev

std::atomic<int> g_level{static_cast<int>(LogLevel::kInfo)};
std::atomic<int> g_fd{2};
std::atomic<uint64_t> g_dropped_total{0};

// Formats "<UTC time> ringlb[<level>] <message>\n" into `line` (kLineMax bytes), truncating a
// long message. Returns the length, newline included.
size_t format_line(char* line, LogLevel level, const char* fmt, va_list ap) {
  constexpr size_t kMax = LogRing::kLineMax;
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  tm t;
  gmtime_r(&ts.tv_sec, &t);
  int n = snprintf(line, kMax, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ ringlb[%s] ", t.tm_year + 1900,
                   t.tm_mon + 1, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec, ts.tv_nsec / 1000000,
                   kNames[static_cast<int>(level)]);
  int m = vsnprintf(line + n, kMax - n - 1, fmt, ap);
  size_t len = n + (m < 0 ? 0 : std::min<size_t>(m, kMax - n - 2));
  line[len++] = '\n';
  return len;
}

size_t format_line_v(char* line, LogLevel level, const char* fmt, ...)
    __attribute__((format(printf, 3, 4)));
size_t format_line_v(char* line, LogLevel level, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  size_t len = format_line(line, level, fmt, ap);
  va_end(ap);
  return len;
}

// Writes every byte or gives up on a hard error (a log line has nowhere else to go). Waits for a
// non-blocking stderr to drain instead of losing the rest of a line.
void write_all(int fd, iovec* iov, int count) {
  while (count > 0) {
    ssize_t r = ::writev(fd, iov, count);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        pollfd p{fd, POLLOUT, 0};
        ::poll(&p, 1, -1);
        continue;
      }
      return;
    }
    auto done = static_cast<size_t>(r);
    while (count > 0 && done >= iov->iov_len) {
      done -= iov->iov_len;
      ++iov;
      --count;
    }
    if (count > 0) {
      iov->iov_base = static_cast<char*>(iov->iov_base) + done;
      iov->iov_len -= done;
    }
  }
}

// The ring's one consumer thread. Sleeps on an eventfd when there is nothing to write; a producer
// writes the eventfd only when the writer has said it sleeps, so a busy writer costs producers no
// syscall. Owner: created and destroyed by the thread that calls start/stop; the ring and the
// atomics are shared with every logging thread.
class LogWriter {
 public:
  LogWriter(size_t slots, int wake_fd) : ring_(slots), wake_fd_(wake_fd) {}
  ~LogWriter() { ::close(wake_fd_); }

  // The thread blocks every signal: the process takes its signals on the control thread
  // (signalfd), and a writer started before that mask is set must not catch them instead.
  void start() {
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    try {
      thread_ = std::thread([this] { run(); });
    } catch (...) {
      pthread_sigmask(SIG_SETMASK, &old, nullptr);
      throw;
    }
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
  }

  // Producer side (any thread). Never blocks.
  void push(const char* line, size_t len) {
    if (!ring_.push(line, len)) {
      dropped_.fetch_add(1, std::memory_order_seq_cst);
      g_dropped_total.fetch_add(1, std::memory_order_relaxed);
    }
    // After the slot's seq_cst publish (or the drop count): pairs with the writer's
    // sleeping_ store followed by its re-check, so one of the two sees the other.
    if (sleeping_.load(std::memory_order_seq_cst) && sleeping_.exchange(false)) wake();
  }

  // Stop side: lets the thread write what is queued, then joins it.
  void stop_thread() {
    stop_.store(true, std::memory_order_seq_cst);
    wake();
    thread_.join();
  }

  // After stop_thread(), once no producer is left: writes whatever the thread did not see.
  void drain_rest() {
    while (drain_once() > 0) {
    }
  }

  bool flush(std::chrono::steady_clock::time_point deadline) {
    uint64_t target = ring_.claimed();
    flush_waiters_.fetch_add(1, std::memory_order_seq_cst);
    bool done;
    {
      std::unique_lock lock(flush_mu_);
      done = flush_cv_.wait_until(lock, deadline, [&] { return ring_.popped() >= target; });
    }
    flush_waiters_.fetch_sub(1, std::memory_order_seq_cst);
    return done;
  }

 private:
  void wake() {
    uint64_t one = 1;
    ssize_t r = ::write(wake_fd_, &one, sizeof one);
    (void)r;
  }

  void run() {
    for (;;) {
      if (drain_once() > 0) continue;
      if (stop_.load(std::memory_order_seq_cst)) return;
      sleeping_.store(true, std::memory_order_seq_cst);
      if (ring_.ready() || dropped_.load(std::memory_order_seq_cst) > 0 ||
          stop_.load(std::memory_order_seq_cst)) {
        sleeping_.store(false, std::memory_order_relaxed);
        continue;
      }
      uint64_t count;
      ssize_t r = ::read(wake_fd_, &count, sizeof count);  // blocks until a producer wakes us
      (void)r;
      sleeping_.store(false, std::memory_order_relaxed);
    }
  }

  // Writes up to one batch of queued lines, then the drop report if lines were dropped.
  // Returns what it wrote (lines plus reports).
  size_t drain_once() {
    const char* data[kBatch];
    size_t len[kBatch];
    iovec iov[kBatch];
    size_t n = ring_.peek(data, len, kBatch);
    for (size_t i = 0; i < n; ++i) iov[i] = {const_cast<char*>(data[i]), len[i]};
    int fd = g_fd.load(std::memory_order_relaxed);
    if (n > 0) write_all(fd, iov, static_cast<int>(n));
    if (n > 0) ring_.pop(n);  // only now may producers reuse the slots
    if (n > 0 && flush_waiters_.load(std::memory_order_seq_cst) > 0) {
      std::lock_guard lock(flush_mu_);
      flush_cv_.notify_all();
    }
    if (uint64_t d = dropped_.exchange(0, std::memory_order_seq_cst); d > 0) {
      char line[LogRing::kLineMax];
      size_t l = format_line_v(line, LogLevel::kWarn, "log: %llu lines dropped (buffer full)",
                               static_cast<unsigned long long>(d));
      iovec one{line, l};
      write_all(fd, &one, 1);
      ++n;
    }
    return n;
  }

  LogRing ring_;
  int wake_fd_;  // eventfd: producers and stop() -> writer thread
  std::thread thread_;
  std::atomic<bool> sleeping_{false};  // writer: about to block on wake_fd_
  std::atomic<bool> stop_{false};      // stop_log_writer() -> writer thread
  std::atomic<uint64_t> dropped_{0};   // producers add, the writer reports and clears
  std::atomic<int> flush_waiters_{0};  // log_flush() callers waiting on flush_cv_
  std::mutex flush_mu_;
  std::condition_variable flush_cv_;
};

// Producers pass this gate: bit 0 says the writer takes lines, the rest counts producers inside
// (2 per producer). stop_log_writer() closes the gate and waits for the count to reach zero, so
// no line is pushed into a ring that nobody will drain.
std::atomic<uint64_t> g_gate{0};
std::atomic<LogWriter*> g_writer{nullptr};  // set while bit 0 of g_gate may be set
// Serialises start and stop (and keeps log_flush() off a writer being destroyed).
std::mutex g_control_mu;
// Direct writes take this; stop holds it across the switch to direct writing, so a thread's
// direct line never overtakes its own earlier line still in the ring. Uncontended otherwise.
std::mutex g_direct_mu;

void direct_write(char* line, size_t len) {
  std::lock_guard lock(g_direct_mu);
  iovec one{line, len};
  write_all(g_fd.load(std::memory_order_relaxed), &one, 1);
}

}  // namespace

void set_log_level(LogLevel level) {
  g_level.store(static_cast<int>(level));
}

bool log_enabled(LogLevel level) {
  return static_cast<int>(level) >= g_level.load(std::memory_order_relaxed);
}

void set_log_fd(int fd) {
  g_fd.store(fd);
}

uint64_t log_dropped_lines() {
  return g_dropped_total.load(std::memory_order_relaxed);
}

void log(LogLevel level, const char* fmt, ...) {
  char line[LogRing::kLineMax];
  va_list ap;
  va_start(ap, fmt);
  size_t len = format_line(line, level, fmt, ap);
  va_end(ap);
  if (g_gate.fetch_add(2, std::memory_order_seq_cst) & 1) {
    g_writer.load(std::memory_order_acquire)->push(line, len);
    g_gate.fetch_sub(2, std::memory_order_release);
    return;
  }
  g_gate.fetch_sub(2, std::memory_order_release);
  direct_write(line, len);
}

bool start_log_writer(const LogWriterOptions& options) {
  std::lock_guard lock(g_control_mu);
  if (g_writer.load() != nullptr) return false;
  int fd = ::eventfd(0, EFD_CLOEXEC);
  if (fd < 0) return false;
  auto* w = new LogWriter(options.slots, fd);
  try {
    w->start();
  } catch (const std::system_error&) {
    delete w;
    return false;
  }
  g_writer.store(w, std::memory_order_release);
  g_gate.fetch_or(1, std::memory_order_seq_cst);
  static std::once_flag at_exit;
  std::call_once(at_exit, [] { std::atexit([] { stop_log_writer(); }); });
  return true;
}

void stop_log_writer() {
  std::lock_guard lock(g_control_mu);
  LogWriter* w = g_writer.load();
  if (w == nullptr) return;
  w->stop_thread();
  {
    std::lock_guard direct(g_direct_mu);
    g_gate.fetch_and(~uint64_t{1}, std::memory_order_seq_cst);
    // Producers still inside finish a memcpy and leave; they never wait on anything.
    while ((g_gate.load(std::memory_order_acquire) >> 1) != 0) std::this_thread::yield();
    w->drain_rest();
    g_writer.store(nullptr);
  }
  delete w;
}

bool log_flush(int timeout_ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  // Polls rather than a timed mutex: TSan does not follow pthread_mutex_clocklock. Contended
  // only while a start or stop runs, and a stop stuck on a blocked stderr must not hold us.
  std::unique_lock lock(g_control_mu, std::try_to_lock);
  while (!lock.owns_lock()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
    lock.try_lock();
  }
  LogWriter* w = g_writer.load();
  return w == nullptr || w->flush(deadline);
}

}  // namespace ringlb::core::base
