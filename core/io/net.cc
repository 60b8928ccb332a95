#include "core/io/net.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>

namespace ringlb::core::io {
namespace {

std::optional<uint16_t> parse_port(std::string_view text) {
  if (text.empty() || text.size() > 5) return std::nullopt;
  unsigned value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value > 65535) return std::nullopt;
  return static_cast<uint16_t>(value);
}

}  // namespace

std::optional<SocketAddress> parse_socket_address(std::string_view text) {
  std::string_view host;
  std::string_view port;
  bool v6 = false;
  if (text.starts_with('[')) {
    size_t close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      return std::nullopt;
    }
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
    v6 = true;
  } else {
    size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) return std::nullopt;
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    // An unbracketed IPv6 address would make the port ambiguous ("::1:80").
    if (host.find(':') != std::string_view::npos) return std::nullopt;
  }
  std::optional<uint16_t> port_number = parse_port(port);
  // inet_pton reads a C string: an embedded NUL would silently cut the host short.
  if (!port_number || host.empty() || host.find('\0') != std::string_view::npos) {
    return std::nullopt;
  }
  std::string host_z(host);
  SocketAddress out;
  if (v6) {
    sockaddr_in6 sa{};
    sa.sin6_family = AF_INET6;
    sa.sin6_port = htons(*port_number);
    if (inet_pton(AF_INET6, host_z.c_str(), &sa.sin6_addr) != 1) return std::nullopt;
    std::memcpy(&out.storage, &sa, sizeof sa);
    out.len = sizeof sa;
  } else {
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(*port_number);
    if (inet_pton(AF_INET, host_z.c_str(), &sa.sin_addr) != 1) return std::nullopt;
    std::memcpy(&out.storage, &sa, sizeof sa);
    out.len = sizeof sa;
  }
  out.text = std::string(text);
  return out;
}

int make_listen_socket(const sockaddr* addr, socklen_t len, std::string& error, bool listen_now) {
  int fd = ::socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    error = std::string("socket: ") + strerror(errno);
    return -1;
  }
  // Both before bind, on every socket: a second ringlb (same uid) binds the same address
  // while the first still serves, and the kernel spreads new connections over both.
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  if (addr->sa_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  if (::bind(fd, addr, len) < 0) {
    error = "bind " + format_address(addr, len) + ": " + strerror(errno);
    ::close(fd);
    return -1;
  }
  if (listen_now && !start_listening(fd, error)) {
    ::close(fd);
    return -1;
  }
  return fd;
}

bool start_listening(int fd, std::string& error) {
  if (::listen(fd, 4096) == 0) return true;
  SocketAddress a = local_address(fd);
  error = "listen " + a.text + ": " + strerror(errno);
  return false;
}

bool address_in_use(const sockaddr* addr, socklen_t len) {
  // A probe without SO_REUSEPORT: its bind fails only if another socket listens on (or holds
  // without SO_REUSEADDR) this address; SO_REUSEADDR lets it past TIME_WAIT leftovers.
  int fd = ::socket(addr->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (addr->sa_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  bool in_use = ::bind(fd, addr, len) < 0 && errno == EADDRINUSE;
  ::close(fd);
  return in_use;
}

std::string format_address(const sockaddr* addr, socklen_t len) {
  char host[INET6_ADDRSTRLEN] = "?";
  if (addr->sa_family == AF_INET && len >= sizeof(sockaddr_in)) {
    auto* a = reinterpret_cast<const sockaddr_in*>(addr);
    inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
    return std::string(host) + ":" + std::to_string(ntohs(a->sin_port));
  }
  if (addr->sa_family == AF_INET6 && len >= sizeof(sockaddr_in6)) {
    auto* a = reinterpret_cast<const sockaddr_in6*>(addr);
    inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
    return "[" + std::string(host) + "]:" + std::to_string(ntohs(a->sin6_port));
  }
  return "?";
}

SocketAddress local_address(int fd) {
  SocketAddress a;
  a.len = sizeof a.storage;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&a.storage), &a.len) == 0) {
    a.text = format_address(reinterpret_cast<sockaddr*>(&a.storage), a.len);
  }
  return a;
}

int make_client_socket(int family) {
  int fd = ::socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  set_nodelay(fd);
  return fd;
}

void set_nodelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

}  // namespace ringlb::core::io
