// Logging: what one formatted LOG_INFO line costs the thread that logs it. stderr is pointed at
// a pipe that another thread drains (as a container's log collector would), or at /dev/null.
// With the writer running (`Queued`) the caller only formats and copies into the ring; without
// it (`Direct`, also what logging was before the writer existed) the caller does the write(2).
// A tight loop logs faster than any writer drains, so the queued runs report how many lines the
// ring dropped (`dropped/line`): their time is a mix of enqueues and drops.
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "core/base/log.h"

namespace {

using namespace ringlb::core;

// Points fd 2 at a drained pipe or at /dev/null for the life of the object; restores it after.
class StderrSink {
 public:
  explicit StderrSink(bool pipe_sink) {
    saved_ = ::dup(2);
    if (pipe_sink) {
      int p[2];
      if (::pipe2(p, O_CLOEXEC) != 0) return;
      ::dup2(p[1], 2);
      ::close(p[1]);
      reader_ = std::thread([fd = p[0]] {
        char buf[65536];
        while (::read(fd, buf, sizeof buf) > 0) {
        }
        ::close(fd);
      });
    } else {
      int null = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
      ::dup2(null, 2);
      ::close(null);
    }
  }
  ~StderrSink() {
    ::dup2(saved_, 2);  // the pipe's last write end closes: the reader sees EOF
    ::close(saved_);
    if (reader_.joinable()) reader_.join();
  }

 private:
  int saved_ = -1;
  std::thread reader_;
};

void log_lines(benchmark::State& state) {
  int i = 0;
  for (auto _ : state) {
    LOG_INFO("listener %s: upstream %s reset the stream (%d)", "0.0.0.0:8080", "10.0.1.5:50051",
             ++i);
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_LogDirect(benchmark::State& state) {
  StderrSink sink(state.range(0) == 1);
  log_lines(state);
}
BENCHMARK(BM_LogDirect)->ArgName("pipe")->Arg(0)->Arg(1);

// The usual case: an occasional line on a quiet thread, so the caller also pays for waking the
// other side: the pipe's reader (direct) or the sleeping writer, through its eventfd (queued).
// Between timed lines everything is written and goes back to sleep (outside the timing).
void log_idle_lines(benchmark::State& state, bool queued) {
  int i = 0;
  for (auto _ : state) {
    state.PauseTiming();
#ifdef RINGLB_LOG_HAS_WRITER
    if (queued) base::log_flush();
#endif
    std::this_thread::sleep_for(std::chrono::microseconds(200));
    state.ResumeTiming();
    LOG_INFO("listener %s: upstream %s reset the stream (%d)", "0.0.0.0:8080", "10.0.1.5:50051",
             ++i);
  }
}

void BM_LogDirectIdle(benchmark::State& state) {
  StderrSink sink(true);
  log_idle_lines(state, false);
}
BENCHMARK(BM_LogDirectIdle)->Iterations(2000);

#ifdef RINGLB_LOG_HAS_WRITER
void BM_LogQueued(benchmark::State& state) {
  StderrSink sink(state.range(0) == 1);
  base::start_log_writer();
  uint64_t dropped_before = base::log_dropped_lines();
  log_lines(state);
  uint64_t dropped = base::log_dropped_lines() - dropped_before;
  base::stop_log_writer();
  state.counters["dropped/line"] =
      benchmark::Counter(static_cast<double>(dropped) / static_cast<double>(state.iterations()));
}
BENCHMARK(BM_LogQueued)->ArgName("pipe")->Arg(0)->Arg(1);

void BM_LogQueuedIdle(benchmark::State& state) {
  StderrSink sink(true);
  base::start_log_writer();
  log_idle_lines(state, true);
  base::stop_log_writer();
}
BENCHMARK(BM_LogQueuedIdle)->Iterations(2000);

// The same with the writer stuck (its pipe is never read): every line past the ring is a drop,
// which is what a shard pays when stderr blocks.
void BM_LogDropped(benchmark::State& state) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC | O_NONBLOCK) != 0) {
    state.SkipWithError("pipe2 failed");
    return;
  }
  while (::write(p[1], "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", 48) > 0) {
  }
  ::fcntl(p[1], F_SETFL, 0);  // full and blocking: the writer will sit in writev
  base::set_log_fd(p[1]);
  base::start_log_writer();
  log_lines(state);
  // Unblock the writer so it can flush and stop.
  std::atomic<bool> done{false};
  std::thread reader([&] {
    char buf[65536];
    ::fcntl(p[0], F_SETFL, O_NONBLOCK);
    while (!done.load()) {
      if (::read(p[0], buf, sizeof buf) <= 0) std::this_thread::yield();
    }
  });
  base::stop_log_writer();
  done.store(true);
  reader.join();
  base::set_log_fd(2);
  ::close(p[0]);
  ::close(p[1]);
}
BENCHMARK(BM_LogDropped);
#endif

}  // namespace
