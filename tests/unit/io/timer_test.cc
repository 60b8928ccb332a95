// TimerQueue: explicit times, never a sleep.
#include "core/io/timer.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <random>
#include <vector>

using ringlb::core::io::Timer;
using ringlb::core::io::TimerHandler;
using ringlb::core::io::TimerQueue;

namespace {

struct TimerLog final : TimerHandler {
  std::vector<uint8_t> fired;
  std::vector<int64_t> deadlines;
  std::function<void(Timer&)> hook;
  void on_timer(Timer& t) override {
    CHECK_FALSE(t.armed());  // disarmed before its handler runs, so it may re-arm itself
    fired.push_back(t.tag);
    deadlines.push_back(t.deadline_ns);
    if (hook) hook(t);
  }
};

Timer make_timer(TimerLog& log, uint8_t tag) {
  Timer t;
  t.handler = &log;
  t.tag = tag;
  return t;
}

}  // namespace

TEST_CASE("timer queue: fires in deadline order; next_timeout tracks the earliest") {
  TimerQueue q;
  TimerLog log;
  Timer t1 = make_timer(log, 1), t2 = make_timer(log, 2), t3 = make_timer(log, 3),
        t4 = make_timer(log, 4);
  CHECK(q.next_timeout(0) == -1);
  CHECK(q.run(1'000'000) == 0);
  q.arm(t1, 300);
  q.arm(t2, 100);
  q.arm(t4, 400);
  q.arm(t3, 200);
  CHECK(q.size() == 4);
  CHECK(t1.armed());
  CHECK(q.next_timeout(0) == 100);
  CHECK(q.next_timeout(60) == 40);
  CHECK(q.next_timeout(100) == 0);
  CHECK(q.next_timeout(150) == 0);  // overdue counts as now, never negative

  CHECK(q.run(99) == 0);
  CHECK(log.fired.empty());
  CHECK(q.run(250) == 2);
  CHECK(log.fired == std::vector<uint8_t>{2, 3});
  CHECK_FALSE(t2.armed());
  CHECK_FALSE(t3.armed());
  CHECK(q.size() == 2);
  CHECK(q.next_timeout(250) == 50);
  CHECK(q.run(400) == 2);  // a deadline equal to now is due
  CHECK(log.fired == std::vector<uint8_t>{2, 3, 1, 4});
  CHECK(q.size() == 0);
  CHECK(q.next_timeout(400) == -1);
}

