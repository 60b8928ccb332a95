// epoll backend: the same completion-style contract as io_uring, built on edge-triggered
// readiness. Readiness is latched per descriptor; the work an edge allows is done in bounded
// slices (so one busy peer cannot starve the rest) and resumed on the next turn.
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "core/base/log.h"
#include "core/io/reactor.h"

namespace ringlb::core::io {
namespace {

constexpr int kMaxEvents = 256;
constexpr size_t kRecvSize = 64 * 1024;
constexpr int kReadsPerTurn = 8;
constexpr int kAcceptsPerTurn = 64;

struct FdState {
  Op* in = nullptr;   // accept, recv or poll_in
  Op* out = nullptr;  // send or connect
  bool registered = false;
  bool readable = false;
  bool writable = true;  // optimistic: a new socket can usually take a first write at once
  bool queued = false;   // in ready_ (has work to try without waiting)
  bool connecting = false;
  bool hup = false;  // the peer closed or errored: read to EOF, no further edge will come
};

class EpollReactor final : public Reactor {
 public:
  ~EpollReactor() override {
    if (epfd_ >= 0) ::close(epfd_);
  }

  int init() {
    epfd_ = epoll_create1(EPOLL_CLOEXEC);
    if (epfd_ < 0) return errno;
    buf_.resize(kRecvSize);
    return 0;
  }

  const char* name() const override { return "epoll"; }

  void accept(int fd, Op& op) override { arm_in(fd, op, OpKind::kAccept); }
  void recv(int fd, Op& op) override { arm_in(fd, op, OpKind::kRecv); }
  void poll_in(int fd, Op& op) override { arm_in(fd, op, OpKind::kPollIn); }

  void send(int fd, Op& op) override {
    FdState& st = state(fd);
    begin(op, OpKind::kSend, fd);
    st.out = &op;
    if (st.writable) enqueue(fd);
  }

  void poll_out(int fd, Op& op) override {
    FdState& st = state(fd);
    begin(op, OpKind::kPollOut, fd);
    st.out = &op;
    if (st.writable) enqueue(fd);
  }

  void forget(int fd) override {
    if (static_cast<size_t>(fd) >= fds_.size()) return;
    FdState& st = fds_[fd];
    if (st.registered) epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, nullptr);
    bool queued = st.queued;
    st = FdState{};
    st.queued = queued;
  }

  void connect(int fd, const sockaddr* addr, socklen_t len, Op& op) override {
    FdState& st = state(fd);
    begin(op, OpKind::kConnect, fd);
    if (::connect(fd, addr, len) == 0) {
      defer(op, 0);
      return;
    }
    if (errno != EINPROGRESS) {
      defer(op, -errno);
      return;
    }
    st.out = &op;
    st.connecting = true;
    st.writable = false;
  }

  void cancel(Op& op) override {
    if (!op.active || op.fd < 0 || static_cast<size_t>(op.fd) >= fds_.size()) return;
    FdState& st = fds_[op.fd];
    if (st.in == &op)
      st.in = nullptr;
    else if (st.out == &op)
      st.out = nullptr;
    else
      return;  // its completion is already on the way
    defer(op, -ECANCELED);
  }

  void close(int fd) override {
    forget(fd);  // ready_ may still name it; do_io finds no ops and drops it
    ::close(fd);
  }

  int run_once(int64_t timeout_ns) override {
    int n = 0;
    n += drain_ready();
    // Work done or waiting: do not sleep; only collect what the kernel already has.
    if (n > 0 || !deferred_.empty() || !ready_.empty()) timeout_ns = 0;
    epoll_event evs[kMaxEvents];
    timespec ts{};
    timespec* tsp = nullptr;
    if (timeout_ns >= 0) {
      ts.tv_sec = timeout_ns / 1000000000;
      ts.tv_nsec = timeout_ns % 1000000000;
      tsp = &ts;
    }
    int k = epoll_pwait2(epfd_, evs, kMaxEvents, tsp, nullptr);
    if (k < 0 && errno != EINTR) LOG_ERROR("epoll_wait failed: %s", strerror(errno));
    if (timeout_ns != 0) woke();
    for (int i = 0; i < k; ++i) {
      int fd = evs[i].data.fd;
      FdState& st = fds_[fd];
      uint32_t e = evs[i].events;
      if (e & (EPOLLIN | EPOLLHUP | EPOLLERR | EPOLLRDHUP)) st.readable = true;
      if (e & (EPOLLHUP | EPOLLERR | EPOLLRDHUP)) st.hup = true;
      if (e & (EPOLLOUT | EPOLLHUP | EPOLLERR)) st.writable = true;
      enqueue(fd);
    }
    n += drain_ready();
    n += run_deferred();
    return n;
  }

 private:
  FdState& state(int fd) {
    if (static_cast<size_t>(fd) >= fds_.size()) fds_.resize(fd + 64);
    FdState& st = fds_[fd];
    if (!st.registered) {
      epoll_event ev{};
      ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
      ev.data.fd = fd;
      if (epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) == 0)
        st.registered = true;
      else
        LOG_ERROR("epoll_ctl add fd %d: %s", fd, strerror(errno));
    }
    return st;
  }

  void begin(Op& op, OpKind kind, int fd) {
    op.kind = kind;
    op.fd = fd;
    op.active = true;
  }

