#include "core/io/timer.h"

#include <cassert>

namespace ringlb::core::io {

void TimerQueue::arm(Timer& t, int64_t deadline_ns) {
  if (t.armed()) remove_at(t.heap_index);
  t.deadline_ns = deadline_ns;
  heap_.push_back(&t);
  t.heap_index = static_cast<uint32_t>(heap_.size() - 1);
  sift_up(t.heap_index);
}

void TimerQueue::cancel(Timer& t) {
  if (t.armed()) remove_at(t.heap_index);
}

void TimerQueue::remove_at(uint32_t i) {
  assert(i < heap_.size());
  Timer* gone = heap_[i];
  Timer* last = heap_.back();
  heap_.pop_back();
  gone->heap_index = Timer::kNotArmed;
  if (gone == last) return;
  place(i, last);
  sift_down(i);
  sift_up(last->heap_index);
}

void TimerQueue::sift_up(uint32_t i) {
  Timer* t = heap_[i];
  while (i > 0) {
    uint32_t parent = (i - 1) / 2;
    if (heap_[parent]->deadline_ns <= t->deadline_ns) break;
    place(i, heap_[parent]);
    i = parent;
  }
  place(i, t);
}

void TimerQueue::sift_down(uint32_t i) {
  Timer* t = heap_[i];
  const uint32_t n = static_cast<uint32_t>(heap_.size());
  for (;;) {
    uint32_t child = 2 * i + 1;
    if (child >= n) break;
    if (child + 1 < n && heap_[child + 1]->deadline_ns < heap_[child]->deadline_ns) ++child;
    if (heap_[child]->deadline_ns >= t->deadline_ns) break;
    place(i, heap_[child]);
    i = child;
  }
  place(i, t);
}

int TimerQueue::run(int64_t now_ns, int limit) {
  int fired = 0;
  while (fired < limit && !heap_.empty() && heap_[0]->deadline_ns <= now_ns) {
    Timer* t = heap_[0];
    remove_at(0);
    t->handler->on_timer(*t);
    ++fired;
  }
  return fired;
}

int64_t TimerQueue::next_timeout(int64_t now_ns) const {
  if (heap_.empty()) return -1;
  int64_t d = heap_[0]->deadline_ns - now_ns;
  return d < 0 ? 0 : d;
}

}  // namespace ringlb::core::io
