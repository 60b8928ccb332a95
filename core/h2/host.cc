#include "core/h2/host.h"

#include <malloc.h>

#include <algorithm>

namespace ringlb::core::h2 {
namespace {
constexpr int kFlushRounds = 4;
}  // namespace

Host::Host(unsigned index, base::Clock& clock) : index_(index), clock_(clock) {
  now_ns_ = clock_.now_ns();
}

Host::~Host() {
  for (H2Connection* c : graveyard_) delete c;
}

void Host::flush_dirty() {
  // Flushing one connection can make another dirty (a WINDOW_UPDATE to send, say); a few rounds
  // settle that, anything left goes out next turn.
  for (int round = 0; round < kFlushRounds && !dirty_.empty(); ++round) {
    while (H2Connection* c = dirty_.front()) {
      dirty_.remove(c);
      c->flush();
    }
  }
}

bool Host::reap() {
  if (graveyard_.empty()) return false;
  for (H2Connection* c : graveyard_) delete c;
  graveyard_.clear();
  return true;
}

void Host::maybe_trim() {
  // After a burst (slow readers, a big response fan-out, thousands of connections opened and
  // closed by an attack) the memory goes back to malloc, but glibc keeps the pages and the
  // pools keep blocks: a 512 MB task would stay at its peak. Once what is held has shrunk to
  // half of its peak (a peak of kMinPeak at least), the pools keep only a small reserve and
  // malloc_trim gives the free pages back. At most once per kTrimSpacingNs; turn() wakes for a
  // pending one, so a shard that has gone quiet still does it.
  constexpr size_t kMinPeak = 256u << 10;
  constexpr int64_t kTrimSpacingNs = 250'000'000;
  constexpr int64_t kRingTrimSpacingNs = 1'000'000'000;
  constexpr size_t kReserve = 4;  // idle blocks kept per pool size
  trim_pending_ = false;
  // The reactor's receive buffers: resident once used, given back once quiet (at most 1/s).
  if (reactor_ != nullptr && reactor_->wants_trim()) {
    if (now_ns_ >= next_ring_trim_ns_) {
      reactor_->trim();
      next_ring_trim_ns_ = now_ns_ + kRingTrimSpacingNs;
    } else {
      wake_for_trim(next_ring_trim_ns_);
    }
  }
  // In use, not pooled: freed chunks that go to the pool must count as a drop.
  const size_t b = held() - chunks_.idle_bytes() + connections_ * kConnectionBytes;
  if (b > buffered_peak_) {
    buffered_peak_ = b;
    return;
  }
  if (buffered_peak_ < kMinPeak || b >= buffered_peak_ / 2) return;
  if (now_ns_ < next_trim_ns_) {
    wake_for_trim(next_trim_ns_);
    return;
  }
  shrink_pools();
  if (reactor_ != nullptr) reactor_->trim();
  chunks_.shrink(kReserve);
  session_heap_.shrink(0);  // its blocks are small and scattered: kept ones pin pages
  malloc_trim(0);
  buffered_peak_ = b;
  next_trim_ns_ = now_ns_ + kTrimSpacingNs;
}

void Host::wake_for_trim(int64_t at_ns) {
  trim_wake_ns_ = trim_pending_ ? std::min(trim_wake_ns_, at_ns) : at_ns;
  trim_pending_ = true;
}

void Host::drain_backlogs() {
  // A connection leaves the list when its backlog empties (or it closes): walk a copy.
  backlog_turn_.clear();
  backlogged_.for_each([this](H2Connection* c) { backlog_turn_.push_back(c); });
  for (H2Connection* c : backlog_turn_) c->drain_backlog();
}

void Host::turn(int64_t max_wait_ns) {
  ++turn_number_;
  refresh_now();
  // Bounded, like a connection's input: 3,000 idle connections whose handshake_timeout ends
  // together (or a burst of accepts) is tens of milliseconds of closing (setting up), which
  // the calls of every other connection would wait out. What is left runs next turn, after
  // this turn's I/O, and the wait below is then 0.
  timers_.run(now_ns_, kTimersPerTurn);
  const bool more_deferred = run_deferred();
  if (!backlogged_.empty()) drain_backlogs();
  flush_dirty();
  // After the flush: what could go out has moved on, so what is still held is held for peers
  // that do not read.
  if (over_buffer_limit()) {
    chunks_.shrink(0);  // free memory first, calls after
    if (over_buffer_limit()) relieve_memory_pressure();
  }
  if (!withheld_.empty() && !over_buffer_limit()) {
    while (H2Connection* c = withheld_.front()) {
      withheld_.remove(c);
      c->release_withheld();  // marks it dirty: the WINDOW_UPDATE goes out next turn
    }
  }
  reap();
  maybe_trim();
  // now_ns_ is at most one flush old: a timer may fire that much late, for one clock read less.
  int64_t timeout =
      dirty_.empty() && backlogged_.empty() && !more_deferred ? timers_.next_timeout(now_ns_) : 0;
  if (trim_pending_ && (timeout < 0 || timeout > trim_wake_ns_ - now_ns_)) {
    timeout = std::max<int64_t>(0, trim_wake_ns_ - now_ns_);
  }
  if (max_wait_ns >= 0 && (timeout < 0 || timeout > max_wait_ns)) timeout = max_wait_ns;
  reactor_->run_once(timeout);
}

}  // namespace ringlb::core::h2