TEST_CASE("timer queue: cancel removes, re-arm moves") {
  TimerQueue q;
  TimerLog log;
  Timer a = make_timer(log, 1), b = make_timer(log, 2), c = make_timer(log, 3);
  q.arm(a, 100);
  q.arm(b, 200);
  q.arm(c, 300);

  q.cancel(b);
  CHECK_FALSE(b.armed());
  CHECK(q.size() == 2);
  q.cancel(b);  // twice is harmless
  CHECK(q.size() == 2);

  q.arm(c, 50);  // re-arm an armed timer: moves it, no duplicate
  CHECK(q.size() == 2);
  CHECK(q.next_timeout(0) == 50);
  CHECK(q.run(60) == 1);
  CHECK(log.fired == std::vector<uint8_t>{3});

  q.arm(a, 500);  // later than before
  CHECK(q.size() == 1);
  CHECK(q.run(200) == 0);
  CHECK(q.next_timeout(200) == 300);

  q.cancel(a);  // cancel the root of the heap
  CHECK(q.size() == 0);
  CHECK(q.run(10'000) == 0);
  CHECK(log.fired == std::vector<uint8_t>{3});
  CHECK(q.next_timeout(0) == -1);

  q.arm(b, 7);  // a cancelled timer arms again
  CHECK(q.run(7) == 1);
  CHECK(log.fired == std::vector<uint8_t>{3, 2});
}

TEST_CASE("timer queue: handlers may arm and cancel timers during run") {
  TimerQueue q;
  TimerLog log;
  Timer a = make_timer(log, 1), b = make_timer(log, 2), c = make_timer(log, 3),
        d = make_timer(log, 4), e = make_timer(log, 5);
  log.hook = [&](Timer& t) {
    if (t.tag == 1) {
      q.arm(b, 150);  // already due at run(200): fires in this same run
      q.arm(c, 900);  // not yet due
      q.cancel(d);    // due, but cancelled before its turn: never fires
    }
    if (t.tag == 5 && t.deadline_ns < 2000) q.arm(e, t.deadline_ns + 1000);  // periodic
  };
  q.arm(a, 100);
  q.arm(d, 180);
  q.arm(e, 120);
  CHECK(q.run(200) == 3);
  CHECK(log.fired == std::vector<uint8_t>{1, 5, 2});
  CHECK_FALSE(d.armed());
  CHECK(c.armed());
  CHECK(e.armed());
  CHECK(q.size() == 2);
  CHECK(q.next_timeout(200) == 700);
  CHECK(q.run(1000) == 1);
  CHECK(q.next_timeout(1000) == 120);
  CHECK(q.run(1120) == 1);
  CHECK(log.fired == std::vector<uint8_t>{1, 5, 2, 3, 5});
  CHECK(e.armed());
  CHECK(e.deadline_ns == 2120);
  CHECK(q.run(5000) == 1);  // its last turn does not re-arm
  CHECK(q.size() == 0);
}

TEST_CASE("timer queue: random arms, cancels and runs match a model") {
  constexpr int kTimers = 300;
  TimerQueue q;
  TimerLog log;
  std::vector<Timer> timers(kTimers);
  for (int i = 0; i < kTimers; ++i) {
    timers[i].handler = &log;
    timers[i].tag = static_cast<uint8_t>(i);
  }
  std::vector<int64_t> model(kTimers, -1);  // deadline, -1 = not armed
  std::mt19937 rng(99);
  int64_t now = 0;
  for (int step = 0; step < 5000; ++step) {
    CAPTURE(step);
    int i = static_cast<int>(rng() % kTimers);
    switch (rng() % 4) {
      case 0:
      case 1: {
        int64_t dl = now + static_cast<int64_t>(rng() % 1000);
        q.arm(timers[i], dl);
        model[i] = dl;
        break;
      }
      case 2:
        q.cancel(timers[i]);
        model[i] = -1;
        break;
      default: {
        now += static_cast<int64_t>(rng() % 200);
        log.deadlines.clear();
        int fired = q.run(now);
        int want = 0;
        for (int k = 0; k < kTimers; ++k) {
          if (model[k] >= 0 && model[k] <= now) {
            ++want;
            model[k] = -1;
          }
        }
        REQUIRE(fired == want);
        REQUIRE(std::is_sorted(log.deadlines.begin(), log.deadlines.end()));
        break;
      }
    }
    size_t armed = 0;
    int64_t earliest = -1;
    for (int k = 0; k < kTimers; ++k) {
      REQUIRE(timers[k].armed() == (model[k] >= 0));
      if (model[k] >= 0) {
        ++armed;
        if (earliest < 0 || model[k] < earliest) earliest = model[k];
      }
    }
    REQUIRE(q.size() == armed);
    REQUIRE(q.next_timeout(now) == (earliest < 0 ? -1 : std::max<int64_t>(0, earliest - now)));
  }
}

TEST_CASE("timer queue: run fires at most `limit` timers, earliest first; the rest stay due") {
  TimerQueue q;
  TimerLog log;
  std::vector<Timer> ts;
  ts.reserve(10);
  for (uint8_t i = 0; i < 10; ++i) ts.push_back(make_timer(log, i));
  for (uint8_t i = 0; i < 10; ++i) q.arm(ts[i], 100 - i);  // tag 9 is due first
  CHECK(q.run(1000, 4) == 4);
  CHECK(log.fired == std::vector<uint8_t>{9, 8, 7, 6});
  CHECK(q.next_timeout(1000) == 0);  // still due: the owner does not wait
  CHECK(q.run(1000, 4) == 4);
  CHECK(q.run(1000, 4) == 2);
  CHECK(log.fired == std::vector<uint8_t>{9, 8, 7, 6, 5, 4, 3, 2, 1, 0});
  CHECK(q.next_timeout(1000) == -1);
}
