#pragma once
// TimerQueue: an intrusive binary min-heap of deadlines. Owner: one thread (shard or control).
// Timers are embedded in their owners (streams, connections): arming and cancelling allocate
// nothing once the heap has grown to its working size.
#include <climits>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace ringlb::core::io {

class TimerHandler;

struct Timer {
  TimerHandler* handler = nullptr;
  uint8_t tag = 0;
  int64_t deadline_ns = 0;
  uint32_t heap_index = kNotArmed;
  static constexpr uint32_t kNotArmed = UINT32_MAX;
  bool armed() const { return heap_index != kNotArmed; }
};

class TimerHandler {
 public:
  virtual void on_timer(Timer& t) = 0;

 protected:
  ~TimerHandler() = default;
};

class TimerQueue {
 public:
  void arm(Timer& t, int64_t deadline_ns);
  void cancel(Timer& t);
  /// Fires the timers due at `now_ns`, earliest first, at most `limit` of them (the rest stay
  /// due: next_timeout() says 0); handlers may arm or cancel timers meanwhile.
  int run(int64_t now_ns, int limit = INT_MAX);
  /// Nanoseconds until the next deadline from `now_ns` (>= 0), or -1 if none is armed.
  int64_t next_timeout(int64_t now_ns) const;
  size_t size() const { return heap_.size(); }

 private:
  void sift_up(uint32_t i);
  void sift_down(uint32_t i);
  void place(uint32_t i, Timer* t) {
    heap_[i] = t;
    t->heap_index = i;
  }
  void remove_at(uint32_t i);
  std::vector<Timer*> heap_;
};

}  // namespace ringlb::core::io