  void arm_in(int fd, Op& op, OpKind kind) {
    FdState& st = state(fd);
    begin(op, kind, fd);
    st.in = &op;
    if (st.readable) enqueue(fd);
  }

  void enqueue(int fd) {
    FdState& st = fds_[fd];
    if (!st.queued) {
      st.queued = true;
      ready_.push_back(fd);
    }
  }

  void defer(Op& op, int res) { deferred_.push_back({&op, res}); }

  int run_deferred() {
    int n = 0;
    // Handlers may defer more; those run next turn (swap keeps this bounded).
    std::vector<Deferred> batch;
    batch.swap(deferred_);
    for (Deferred& d : batch) {
      d.op->active = false;
      d.op->handler->on_complete(*d.op, Completion{d.res, false, nullptr});
      ++n;
    }
    if (deferred_.empty()) deferred_.swap(batch), deferred_.clear();  // keep the capacity
    return n;
  }

  int drain_ready() {
    int n = 0;
    std::vector<int> batch;
    batch.swap(ready_);
    for (int fd : batch) {
      fds_[fd].queued = false;
      n += do_io(fd);
    }
    if (ready_.empty()) ready_.swap(batch), ready_.clear();
    return n;
  }

  // Handlers run inside; they may cancel, close or re-arm this fd, so state is re-read after
  // every callback and an op is only finished if it is still the one registered.
  int do_io(int fd) {
    int n = 0;
    if (fds_[fd].out != nullptr && fds_[fd].writable) n += do_out(fd);
    if (fds_[fd].in != nullptr && fds_[fd].readable) n += do_in(fd);
    FdState& st = fds_[fd];
    bool more_in = st.in != nullptr && st.readable;
    bool more_out = st.out != nullptr && st.writable;
    if (more_in || more_out) enqueue(fd);
    return n;
  }

  int do_out(int fd) {
    Op* op = fds_[fd].out;
    int res;
    if (op->kind == OpKind::kConnect) {
      int err = 0;
      socklen_t len = sizeof err;
      if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
      if (err == EINPROGRESS || err == EALREADY) {
        fds_[fd].writable = false;
        return 0;
      }
      fds_[fd].connecting = false;
      res = -err;
    } else if (op->kind == OpKind::kPollOut) {
      res = 1;
    } else {
      ssize_t w = ::writev(fd, op->iov, op->iovcnt);
      if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        fds_[fd].writable = false;
        return 0;
      }
      if (w < 0 && errno == EINTR) return 0;
      res = w < 0 ? -errno : static_cast<int>(w);
    }
    fds_[fd].out = nullptr;
    op->active = false;
    op->handler->on_complete(*op, Completion{res, false, nullptr});
    return 1;
  }

  int do_in(int fd) {
    Op* op = fds_[fd].in;
    switch (op->kind) {
      case OpKind::kAccept:
        return do_accept(fd, op);
      case OpKind::kRecv:
        return do_recv(fd, op);
      default: {  // kPollIn: one notice per edge; the handler drains its eventfd
        fds_[fd].readable = false;
        op->handler->on_complete(*op, Completion{1, true, nullptr});
        return 1;
      }
    }
  }

  int do_accept(int fd, Op* op) {
    int n = 0;
    for (int i = 0; i < kAcceptsPerTurn; ++i) {
      int c = accept4(fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (c < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
          fds_[fd].readable = false;
          return n;
        }
        if (errno == EINTR || errno == ECONNABORTED) continue;
        c = -errno;  // EMFILE and friends: tell the owner, stay armed
        if (c == -EMFILE || c == -ENFILE) fds_[fd].readable = false;
      }
      op->handler->on_complete(*op, Completion{c, true, nullptr});
      ++n;
      if (fds_[fd].in != op || !fds_[fd].readable) return n;
    }
    return n;
  }

  int do_recv(int fd, Op* op) {
    int n = 0;
    for (int i = 0; i < kReadsPerTurn; ++i) {
      ssize_t r = ::recv(fd, buf_.data(), buf_.size(), 0);
      if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        fds_[fd].readable = false;
        return n;
      }
      if (r < 0 && errno == EINTR) continue;
      bool final = r <= 0;
      if (final) {
        fds_[fd].in = nullptr;
        op->active = false;
      }
      op->handler->on_complete(
          *op, Completion{r < 0 ? -errno : static_cast<int>(r), !final, buf_.data()});
      ++n;
      if (final || fds_[fd].in != op) return n;
      if (static_cast<size_t>(r) < buf_.size() && !fds_[fd].hup) {
        // A short read usually means the socket is empty; the next edge tells us otherwise.
        // Not after a hang-up, though: the EOF behind the last bytes brings no new edge.
        fds_[fd].readable = false;
        return n;
      }
    }
    return n;
  }

  struct Deferred {
    Op* op;
    int res;
  };

  int epfd_ = -1;
  std::vector<FdState> fds_;
  std::vector<int> ready_;
  std::vector<Deferred> deferred_;
  std::vector<uint8_t> buf_;
};

}  // namespace

std::unique_ptr<Reactor> make_epoll_reactor(std::string& error) {
  auto r = std::make_unique<EpollReactor>();
  if (int err = r->init(); err != 0) {
    error = std::string("epoll_create1 failed: ") + strerror(err);
    return nullptr;
  }
  return r;
}

}  // namespace ringlb::core::io
