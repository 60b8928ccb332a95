#pragma once
// Reactor: a completion-style I/O interface with two backends, io_uring (the fast path) and
// epoll (for seccomp profiles that deny io_uring: Fargate, Docker >= 25, containerd >= 2.0).
// Owner: one thread (a shard or the control thread); never shared.
//
// Rules every caller follows (DESIGN.md rule 6):
// - An Op is embedded in its owner and identifies one operation at a time. From submit until
//   its final completion (Completion::more == false) the Op and any buffer it names belong to
//   the reactor, even after cancel(). Owners wait for active() to turn false before freeing.
// - Completions are delivered from run_once(), never from inside a submit call, so a handler
//   never re-enters its own code.
#include <sys/socket.h>
#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

namespace ringlb::core::io {

class IoHandler;

/// Which reactor backend runs a shard: auto probes io_uring and falls back to epoll.
enum class IoBackend { kAuto, kIoUring, kEpoll };

enum class OpKind : uint8_t { kNone, kAccept, kRecv, kSend, kConnect, kPollIn, kPollOut };

/// One in-flight operation's identity. Embedded in its owner.
struct Op {
  IoHandler* handler = nullptr;
  uint8_t tag = 0;  // lets a handler with several ops tell them apart
  OpKind kind = OpKind::kNone;
  bool active = false;     // submitted and the final completion not yet delivered
  bool cancelled = false;  // cancel() was asked since the last submit (io_uring re-arms check it)
  int fd = -1;
  // Send: the gathered buffers; the array and the bytes stay valid until completion.
  const iovec* iov = nullptr;
  int iovcnt = 0;
};

struct Completion {
  int res = 0;                    // bytes, a new fd, 0, or -errno
  bool more = false;              // a multishot op stays armed after this completion
  const uint8_t* data = nullptr;  // recv: the bytes, valid only during the callback
};

class IoHandler {
 public:
  virtual void on_complete(Op& op, const Completion& c) = 0;

 protected:
  ~IoHandler() = default;
};

class Reactor {
 public:
  virtual ~Reactor() = default;
  virtual const char* name() const = 0;

  /// Multishot accept: one completion per new connection (res = fd, non-blocking, cloexec).
  virtual void accept(int listen_fd, Op& op) = 0;
  /// Multishot receive: res > 0 bytes in `data`, 0 = peer closed (final), < 0 = error (final).
  virtual void recv(int fd, Op& op) = 0;
  /// One-shot gathered send of op.iov/op.iovcnt (set by the caller). res = bytes sent, which
  /// may be fewer than asked; the caller sends the rest later.
  virtual void send(int fd, Op& op) = 0;
  /// One-shot connect of a non-blocking socket. res = 0 or -errno. `addr` stays valid until
  /// the completion (io_uring reads it at submit time, which is later than this call).
  virtual void connect(int fd, const sockaddr* addr, socklen_t len, Op& op) = 0;
  /// Multishot readiness for reading (eventfds, signalfds, c-ares sockets).
  virtual void poll_in(int fd, Op& op) = 0;
  /// One-shot readiness for writing (c-ares TCP sockets). res = 1 when writable.
  virtual void poll_out(int fd, Op& op) = 0;
  /// Asks an active op to finish early. Its final completion still arrives (often -ECANCELED).
  virtual void cancel(Op& op) = 0;
  /// Closes a descriptor whose ops have all completed.
  virtual void close(int fd) = 0;
  /// Drops what the reactor knows of a descriptor someone else closes (c-ares sockets).
  virtual void forget(int fd) = 0;
  /// Submits what is queued, waits up to `timeout_ns` (< 0 = forever) for at least one
  /// completion, and dispatches every completion ready. Returns how many were dispatched.
  virtual int run_once(int64_t timeout_ns) = 0;

  /// Gives back the memory of receive buffers no completion is using (after a burst): they
  /// are touched again as data arrives.
  virtual void trim() {}
  /// True after a burst touched many receive buffers, once the load has dropped again: then
  /// trim() gives something back.
  virtual bool wants_trim() const { return false; }

  /// `fn(arg)` runs in run_once after a wait that may have blocked (timeout_ns != 0) and
  /// before the completions are dispatched: the owner refreshes its cached clock there, so
  /// handlers see the time their completions came, not the time the wait began.
  void set_on_wake(void (*fn)(void*), void* arg) {
    on_wake_ = fn;
    wake_arg_ = arg;
  }

 protected:
  void woke() {
    if (on_wake_ != nullptr) on_wake_(wake_arg_);
  }

 private:
  void (*on_wake_)(void*) = nullptr;
  void* wake_arg_ = nullptr;
};

/// Picks and builds a backend per `want`. kAuto probes io_uring once and falls back to epoll on
/// EPERM/ENOSYS/EINVAL with one log line naming the errno; kIoUring is strict. ENOMEM is never
/// hidden by a fallback. On failure returns nullptr and sets `error`.
struct ReactorChoice {
  IoBackend backend = IoBackend::kEpoll;
  std::string note;  // why, for the log
};
/// Decides the backend once at start-up (control thread). Returns nullopt with `error` set when
/// the configured backend cannot run.
std::optional<ReactorChoice> choose_reactor(IoBackend want, std::string& error);
/// Builds a reactor of the chosen kind; call on the thread that will own it.
std::unique_ptr<Reactor> make_reactor(IoBackend backend, std::string& error);

std::unique_ptr<Reactor> make_epoll_reactor(std::string& error);
/// Returns nullptr and sets `err` (positive errno) and `error` when io_uring cannot be set up.
std::unique_ptr<Reactor> make_uring_reactor(int& err, std::string& error);

}  // namespace ringlb::core::io
