#pragma once
// Test support: an in-memory reactor, shared by the unit tests of the proxy core and the HTTP/2
// path micro benchmark. Owner: the one thread that drives it.
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/io/net.h"
#include "core/io/reactor.h"

namespace ringlb::test {

// MemoryReactor: the Reactor contract with no kernel I/O. Sends land in a per-fd "wire" buffer
// the driver (a test or the bench) reads; the driver injects what a peer sent as recv
// completions. Connects succeed at once unless the driver chose otherwise for that address
// (fail with an errno, or hang until cancelled); accepts and polls never fire. As the real reactors
// do, every completion is delivered from run_once() (never from inside a submit call), Op::active
// turns true on submit and false just before the final completion, and cancel() still ends in a
// final completion.
class MemoryReactor final : public core::io::Reactor {
 public:
  using Op = core::io::Op;
  using OpKind = core::io::OpKind;
  using Completion = core::io::Completion;

  const char* name() const override { return "memory"; }

  void accept(int fd, Op& op) override { arm_in(fd, op, OpKind::kAccept); }
  void recv(int fd, Op& op) override {
    arm_in(fd, op, OpKind::kRecv);
    queue_data(fd);  // bytes that came while no recv was armed wait, as in a socket buffer
  }
  void poll_in(int fd, Op& op) override { arm_in(fd, op, OpKind::kPollIn); }

  void poll_out(int fd, Op& op) override {
    begin(op, OpKind::kPollOut, fd);
    state(fd).out = &op;  // never fires: nothing in this bench waits for writability
  }

  void send(int fd, Op& op) override {
    begin(op, OpKind::kSend, fd);
    std::vector<uint8_t>& wire = state(fd).wire;
    size_t total = 0;
    for (int i = 0; i < op.iovcnt; ++i) {
      const auto* p = static_cast<const uint8_t*>(op.iov[i].iov_base);
      wire.insert(wire.end(), p, p + op.iov[i].iov_len);
      total += op.iov[i].iov_len;
    }
    queue_.push_back({&op, static_cast<int>(total), false, false});  // all of it, always
  }

  void connect(int fd, const sockaddr* addr, socklen_t len, Op& op) override {
    begin(op, OpKind::kConnect, fd);
    std::string to = core::io::format_address(addr, len);
    int res = 0;
    if (auto it = connect_results_.find(to); it != connect_results_.end()) res = it->second;
    connects_.push_back(fd);
    connect_log_.push_back({fd, to, res});
    if (res == kHang) {
      state(fd).out = &op;  // completes only when cancelled
      return;
    }
    queue_.push_back({&op, res, false, false});
  }

  void cancel(Op& op) override {
    if (!op.active) return;
    op.cancelled = true;
    FdState* st = find(op.fd);
    if (st != nullptr && st->in == &op) {
      st->in = nullptr;
    } else if (st != nullptr && st->out == &op) {
      st->out = nullptr;
    } else {
      return;  // a send or connect: its completion is already queued and arrives as it is
    }
    queue_.push_back({&op, -ECANCELED, false, false});
  }

  void close(int fd) override {
    forget(fd);
    closes_.push_back(fd);
    if (static_cast<size_t>(fd) < open_.size()) open_[static_cast<size_t>(fd)] = false;
    ::close(fd);  // the fds are real (unconnected sockets), so closing them is the real thing
  }

  void forget(int fd) override {
    if (FdState* st = find(fd)) *st = FdState{};
  }

  // Never blocks: there is nothing to wait for that is not already queued. Completions queued
  // by the handlers run next call, as the epoll backend's deferred ones do.
  int run_once(int64_t) override {
    batch_.swap(queue_);
    for (const Pending& p : batch_) {
      Op& op = *p.op;
      if (p.data) {
        deliver_data(op);
        continue;
      }
      if (!p.more) op.active = false;
      op.handler->on_complete(op, Completion{p.res, p.more, nullptr});
    }
    int n = static_cast<int>(batch_.size());
    batch_.clear();
    return n;
  }

