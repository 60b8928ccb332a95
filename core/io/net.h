#pragma once
// Socket helpers. Any thread; used at start-up (listeners) and by shards (upstream sockets).
#include <netinet/in.h>
#include <sys/socket.h>

#include <optional>
#include <string>
#include <string_view>

namespace ringlb::core::io {

/// A parsed socket address (IPv4 or IPv6 literal plus port) and the text it came from.
struct SocketAddress {
  sockaddr_storage storage{};
  socklen_t len = 0;
  std::string text;  // as written, e.g. "127.0.0.1:8080" or "[::1]:8080"
};

/// "127.0.0.1:80", "[::1]:80", "0.0.0.0:0". No host names.
std::optional<SocketAddress> parse_socket_address(std::string_view text);

/// Non-blocking listening socket with SO_REUSEADDR and SO_REUSEPORT (one per shard, same
/// address). `listen_now` false: bound only (the port is held, no connection is taken) until
/// start_listening(). Returns -1 and sets `error` on failure.
int make_listen_socket(const sockaddr* addr, socklen_t len, std::string& error,
                       bool listen_now = true);
/// listen() on a socket from make_listen_socket(..., false). False and `error` on failure.
bool start_listening(int fd, std::string& error);
/// True if another socket already listens on `addr` (a running ringlb this one will take
/// over from, through SO_REUSEPORT). Start-up only; meaningless for port 0.
bool address_in_use(const sockaddr* addr, socklen_t len);
/// "ip:port" / "[ip6]:port" for an address.
std::string format_address(const sockaddr* addr, socklen_t len);
/// The bound address of a socket.
SocketAddress local_address(int fd);
/// A non-blocking, close-on-exec TCP socket for `family`, TCP_NODELAY set. -errno on failure.
int make_client_socket(int family);
/// TCP_NODELAY on an accepted socket.
void set_nodelay(int fd);

}  // namespace ringlb::core::io
