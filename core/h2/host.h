#pragma once
// Host: what an HTTP/2 connection needs from the thread that owns it, and nothing more: the
// reactor, the timers, the clock, chunk buffers, the nghttp2 allocator, the list of connections
// with output to flush this loop turn, and a place to retire a connection whose I/O has all
// completed. A shard is one (through proxy::Context); the control thread can own another for its
// own HTTP/2 clients (health checks), and a test can drive a single connection on one.
// Owner: one thread; every method is for that thread only.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "core/base/clock.h"
#include "core/base/list.h"
#include "core/h2/connection.h"
#include "core/io/reactor.h"
#include "core/io/timer.h"
#include "core/mem/buffer.h"
#include "core/mem/session_heap.h"

namespace ringlb::core::h2 {

class Host {
 public:
  /// `index` names this host in log lines (the shard number).
  explicit Host(unsigned index, base::Clock& clock = base::Clock::system());
  virtual ~Host();
  Host(const Host&) = delete;
  Host& operator=(const Host&) = delete;

  io::Reactor& reactor() { return *reactor_; }
  bool has_reactor() const { return reactor_ != nullptr; }
  io::TimerQueue& timers() { return timers_; }
  mem::ChunkPool& chunks() { return chunks_; }
  mem::SessionHeap& session_heap() { return session_heap_; }
  base::Clock& clock() const { return clock_; }
  /// The time at the start of this loop turn, or, in handlers of completions, when the reactor
  /// woke from its wait (one clock read each).
  int64_t now() const { return now_ns_; }
  /// Reads the clock again; the loop does this at the start of each turn, the reactor's wake
  /// hook after a wait.
  int64_t refresh_now() { return now_ns_ = clock_.now_ns(); }
  unsigned index() const { return index_; }

  void add_dirty(H2Connection* c) { dirty_.push_back(c); }
  void remove_dirty(H2Connection* c) { dirty_.remove(c); }
  bool has_dirty() const { return !dirty_.empty(); }
  /// H2Connection's constructor and destructor count themselves (the trim's estimate).
  void connection_born() { ++connections_; }
  void connection_died() { --connections_; }
  static constexpr size_t kConnectionBytes = 2048;  // an H2Connection object, about
  /// A connection has completed every op; it is freed by reap().
  void retire(H2Connection* c) { graveyard_.push_back(c); }

  /// Bytes buffered on this thread (chunks in use).
  size_t buffered() const { return chunks_.in_use_bytes(); }
  /// What peers make this thread hold: the buffers (and the free ones pooled), nghttp2's state
  /// (streams, header copies, sessions) and the owner's pooled per-call objects. The limit applies
  /// to this, so an attacker that opens many streams, not only one that fills buffers, meets it.
  size_t held() const {
    return buffered() + chunks_.idle_bytes() + session_heap_.in_use_bytes() + pooled_bytes();
  }
  /// The limit past which connections stop getting connection-level credit back and new calls
  /// are refused (SIZE_MAX = none).
  size_t buffer_limit() const { return buffer_limit_; }
  void set_buffer_limit(size_t bytes) { buffer_limit_ = bytes; }
  bool over_buffer_limit() const { return held() >= buffer_limit_; }
  /// Input bytes a connection may have processed per loop turn (fair share; SIZE_MAX = all).
  size_t turn_bytes() const { return turn_bytes_; }
  void set_turn_bytes(size_t n) { turn_bytes_ = n; }
  /// Counts loop turns (a connection's share is per turn).
  uint64_t turn_number() const { return turn_number_; }
  /// Connection `c` has input held back for later turns / has no more.
  void add_backlog(H2Connection* c) { backlogged_.push_back(c); }
  void remove_backlog(H2Connection* c) { backlogged_.remove(c); }
  /// Connection `c` holds back credit until the host is under its limit again.
  void hold_credit(H2Connection* c) { withheld_.push_back(c); }
  void drop_credit(H2Connection* c) { withheld_.remove(c); }

  /// Flushes every connection marked dirty (a few rounds: one flush can dirty another).
  void flush_dirty();
  /// Frees retired connections. True if there were any.
  bool reap();
  /// One loop turn: due timers, flush, reap, then wait for completions until the next timer
  /// (at most `max_wait_ns` when that is >= 0).
  void turn(int64_t max_wait_ns);

 protected:
  void set_reactor(std::unique_ptr<io::Reactor> r) {
    reactor_ = std::move(r);
    // A completion after a long wait (an idle shard) must not see the time the wait began:
    // deadlines and keepalive silences are measured from it.
    reactor_->set_on_wake([](void* host) { static_cast<Host*>(host)->refresh_now(); }, this);
  }
  /// Called at the start of a turn while the host is over its buffer limit: free what can be
  /// freed (the proxy resets the calls holding the most). Withheld connection credit goes back
  /// once under the limit again.
  virtual void relieve_memory_pressure() {}
  /// The owner's pooled objects (calls), in bytes, and a chance to free the idle ones (after
  /// a burst, with the trim).
  virtual size_t pooled_bytes() const { return 0; }
  virtual void shrink_pools() {}
  /// Work the owner spread over turns (accepted connections to set up): runs this turn's
  /// share, after the due timers. True while some is left (the turn then does not wait).
  virtual bool run_deferred() { return false; }
  /// Timers fired per turn at most.
  static constexpr int kTimersPerTurn = 256;

 private:
  unsigned index_;
  base::Clock& clock_;
  int64_t now_ns_ = 0;
  // Before everything that owns an nghttp2 session (derived classes included): freed last.
  mem::SessionHeap session_heap_;
  std::unique_ptr<io::Reactor> reactor_;
  io::TimerQueue timers_;
  mem::ChunkPool chunks_;
  base::IntrusiveList<H2Connection, &H2Connection::dirty_link> dirty_;
  base::IntrusiveList<H2Connection, &H2Connection::withheld_link> withheld_;
  base::IntrusiveList<H2Connection, &H2Connection::backlog_link> backlogged_;
  std::vector<H2Connection*> backlog_turn_;  // this turn's backlogged connections (reused)
  size_t turn_bytes_ = SIZE_MAX;
  uint64_t turn_number_ = 1;
  std::vector<H2Connection*> graveyard_;
  size_t buffer_limit_ = SIZE_MAX;
  size_t buffered_peak_ = 0;       // since the last malloc_trim (buffers, sessions, connections)
  int64_t next_trim_ns_ = 0;       // no trim before this
  int64_t next_ring_trim_ns_ = 0;  // no reactor trim before this
  bool trim_pending_ = false;      // a trim waits: the loop wakes at trim_wake_ns_ for it
  int64_t trim_wake_ns_ = 0;
  size_t connections_ = 0;  // H2Connection objects alive on this host

  void maybe_trim();
  /// The loop wakes by `at_ns` (> now) for a trim that had to wait.
  void wake_for_trim(int64_t at_ns);
  /// Gives every connection with input held back its share for this turn.
  void drain_backlogs();
};

}  // namespace ringlb::core::h2