  // Driver side.
  /// Connects to `address` ("127.0.0.1:1") from now on complete with `res` (0 = success,
  /// -ECONNREFUSED and the like = failure), or never (kHang) until cancelled.
  static constexpr int kHang = 1;
  void set_connect_result(const std::string& address, int res) { connect_results_[address] = res; }
  struct ConnectEntry {
    int fd;
    std::string address;
    int res;  // what the connect completed (or will complete) with; kHang: never
  };
  /// Every connect so far, in order.
  const std::vector<ConnectEntry>& connect_log() const { return connect_log_; }
  /// True from the first op on `fd` until the owner closes it through the reactor.
  bool is_open(int fd) const {
    return fd >= 0 && static_cast<size_t>(fd) < open_.size() && open_[static_cast<size_t>(fd)];
  }
  /// The handler of the recv (or accept, poll_in) armed on `fd`, or nullptr.
  core::io::IoHandler* in_handler(int fd) {
    FdState* st = find(fd);
    return st != nullptr && st->in != nullptr ? st->in->handler : nullptr;
  }
  /// Nothing is queued: run_once() would deliver nothing.
  bool idle() const { return queue_.empty(); }
  /// The armed recv on `fd` fails with `err` (-ECONNRESET, say), as a socket error would.
  void inject_error(int fd, int err) {
    FdState* st = find(fd);
    if (st == nullptr || st->in == nullptr || st->in->kind != OpKind::kRecv) return;
    Op* op = st->in;
    st->in = nullptr;
    queue_.push_back({op, err, false, false});
  }

  /// What a peer sent to `fd`: one recv completion with these bytes (coalesced with any not yet
  /// delivered), on the recv armed on `fd`.
  void inject(int fd, const std::vector<uint8_t>& bytes) {
    std::vector<uint8_t>& in = state(fd).inbox;
    in.insert(in.end(), bytes.begin(), bytes.end());
    queue_data(fd);
  }
  /// The peer closed `fd`: the armed recv ends with res = 0.
  void inject_eof(int fd) {
    FdState* st = find(fd);
    if (st == nullptr || st->in == nullptr || st->in->kind != OpKind::kRecv) return;
    Op* op = st->in;
    st->in = nullptr;
    queue_.push_back({op, 0, false, false});
  }
  /// Moves what was sent on `fd` into `out` (replacing its contents). True if there was any.
  bool take_wire(int fd, std::vector<uint8_t>& out) {
    out.clear();
    if (FdState* st = find(fd)) out.swap(st->wire);  // capacities ping-pong: no allocation
    return !out.empty();
  }
  const std::vector<int>& connects() const { return connects_; }
  bool closed(int fd) const {
    return std::find(closes_.begin(), closes_.end(), fd) != closes_.end();
  }

 private:
  struct FdState {
    Op* in = nullptr;   // accept, recv or poll_in
    Op* out = nullptr;  // poll_out, or a connect left hanging (sends complete at once)
    bool data_queued = false;
    std::vector<uint8_t> inbox;  // injected, not yet delivered
    std::vector<uint8_t> wire;   // sent, not yet taken
  };
  struct Pending {
    Op* op;
    int res;
    bool more;
    bool data;  // a recv completion whose bytes are the fd's inbox at delivery time
  };

  FdState& state(int fd) {
    if (static_cast<size_t>(fd) >= fds_.size()) fds_.resize(static_cast<size_t>(fd) + 16);
    return fds_[static_cast<size_t>(fd)];
  }
  FdState* find(int fd) {
    if (fd < 0 || static_cast<size_t>(fd) >= fds_.size()) return nullptr;
    return &fds_[static_cast<size_t>(fd)];
  }
  void begin(Op& op, OpKind kind, int fd) {
    if (fd >= 0) {
      if (static_cast<size_t>(fd) >= open_.size()) open_.resize(static_cast<size_t>(fd) + 16);
      open_[static_cast<size_t>(fd)] = true;
    }
    op.kind = kind;
    op.fd = fd;
    op.active = true;
    op.cancelled = false;
  }
  void arm_in(int fd, Op& op, OpKind kind) {
    begin(op, kind, fd);
    state(fd).in = &op;
  }
  void queue_data(int fd) {
    FdState& st = state(fd);
    if (st.data_queued || st.inbox.empty() || st.in == nullptr || st.in->kind != OpKind::kRecv) {
      return;
    }
    st.data_queued = true;
    queue_.push_back({st.in, 0, true, true});
  }
  void deliver_data(Op& op) {
    FdState* st = find(op.fd);
    if (st == nullptr) return;
    st->data_queued = false;
    if (st->in != &op || st->inbox.empty()) return;  // cancelled or closed since
    // The bytes move to scratch_ first: the handler may touch fds_ (a new socket resizes it),
    // and the data pointer must stay valid for the whole callback.
    scratch_.swap(st->inbox);
    op.handler->on_complete(op,
                            Completion{static_cast<int>(scratch_.size()), true, scratch_.data()});
    scratch_.clear();
  }

  std::vector<FdState> fds_;
  std::vector<Pending> queue_;
  std::vector<Pending> batch_;
  std::vector<uint8_t> scratch_;
  std::vector<int> connects_;
  std::vector<ConnectEntry> connect_log_;
  std::map<std::string, int> connect_results_;
  std::vector<int> closes_;
  std::vector<bool> open_;
};

}  // namespace ringlb::test
