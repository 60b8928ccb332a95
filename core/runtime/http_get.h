#pragma once
// A one-shot, blocking HTTP/1.1 GET over a plain TCP socket: `ringlb ready` (the container and
// ECS health check, in images without curl) and, at start-up, the ECS task metadata endpoint.
// Blocking on purpose: the CLI, or the control thread before any shard runs; never a shard.
// Owner: the calling thread.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "core/base/result.h"
#include "core/runtime/http1.h"

namespace ringlb::core::runtime {

/// The parts of an "http://HOST[:PORT][/PATH]" URL. HOST may be a name, an IPv4 literal or a
/// bracketed IPv6 literal; PORT defaults to 80 and PATH to "/".
struct HttpUrl {
  std::string host;  // without brackets
  std::string port;
  std::string path;
};
std::optional<HttpUrl> parse_http_url(std::string_view url);

/// "HOST:PORT" or "[V6]:PORT" -> host and port (both non-empty, port all digits); nullopt else.
std::optional<std::pair<std::string, std::string>> split_host_port(std::string_view text);

/// GET `path` from HOST:PORT with `Connection: close`: name resolution (getaddrinfo; an IP
/// literal costs nothing), connect, send and the whole answer within `timeout_ns` (except that a
/// name server may hold getaddrinfo longer). Any status is a result; an error (cannot resolve or
/// connect, timeout, an answer over 4 MiB or malformed) is a message that names the address.
base::Result<http1::Response> http_get(const std::string& host, const std::string& port,
                                       std::string_view path, int64_t timeout_ns);

}  // namespace ringlb::core::runtime
