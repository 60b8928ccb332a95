#pragma once
// Resolver: DNS queries over c-ares without a thread blocked on DNS. c-ares owns the transport
// (UDP, TCP on truncation, retries, server rotation); the owner's event loop drives its sockets
// and timeouts through ResolverIo. Owner: the control thread. Never includes core/.
#include <ares.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace ringlb::discovery {

/// Implemented by the event loop that drives the resolver.
class ResolverIo {
 public:
  /// Watch `fd` for reading and/or writing; both false: stop watching it.
  virtual void watch(int fd, bool read, bool write) = 0;

 protected:
  ~ResolverIo() = default;
};

class Resolver {
 public:
  /// `status` is an ARES_* code (ARES_SUCCESS, ARES_ENOTFOUND for NXDOMAIN, ARES_ENODATA,
  /// ARES_ESERVFAIL, ARES_EREFUSED, ARES_ETIMEOUT, ...). `message` is the raw response when the
  /// server answered (also for NXDOMAIN), else empty. Called from process()/on_timeout().
  using Callback = std::function<void(int status, std::span<const uint8_t> message)>;

  /// `servers`: "ip:port" / "[ip6]:port" texts; empty = the system's resolv.conf.
  static std::unique_ptr<Resolver> create(const std::vector<std::string>& servers, int timeout_ms,
                                          ResolverIo& io, std::string& error);
  ~Resolver();
  Resolver(const Resolver&) = delete;
  Resolver& operator=(const Resolver&) = delete;

  /// Queries `name` for `type` (1 = A, 28 = AAAA, 33 = SRV), class IN, no search list.
  void query(const std::string& name, uint16_t type, Callback cb);
  /// The event loop saw `fd` readable and/or writable.
  void process(int fd, bool readable, bool writable);
  /// The timeout from next_timeout_ns() passed.
  void on_timeout();
  /// Nanoseconds until c-ares needs on_timeout(), or -1 when nothing is pending.
  int64_t next_timeout_ns() const;
  int pending() const { return pending_; }

 private:
  Resolver(ResolverIo& io) : io_(io) {}
  static void on_sock_state(void* data, ares_socket_t fd, int readable, int writable);
  static void on_answer(void* arg, int status, int timeouts, unsigned char* abuf, int alen);

  ResolverIo& io_;
  ares_channel channel_ = nullptr;
  int pending_ = 0;
};

}  // namespace ringlb::discovery
