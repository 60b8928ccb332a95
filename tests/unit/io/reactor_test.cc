// Reactor: every case runs on both backends (epoll and io_uring) against real loopback sockets,
// checking the completion contract of core/io/reactor.h: multishot ops report more == true until
// their one final completion, the final completion always arrives (also after cancel), and sends
// may be partial. (TimerQueue: timer_test.cc.)
#include "core/io/reactor.h"

#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "core/io/net.h"
#include "core/io/timer.h"

using ringlb::core::io::Completion;
using ringlb::core::io::IoHandler;
using ringlb::core::io::Op;
using ringlb::core::io::OpKind;
using ringlb::core::io::Reactor;

namespace {

constexpr int64_t kMs = 1'000'000;

// A send to a peer that has gone must fail with EPIPE, not kill the test binary (the server
// ignores SIGPIPE the same way).
[[maybe_unused]] const bool kSigpipeIgnored = [] {
  std::signal(SIGPIPE, SIG_IGN);
  return true;
}();

// Where io_uring is denied (a seccomp profile: Fargate, Docker >= 25, containerd >= 2.0) its
// cases are skipped, each with the reason, and counted: tests/run.sh reads the count from the
// line printed at exit and reports it. Any other failure to set it up is a failure.
struct UringSkips {
  int count = 0;
  std::string why;
  ~UringSkips() {
    if (count > 0)
      fprintf(stderr, "reactor tests: %d io_uring cases skipped (%s)\n", count, why.c_str());
  }
} g_uring_skips;

// Why io_uring cannot run here (denied), or empty when it can. Probed once.
const std::string& uring_denied() {
  static const std::string why = [] {
    std::string error;
    int err = 0;
    auto r = ringlb::core::io::make_uring_reactor(err, error);
    if (r != nullptr) return std::string();
    if (err == EPERM || err == ENOSYS || err == EACCES) return "io_uring denied: " + error;
    return std::string();  // anything else is a real failure: make_backend reports it
  }();
  return why;
}

std::unique_ptr<Reactor> make_backend(const std::string& which) {
  std::string error;
  int err = 0;
  auto r = which == "epoll" ? ringlb::core::io::make_epoll_reactor(error)
                            : ringlb::core::io::make_uring_reactor(err, error);
  REQUIRE_MESSAGE(r != nullptr, which << " reactor could not be set up: " << error);
  CHECK(std::string(r->name()) == which);
  return r;
}

// Runs `body` once per backend, each in its own SUBCASE so a failure names the backend.
template <class F>
void each_backend(F&& body) {
  for (const char* which : {"epoll", "io_uring"}) {
    SUBCASE(which) {
      if (std::string(which) == "io_uring" && !uring_denied().empty()) {
        MESSAGE("SKIPPED (counted): " << uring_denied());
        ++g_uring_skips.count;
        g_uring_skips.why = uring_denied();
      } else {
        auto r = make_backend(which);
        body(*r);
      }
    }
  }
}

// Turns the reactor until `cond` holds; false if it never did within `max_tries` turns.
[[nodiscard]] bool drive(Reactor& r, const std::function<bool()>& cond, int max_tries = 200) {
  int tries = 0;
  while (!cond() && tries++ < max_tries) r.run_once(10 * kMs);
  return cond();
}

struct Fd {
  int fd = -1;
  Fd() = default;
  explicit Fd(int f) : fd(f) {}
  Fd(Fd&& o) noexcept : fd(std::exchange(o.fd, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    reset();
    fd = std::exchange(o.fd, -1);
    return *this;
  }
  ~Fd() { reset(); }
  void reset() {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
  int get() const { return fd; }
};

struct Event {
  uint8_t tag = 0;
  int res = 0;
  bool more = false;
  std::string data;
};

// Records every completion; an optional hook reacts (re-arms, drains) from inside the callback.
struct Recorder final : IoHandler {
  std::vector<Event> events;
  std::function<void(Op&, const Completion&)> hook;

  void on_complete(Op& op, const Completion& c) override {
    Event e{op.tag, c.res, c.more, {}};
    if (op.kind == OpKind::kRecv && c.res > 0) {
      e.data.assign(reinterpret_cast<const char*>(c.data), static_cast<size_t>(c.res));
    }
    events.push_back(std::move(e));
    if (hook) hook(op, c);
  }

  std::vector<Event> of(uint8_t tag) const {
    std::vector<Event> out;
    for (const Event& e : events)
      if (e.tag == tag) out.push_back(e);
    return out;
  }
  bool has_final(uint8_t tag) const {
    return std::any_of(events.begin(), events.end(),
                       [&](auto& e) { return e.tag == tag && !e.more; });
  }
  std::string bytes(uint8_t tag) const {
    std::string s;
    for (const Event& e : events)
      if (e.tag == tag) s += e.data;
    return s;
  }
};

Op make_op(Recorder& rec, uint8_t tag) {
  return Op{.handler = &rec, .tag = tag};
}

sockaddr_in loopback(uint16_t port) {
  return sockaddr_in{.sin_family = AF_INET,
                     .sin_port = htons(port),
                     .sin_addr = {.s_addr = htonl(INADDR_LOOPBACK)}};
}

struct Listener {
  Fd fd;
  sockaddr_in addr{};
};

Listener listen_local() {
  sockaddr_in a = loopback(0);
  std::string error;
  int fd = ringlb::core::io::make_listen_socket(reinterpret_cast<sockaddr*>(&a), sizeof a, error);
  REQUIRE_MESSAGE(fd >= 0, error);
  Listener l;
  l.fd = Fd(fd);
  auto local = ringlb::core::io::local_address(fd);
  REQUIRE(local.len == sizeof(sockaddr_in));
  std::memcpy(&l.addr, &local.storage, sizeof l.addr);
  REQUIRE(l.addr.sin_port != 0);
  return l;
}

// A blocking client connected to `l` (the kernel completes the handshake from the backlog).
Fd connect_blocking(const Listener& l) {
  Fd c(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  REQUIRE(c.get() >= 0);
  REQUIRE(::connect(c.get(), reinterpret_cast<const sockaddr*>(&l.addr), sizeof l.addr) == 0);
  return c;
}

void set_nonblocking(int fd, bool on) {
  int fl = fcntl(fd, F_GETFL);
  REQUIRE(fl >= 0);
  REQUIRE(fcntl(fd, F_SETFL, on ? (fl | O_NONBLOCK) : (fl & ~O_NONBLOCK)) == 0);
}

// A connected loopback TCP pair, both ends non-blocking. Buffer sizes (bytes, 0 = default) are
// set before the handshake so the advertised window matches.
struct TcpPair {
  Fd a;  // the connecting side
  Fd b;  // the accepted side
};

TcpPair tcp_pair(int a_sndbuf = 0, int b_rcvbuf = 0) {
  Listener l = listen_local();
  if (b_rcvbuf > 0) {
    REQUIRE(setsockopt(l.fd.get(), SOL_SOCKET, SO_RCVBUF, &b_rcvbuf, sizeof b_rcvbuf) == 0);
  }
  Fd a(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  REQUIRE(a.get() >= 0);
  if (a_sndbuf > 0) {
    REQUIRE(setsockopt(a.get(), SOL_SOCKET, SO_SNDBUF, &a_sndbuf, sizeof a_sndbuf) == 0);
  }
  REQUIRE(::connect(a.get(), reinterpret_cast<const sockaddr*>(&l.addr), sizeof l.addr) == 0);
  pollfd p{l.fd.get(), POLLIN, 0};
  REQUIRE(::poll(&p, 1, 2000) == 1);
  Fd b(accept4(l.fd.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
  REQUIRE(b.get() >= 0);
  set_nonblocking(a.get(), true);
  ringlb::core::io::set_nodelay(a.get());
  ringlb::core::io::set_nodelay(b.get());
  return TcpPair{std::move(a), std::move(b)};
}

std::string pattern(size_t n, uint32_t seed) {
  std::string s(n, '\0');
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < n; ++i) {
    x = x * 1103515245u + 12345u;
    s[i] = static_cast<char>(x >> 16);
  }
  return s;
}

// Cancels `op` if still active and waits for its final completion (rule 6: the op and its
// buffers belong to the reactor until then).
void cancel_and_wait(Reactor& r, Op& op) {
  if (!op.active) return;
  r.cancel(op);
  REQUIRE_MESSAGE(drive(r, [&] { return !op.active; }), "cancel never completed");
}

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// accept

TEST_CASE("reactor: multishot accept delivers every new connection, then cancels") {
  each_backend([](Reactor& r) {
    Listener l = listen_local();
    Recorder rec;
    Op acc = make_op(rec, 1);
    r.accept(l.fd.get(), acc);
    CHECK(acc.active);
    CHECK(acc.kind == OpKind::kAccept);
    CHECK(rec.events.empty());  // nothing is delivered from inside a submit call

    std::vector<Fd> clients;
    for (int i = 0; i < 3; ++i) clients.push_back(connect_blocking(l));
    REQUIRE(drive(r, [&] { return rec.events.size() >= 3; }));
    // Two more while the first ones are open: the accept stayed armed.
    for (int i = 0; i < 2; ++i) clients.push_back(connect_blocking(l));
    REQUIRE(drive(r, [&] { return rec.events.size() >= 5; }));
    CHECK(rec.events.size() == 5);

    for (const Event& e : rec.events) {
      CHECK(e.res >= 0);
      CHECK(e.more);
      if (e.res < 0) continue;
      Fd accepted(e.res);
      CHECK((fcntl(e.res, F_GETFL) & O_NONBLOCK) != 0);
      CHECK((fcntl(e.res, F_GETFD) & FD_CLOEXEC) != 0);
    }
    CHECK(acc.active);

    r.cancel(acc);
    REQUIRE(drive(r, [&] { return !acc.active; }));
    const Event& last = rec.events.back();
    CHECK_FALSE(last.more);
    CHECK((last.res == -ECANCELED || last.res == 0));
    CHECK(rec.of(1).size() == 6);
  });
}

TEST_CASE("reactor: cancel an idle accept; the listener can be armed again") {
  each_backend([](Reactor& r) {
    Listener l = listen_local();
    Recorder rec;
    Op acc = make_op(rec, 1);
    r.accept(l.fd.get(), acc);
    r.run_once(0);  // submitted and armed in the kernel
    r.cancel(acc);
    REQUIRE(drive(r, [&] { return !acc.active; }));
    REQUIRE(rec.events.size() == 1);
    CHECK_FALSE(rec.events[0].more);
    CHECK((rec.events[0].res == -ECANCELED || rec.events[0].res == 0));

    // A connection that arrives while nothing is armed waits in the backlog for the next accept.
    Fd c = connect_blocking(l);
    Op acc2 = make_op(rec, 2);
    r.accept(l.fd.get(), acc2);
    REQUIRE(drive(r, [&] { return !rec.of(2).empty(); }));
    Event e = rec.of(2)[0];
    CHECK(e.res >= 0);
    CHECK(e.more);
    if (e.res >= 0) ::close(e.res);
    cancel_and_wait(r, acc2);
  });
}

// ---------------------------------------------------------------------------------------------
// recv / send

TEST_CASE("reactor: gathered send of three buffers arrives intact") {
  each_backend([](Reactor& r) {
    TcpPair p = tcp_pair();
    const std::string s1 = "alpha-";
    const std::string s2 = pattern(20000, 9);  // spans several receive buffers
    const std::string s3 = "-omega";
    iovec iov[3] = {{const_cast<char*>(s1.data()), s1.size()},
                    {const_cast<char*>(s2.data()), s2.size()},
                    {const_cast<char*>(s3.data()), s3.size()}};
    const size_t total = s1.size() + s2.size() + s3.size();

    Recorder rec;
    Op rcv = make_op(rec, 1);
    Op snd = make_op(rec, 2);
    snd.iov = iov;
    snd.iovcnt = 3;
    r.recv(p.b.get(), rcv);
    r.send(p.a.get(), snd);
    CHECK(snd.active);
    REQUIRE(drive(r, [&] { return !snd.active && rec.bytes(1).size() >= total; }));

    auto sends = rec.of(2);
    REQUIRE(sends.size() == 1);
    CHECK(sends[0].res == static_cast<int>(total));  // a small send into an empty socket is whole
    CHECK_FALSE(sends[0].more);
    CHECK(rec.bytes(1) == s1 + s2 + s3);
    for (const Event& e : rec.of(1)) {
      CHECK(e.res > 0);
      CHECK(e.more);
    }
    CHECK(rcv.active);
    cancel_and_wait(r, rcv);
  });
}

TEST_CASE("reactor: multishot recv delivers 1 MiB in order across many sends, then peer close") {
  each_backend([](Reactor& r) {
    TcpPair p = tcp_pair();
    const size_t total = 1 << 20;
    const std::string data = pattern(total, 42);
    std::atomic<size_t> received{0};
    std::atomic<bool> close_now{false};

    // The writer closes only after everything has arrived, so the close lands on an empty
    // socket (the "data and FIN together" case has its own test below).
    std::thread writer([&, fd = p.a.get()] {
      fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
      std::mt19937 rng(1);
      size_t off = 0;
      while (off < total) {
        size_t n = std::min<size_t>(total - off, 1 + rng() % 40000);
        ssize_t w = ::send(fd, data.data() + off, n, 0);
        if (w <= 0) return;
        off += static_cast<size_t>(w);
      }
      for (int i = 0; i < 3000 && received.load() < total && !close_now.load(); ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      ::shutdown(fd, SHUT_WR);
    });

    Recorder rec;
    std::string got;
    rec.hook = [&](Op&, const Completion& c) {
      if (c.res > 0) {
        got.append(reinterpret_cast<const char*>(c.data), static_cast<size_t>(c.res));
        received.store(got.size());
      }
    };
    Op rcv = make_op(rec, 1);
    r.recv(p.b.get(), rcv);
    bool done = drive(
        r, [&] { return rec.has_final(1); }, 400);
    close_now.store(true);
    writer.join();
    REQUIRE_MESSAGE(done, "no final completion; got " << got.size() << " of " << total);

    CHECK(got.size() == total);
    CHECK(got == data);  // in order, nothing lost or duplicated
    CHECK(rec.events.size() > 2);
    for (size_t i = 0; i + 1 < rec.events.size(); ++i) {
      CHECK(rec.events[i].res > 0);
      CHECK(rec.events[i].more);
    }
    CHECK(rec.events.back().res == 0);  // orderly close
    CHECK_FALSE(rec.events.back().more);
    CHECK_FALSE(rcv.active);
  });
}

TEST_CASE("reactor: recv reports a peer close that arrives together with the last bytes") {
  // The peer writes and closes before the reactor ever looks: the bytes and the FIN are both
  // queued when the first readiness is seen. The bytes must arrive, then res == 0.
  each_backend([](Reactor& r) {
    for (size_t n : {size_t{5}, size_t{100 * 1024}}) {
      CAPTURE(n);
      TcpPair p = tcp_pair();
      const std::string data = pattern(n, 3);
      set_nonblocking(p.a.get(), false);
      REQUIRE(::send(p.a.get(), data.data(), data.size(), 0) == static_cast<ssize_t>(n));
      p.a.reset();
      ::usleep(20000);  // let loopback deliver data and FIN

      Recorder rec;
      Op rcv = make_op(rec, 1);
      r.recv(p.b.get(), rcv);
      bool done = drive(
          r, [&] { return rec.has_final(1); }, 50);
      CHECK(rec.bytes(1) == data);
      CHECK_MESSAGE(done, "peer close never reported; recv still armed after " << rec.events.size()
                                                                               << " completions");
      if (done) {
        CHECK(rec.events.back().res == 0);
      }
      cancel_and_wait(r, rcv);
      // The next pair may get the same descriptor numbers: close through the reactor.
      r.close(std::exchange(p.b.fd, -1));
    }
  });
}

namespace {

// Eight connections with `each` bytes per connection written (as far as the socket buffers
// take them) before any recv is armed; `pump` writes what did not fit yet. Together far more
// than io_uring's provided-buffer ring (128 x 16 KiB) holds, so multishot recvs run out of
// buffers (-ENOBUFS) and the reactor has to re-arm them.
struct Burst {
  static constexpr int kConns = 8;
  size_t each;
  std::vector<TcpPair> pairs;
  std::vector<std::string> data;
  std::vector<size_t> sent;
  std::vector<std::string> got;
  std::vector<Op> ops;
  Recorder rec;

  Burst(size_t n, uint32_t seed) : each(n), sent(kConns, 0), got(kConns), ops(kConns) {
    int big = 4 << 20;  // root may exceed the sysctl caps; what does not fit is pumped later
    for (int i = 0; i < kConns; ++i) {
      pairs.push_back(tcp_pair());
      setsockopt(pairs[i].b.get(), SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof big);
      setsockopt(pairs[i].a.get(), SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof big);
      data.push_back(pattern(each, seed + i));
    }
    pump();
    ::usleep(20000);  // let loopback move it into the receive queues
  }
  void pump() {
    for (int i = 0; i < kConns; ++i) {
      while (sent[i] < each) {
        ssize_t w = ::send(pairs[i].a.get(), data[i].data() + sent[i], each - sent[i], 0);
        if (w <= 0) break;
        sent[i] += static_cast<size_t>(w);
      }
    }
  }
  void arm(Reactor& r, std::function<void(Op&, const Completion&)> also) {
    rec.hook = [this, also](Op& op, const Completion& c) {
      if (c.res > 0) {
        got[op.tag].append(reinterpret_cast<const char*>(c.data), static_cast<size_t>(c.res));
      }
      if (also) also(op, c);
    };
    for (int i = 0; i < kConns; ++i) {
      ops[i] = make_op(rec, static_cast<uint8_t>(i));
      r.recv(pairs[i].b.get(), ops[i]);
    }
  }
  int active() const {
    int n = 0;
    for (const Op& o : ops) n += o.active ? 1 : 0;
    return n;
  }
};

}  // namespace

TEST_CASE("reactor: recv bursts on many connections at once lose nothing") {
  each_backend([](Reactor& r) {
    Burst b(512 * 1024, 100);
    b.arm(r, nullptr);
    auto all_in = [&] {
      for (int i = 0; i < Burst::kConns; ++i)
        if (b.got[i].size() < b.each) return false;
      return true;
    };
    int tries = 0;
    while (!all_in() && b.active() == Burst::kConns && tries++ < 300) {
      r.run_once(10 * kMs);
      b.pump();
    }
    CHECK(b.active() == Burst::kConns);  // running out of buffers is not an end of stream
    for (int i = 0; i < Burst::kConns; ++i) {
      CAPTURE(i);
      CHECK(b.got[i].size() == b.each);
      CHECK(b.got[i] == b.data[i]);
    }
    for (const Event& e : b.rec.events) {
      CHECK(e.res > 0);
      CHECK(e.more);
    }
    for (Op& op : b.ops) cancel_and_wait(r, op);
  });
}

TEST_CASE("reactor: recvs cancelled from a handler during a receive burst all finish") {
  // The owner of several connections cancels them all from inside a completion (a shard
  // closing connections on a fatal error). With buffers scarce, some of those recvs may have a
  // final -ENOBUFS completion waiting later in the same batch; each cancel must still end its op.
  each_backend([](Reactor& r) {
    Burst b(1 << 20, 200);
    bool cancelled = false;
    b.arm(r, [&](Op&, const Completion&) {
      if (!cancelled) {
        cancelled = true;
        for (Op& o : b.ops) r.cancel(o);
      }
    });
    bool done = drive(
        r, [&] { return b.active() == 0; }, 100);
    CHECK_MESSAGE(done, b.active()
                            << " of " << Burst::kConns << " recvs still armed 1 s after cancel()");
    for (int i = 0; i < Burst::kConns; ++i) {
      CAPTURE(i);
      CHECK(b.got[i] == b.data[i].substr(0, b.got[i].size()));  // what arrived is in order
      auto evs = b.rec.of(static_cast<uint8_t>(i));
      if (done && !evs.empty()) {
        CHECK_FALSE(evs.back().more);
        CHECK((evs.back().res == -ECANCELED || evs.back().res == 0));
      }
    }
  });
}

TEST_CASE("reactor: a send into a full socket is partial or waits, and all of it arrives") {
  each_backend([](Reactor& r) {
    TcpPair p = tcp_pair(/*a_sndbuf=*/4096, /*b_rcvbuf=*/4096);
    const size_t total = 1 << 20;
    const std::string data = pattern(total, 5);
    size_t off = 0;
    int partials = 0;
    int errors = 0;
    iovec iov{};
    Recorder rec;
    Op snd = make_op(rec, 2);
    auto send_rest = [&] {
      iov.iov_base = const_cast<char*>(data.data() + off);
      iov.iov_len = total - off;
      snd.iov = &iov;
      snd.iovcnt = 1;
      r.send(p.a.get(), snd);
    };
    rec.hook = [&](Op& op, const Completion& c) {
      if (op.tag != 2) return;
      if (c.res <= 0) {
        ++errors;
        return;
      }
      if (static_cast<size_t>(c.res) < total - off) ++partials;
      off += static_cast<size_t>(c.res);
      if (off < total) send_rest();  // the caller sends the rest later
    };
    send_rest();

    // The peer does not read: far less than 1 MiB fits in the two small socket buffers.
    for (int i = 0; i < 5; ++i) r.run_once(10 * kMs);
    CHECK(errors == 0);
    for (const Event& e : rec.of(2)) CHECK_MESSAGE(e.res > 0, "send failed: " << e.res);
    CHECK(off < total);
    CHECK((snd.active || partials > 0));
    CHECK(snd.active);  // the re-sent rest waits for room
    const size_t before = off;

    // Now the peer reads; everything must arrive, in order.
    Op rcv = make_op(rec, 1);
    r.recv(p.b.get(), rcv);
    bool done = drive(
        r, [&] { return errors > 0 || (!snd.active && rec.bytes(1).size() >= total); }, 500);
    CHECK(errors == 0);
    REQUIRE_MESSAGE(done,
                    "sent " << off << ", received " << rec.bytes(1).size() << " of " << total);
    CHECK(off == total);
    CHECK(off > before);
    CHECK(rec.bytes(1) == data);
    cancel_and_wait(r, rcv);
  });
}

TEST_CASE("reactor: cancel of a send stuck on a full socket still completes it") {
  each_backend([](Reactor& r) {
    TcpPair p = tcp_pair(4096, 4096);
    const std::string data = pattern(1 << 20, 6);
    // Fill the socket first so the reactor's send cannot make progress.
    while (::send(p.a.get(), data.data(), data.size(), 0) > 0) {
    }
    iovec iov{const_cast<char*>(data.data()), data.size()};
    Recorder rec;
    Op snd = make_op(rec, 2);
    snd.iov = &iov;
    snd.iovcnt = 1;
    r.send(p.a.get(), snd);
    for (int i = 0; i < 3; ++i) r.run_once(5 * kMs);
    REQUIRE(snd.active);
    r.cancel(snd);
    REQUIRE(drive(r, [&] { return !snd.active; }));
    REQUIRE(rec.events.size() == 1);
    CHECK_FALSE(rec.events[0].more);
    CHECK(
        (rec.events[0].res == -ECANCELED || rec.events[0].res == -EINTR || rec.events[0].res >= 0));
  });
}

// ---------------------------------------------------------------------------------------------
// connect

TEST_CASE("reactor: connect to a listening port gives 0, to a closed port -ECONNREFUSED") {
  each_backend([](Reactor& r) {
    Recorder rec;
    SUBCASE("listening") {
      Listener l = listen_local();
      sockaddr_in addr = l.addr;  // stays valid until the completion
      int fd = ringlb::core::io::make_client_socket(AF_INET);
      REQUIRE(fd >= 0);
      Fd c(fd);
      Op op = make_op(rec, 1);
      r.connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr, op);
      CHECK(rec.events.empty());
      REQUIRE(drive(r, [&] { return !op.active; }));
      REQUIRE(rec.events.size() == 1);
      CHECK(rec.events[0].res == 0);
      CHECK_FALSE(rec.events[0].more);
      // Really connected: the listener has it and bytes flow.
      pollfd pf{l.fd.get(), POLLIN, 0};
      REQUIRE(::poll(&pf, 1, 1000) == 1);
      Fd s(accept4(l.fd.get(), nullptr, nullptr, SOCK_CLOEXEC));
      REQUIRE(s.get() >= 0);
      CHECK(::send(fd, "ok", 2, 0) == 2);
      char buf[2];
      CHECK(::recv(s.get(), buf, 2, MSG_WAITALL) == 2);
    }
    SUBCASE("closed") {
      // A port that was just bound and released: nothing listens there.
      Fd probe(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
      sockaddr_in addr = loopback(0);
      REQUIRE(::bind(probe.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
      socklen_t len = sizeof addr;
      REQUIRE(getsockname(probe.get(), reinterpret_cast<sockaddr*>(&addr), &len) == 0);
      probe.reset();
      int fd = ringlb::core::io::make_client_socket(AF_INET);
      REQUIRE(fd >= 0);
      Fd c(fd);
      Op op = make_op(rec, 1);
      r.connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr, op);
      REQUIRE(drive(r, [&] { return !op.active; }));
      REQUIRE(rec.events.size() == 1);
      CHECK(rec.events[0].res == -ECONNREFUSED);
      CHECK_FALSE(rec.events[0].more);
    }
  });
}

// ---------------------------------------------------------------------------------------------
// cancel

TEST_CASE("reactor: cancel an armed recv; the final completion arrives and recv can re-arm") {
  each_backend([](Reactor& r) {
    TcpPair p = tcp_pair();
    Recorder rec;
    Op rcv = make_op(rec, 1);

    SUBCASE("after it was armed") {
      r.recv(p.b.get(), rcv);
      r.run_once(0);
      r.run_once(0);
      CHECK(rec.events.empty());
      CHECK(rcv.active);
      r.cancel(rcv);
    }
    SUBCASE("in the same turn it was submitted") {
      r.recv(p.b.get(), rcv);
      r.cancel(rcv);
    }
    CHECK(rcv.active);  // not final until the completion is delivered
    REQUIRE(drive(r, [&] { return !rcv.active; }));
    REQUIRE(rec.events.size() == 1);
    CHECK_FALSE(rec.events[0].more);
    CHECK((rec.events[0].res == -ECANCELED || rec.events[0].res == 0));
    // Nothing more for this op once it is final.
    r.run_once(0);
    CHECK(rec.events.size() == 1);
    r.cancel(rcv);  // cancelling an inactive op is a no-op
    r.run_once(0);
    CHECK(rec.events.size() == 1);

    // The same op and descriptor work again.
    rec.events.clear();
    r.recv(p.b.get(), rcv);
    CHECK(::send(p.a.get(), "after", 5, 0) == 5);
    REQUIRE(drive(r, [&] { return rec.bytes(1).size() >= 5; }));
    CHECK(rec.bytes(1) == "after");
    cancel_and_wait(r, rcv);
  });
}

// ---------------------------------------------------------------------------------------------
// poll_in

TEST_CASE("reactor: poll_in on an eventfd written from another thread wakes run_once(-1)") {
  each_backend([](Reactor& r) {
    Fd efd(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    REQUIRE(efd.get() >= 0);
    Recorder rec;
    rec.hook = [&](Op&, const Completion&) {
      uint64_t v;
      while (::read(efd.get(), &v, sizeof v) == sizeof v) {
      }
    };
    Op op = make_op(rec, 1);
    r.poll_in(efd.get(), op);

    // A hung run_once(-1) would hang the whole suite: abort loudly instead.
    std::mutex mu;
    std::condition_variable cv;
    bool finished = false;
    std::thread watchdog([&] {
      std::unique_lock lk(mu);
      if (!cv.wait_for(lk, std::chrono::seconds(5), [&] { return finished; })) {
        std::fprintf(stderr, "reactor_test: %s run_once(-1) never woke up on the eventfd\n",
                     r.name());
        std::abort();
      }
    });

    for (int round = 1; round <= 2; ++round) {
      CAPTURE(round);
      std::thread poker([fd = efd.get()] {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        uint64_t one = 1;
        (void)!::write(fd, &one, sizeof one);
      });
      int turns = 0;
      // A turn may return with nothing dispatched (a spurious wake); only a bounded few.
      while (rec.events.size() < static_cast<size_t>(round) && turns++ < 10) r.run_once(-1);
      poker.join();
      REQUIRE(rec.events.size() == static_cast<size_t>(round));
      CHECK(rec.events.back().res > 0);
      CHECK(rec.events.back().more);  // multishot: stays armed
      CHECK(op.active);
    }
    {
      std::lock_guard lk(mu);
      finished = true;
    }
    cv.notify_all();
    watchdog.join();

    r.cancel(op);
    REQUIRE(drive(r, [&] { return !op.active; }));
    CHECK_FALSE(rec.events.back().more);
    CHECK((rec.events.back().res == -ECANCELED || rec.events.back().res == 0));
  });
}

// ---------------------------------------------------------------------------------------------
// timeouts

TEST_CASE("reactor: run_once(50ms) with nothing to do times out in about 50 ms") {
  // One early return is tolerated: tearing down an io_uring ring (the previous test's, or
  // choose_reactor's probe) makes the kernel queue task work on this thread some milliseconds
  // later, which interrupts the next blocking wait once with EINTR, whatever the backend.
  each_backend([](Reactor& r) {
    r.run_once(0);
    int early = 0;
    int on_time = 0;
    for (int i = 0; i < 3; ++i) {
      auto t0 = std::chrono::steady_clock::now();
      int n = r.run_once(50 * kMs);
      double ms = ms_since(t0);
      CAPTURE(ms);
      CHECK(n == 0);
      CHECK(ms <= 500);
      ++(ms < 40 ? early : on_time);
    }
    CHECK(early <= 1);
    CHECK(on_time >= 2);
  });
}

TEST_CASE("reactor: run_once returns at once when it has dispatched a completion") {
  // "waits up to timeout_ns for at least one completion": once a completion has been handled,
  // the caller gets control back (a shard flushes output and runs timers after each turn).
  each_backend([](Reactor& r) {
    TcpPair p = tcp_pair();
    Recorder rec;
    iovec iov{const_cast<char*>("ping"), 4};
    Op snd = make_op(rec, 2);
    snd.iov = &iov;
    snd.iovcnt = 1;
    r.send(p.a.get(), snd);
    REQUIRE(drive(r, [&] { return !snd.active; }));
    // Let every readiness edge of the first send be consumed.
    while (r.run_once(20 * kMs) > 0) {
    }
    r.run_once(20 * kMs);

    r.send(p.a.get(), snd);  // the socket has room: this completes without waiting
    auto t0 = std::chrono::steady_clock::now();
    int n = r.run_once(800 * kMs);
    double ms = ms_since(t0);
    CAPTURE(ms);
    CHECK_FALSE(snd.active);
    CHECK(n >= 1);
    CHECK_MESSAGE(ms < 400, std::string(r.name())
                                << " dispatched " << n
                                << " completion(s) and still waited for the timeout");
  });
}

TEST_CASE("reactor: the wake hook runs after a wait, before the completions it dispatches") {
  // The owner refreshes its cached clock there: a completion after a long wait must not see
  // the time the wait began (a deadline computed from it would already have passed).
  each_backend([](Reactor& r) {
    struct Wakes {
      int count = 0;
      std::chrono::steady_clock::time_point last;
    } wakes;
    r.set_on_wake(
        [](void* w) {
          auto* x = static_cast<Wakes*>(w);
          ++x->count;
          x->last = std::chrono::steady_clock::now();
        },
        &wakes);
    r.run_once(0);
    CHECK(wakes.count == 0);  // nothing waited

    Fd efd(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
    REQUIRE(efd.get() >= 0);
    Recorder rec;
    int wakes_seen = -1;
    rec.hook = [&](Op&, const Completion&) {
      wakes_seen = wakes.count;
      uint64_t v;
      while (::read(efd.get(), &v, sizeof v) == sizeof v) {
      }
    };
    Op op = make_op(rec, 1);
    r.poll_in(efd.get(), op);
    const auto written_at = std::chrono::steady_clock::now() + std::chrono::milliseconds(30);
    std::thread poker([fd = efd.get()] {
      std::this_thread::sleep_for(std::chrono::milliseconds(30));
      uint64_t one = 1;
      (void)!::write(fd, &one, sizeof one);
    });
    int turns = 0;
    while (rec.events.empty() && turns++ < 20) r.run_once(2'000 * kMs);
    poker.join();
    REQUIRE(rec.events.size() == 1);
    CHECK(wakes_seen >= 1);           // the hook ran before the handler
    CHECK(wakes.last >= written_at);  // after the wait ended, not before it began
    r.cancel(op);
    REQUIRE(drive(r, [&] { return !op.active; }));
  });
}
