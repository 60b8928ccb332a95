#pragma once
// LogRing: the bounded queue between threads that log and the one log writer thread. A ring of
// fixed-size slots, each holding one whole line, with a sequence number per slot (Vyukov's bounded
// queue, one consumer). Producers (any thread) claim the next slot with one CAS and never wait:
// when the ring is full, push() says so and the caller drops the line. Lines claimed by one thread
// keep their order because claims are strictly increasing and the consumer reads in claim order;
// a line is never split because a slot is one line.
//
// Owner: shared. push() from any thread; peek()/pop()/ready() from one consumer at a time (the
// writer thread, or whoever stops it after joining it). A claimed slot that its producer has not
// yet filled holds the consumer back until it is filled (a few hundred nanoseconds), never a
// producer.
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>

namespace ringlb::core::base {

class LogRing {
 public:
  /// The longest line a slot holds, newline included.
  static constexpr size_t kLineMax = 2048;

  /// `slots` is rounded up to a power of two, at least 2.
  explicit LogRing(size_t slots) {
    size_t n = 2;
    while (n < slots) n <<= 1;
    mask_ = n - 1;
    slots_ = std::make_unique<Slot[]>(n);
    for (size_t i = 0; i < n; ++i) slots_[i].seq.store(i, std::memory_order_relaxed);
  }
  LogRing(const LogRing&) = delete;
  LogRing& operator=(const LogRing&) = delete;

  size_t capacity() const { return mask_ + 1; }

  /// Copies one line (at most kLineMax bytes) into the next free slot. False if the ring is full.
  /// Any thread; lock-free, no syscalls.
  bool push(const char* line, size_t len) {
    uint64_t pos = tail_.load(std::memory_order_relaxed);
    Slot* slot;
    for (;;) {
      slot = &slots_[pos & mask_];
      uint64_t seq = slot->seq.load(std::memory_order_acquire);
      int64_t diff = static_cast<int64_t>(seq - pos);
      if (diff == 0) {
        if (tail_.compare_exchange_weak(pos, pos + 1, std::memory_order_relaxed)) break;
      } else if (diff < 0) {
        return false;  // the consumer has not released this slot from the previous lap
      } else {
        pos = tail_.load(std::memory_order_relaxed);
      }
    }
    if (len > kLineMax) len = kLineMax;
    std::memcpy(slot->text, line, len);
    slot->len = static_cast<uint32_t>(len);
    // seq_cst, not just release: the writer's "going to sleep" check reads this after announcing
    // it sleeps, and the producer reads that announcement after this store (see LogWriter).
    slot->seq.store(pos + 1, std::memory_order_seq_cst);
    return true;
  }

  /// Consumer: whether the line at the head is published.
  bool ready() const { return ready_at(0); }

  /// Consumer: up to `max` published lines from the head, in order, without releasing them.
  /// Returns how many; `data[i]`/`len[i]` stay valid until pop().
  size_t peek(const char** data, size_t* len, size_t max) const {
    size_t n = 0;
    while (n < max && ready_at(n)) {
      const Slot& s = slots_[(head_ + n) & mask_];
      data[n] = s.text;
      len[n] = s.len;
      ++n;
    }
    return n;
  }

  /// Consumer: releases the first `n` peeked lines to producers.
  void pop(size_t n) {
    for (size_t i = 0; i < n; ++i) {
      slots_[head_ & mask_].seq.store(head_ + mask_ + 1, std::memory_order_release);
      ++head_;
    }
    popped_.store(head_, std::memory_order_seq_cst);
  }

  /// Any thread: lines claimed so far (the position the next push takes).
  uint64_t claimed() const { return tail_.load(std::memory_order_seq_cst); }
  /// Any thread: lines handed back by the consumer so far.
  uint64_t popped() const { return popped_.load(std::memory_order_seq_cst); }

 private:
  struct alignas(64) Slot {
    std::atomic<uint64_t> seq{0};  // == position: free; == position + 1: holds that line
    uint32_t len = 0;
    char text[kLineMax];
  };

  bool ready_at(size_t i) const {
    uint64_t pos = head_ + i;
    if (i > mask_) return false;
    return slots_[pos & mask_].seq.load(std::memory_order_seq_cst) == pos + 1;
  }

  size_t mask_ = 0;
  std::unique_ptr<Slot[]> slots_;
  alignas(64) std::atomic<uint64_t> tail_{0};  // producers' claims
  alignas(64) uint64_t head_ = 0;              // consumer only
  std::atomic<uint64_t> popped_{0};            // head_, published for log_flush()
};

}  // namespace ringlb::core::base
