#pragma once
// Socket helpers. Any thread; used at start-up (listeners) and by shards (upstream sockets).
#include <sys/socket.h>

#include <string>

#include "core/config.h"

namespace ringlb::core {

/// Non-blocking listening socket with SO_REUSEADDR and SO_REUSEPORT (one per shard, same
/// address). Returns -1 and sets `error` on failure.
int make_listen_socket(const sockaddr* addr, socklen_t len, std::string& error);
/// "ip:port" / "[ip6]:port" for an address.
std::string format_address(const sockaddr* addr, socklen_t len);
/// The bound address of a socket.
SocketAddress local_address(int fd);
/// A non-blocking, close-on-exec TCP socket for `family`, TCP_NODELAY set. -errno on failure.
int make_client_socket(int family);
/// TCP_NODELAY on an accepted socket.
void set_nodelay(int fd);

}  // namespace ringlb::core
