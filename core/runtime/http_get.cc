#include "core/runtime/http_get.h"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "core/base/clock.h"
#include "core/io/net.h"

namespace ringlb::core::runtime {
namespace {

constexpr size_t kMaxAnswer = 4 << 20;  // the ECS task document is tens of KiB

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) ::close(fd);
  }
};

// Waits for `events` on fd until `deadline_ns`. False on timeout.
bool wait_for(int fd, short events, int64_t deadline_ns) {
  for (;;) {
    int64_t left = deadline_ns - base::mono_now_ns();
    if (left <= 0) return false;
    pollfd p{fd, events, 0};
    int n = ::poll(&p, 1, static_cast<int>(std::min<int64_t>((left + 999'999) / 1'000'000, 60000)));
    if (n > 0) return true;
    if (n < 0 && errno != EINTR) return true;  // let the next syscall say what is wrong
  }
}

std::string seconds_text(int64_t ns) {
  char buf[32];
  snprintf(buf, sizeof buf, "%gs", static_cast<double>(ns) / 1e9);
  return buf;
}

// A connected non-blocking socket to one of `host`'s addresses, or the error.
base::Result<int> connect_to(const std::string& host, const std::string& port,
                             const std::string& where, int64_t deadline_ns, int64_t timeout_ns) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* list = nullptr;
  if (int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &list); rc != 0) {
    return base::fail("cannot resolve " + where + ": " + gai_strerror(rc));
  }
  std::string error = "cannot connect to " + where + ": no address";
  for (addrinfo* ai = list; ai != nullptr; ai = ai->ai_next) {
    int fd = io::make_client_socket(ai->ai_family);
    if (fd < 0) {
      error = "cannot connect to " + where + ": socket: " + std::strerror(-fd);
      continue;
    }
    int rc = ::connect(fd, ai->ai_addr, ai->ai_addrlen);
    int err = rc == 0 ? 0 : errno;
    if (err == EINPROGRESS) {
      if (!wait_for(fd, POLLOUT, deadline_ns)) {
        ::close(fd);
        error = "timed out after " + seconds_text(timeout_ns) + " connecting to " + where;
        break;
      }
      socklen_t len = sizeof err;
      if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
    }
    if (err == 0) {
      ::freeaddrinfo(list);
      return fd;
    }
    ::close(fd);
    error = "cannot connect to " + where + ": " + std::strerror(err);
  }
  ::freeaddrinfo(list);
  return base::fail(error);
}

}  // namespace

std::optional<std::pair<std::string, std::string>> split_host_port(std::string_view text) {
  std::string_view host;
  std::string_view port;
  if (text.starts_with('[')) {
    size_t close = text.find(']');
    if (close == std::string_view::npos || text.substr(close + 1, 1) != ":") return std::nullopt;
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) return std::nullopt;
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) return std::nullopt;  // v6 needs brackets
  }
  bool digits = !port.empty() && port.size() <= 5 &&
                std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; });
  if (host.empty() || !digits) return std::nullopt;
  return std::make_pair(std::string(host), std::string(port));
}

std::optional<HttpUrl> parse_http_url(std::string_view url) {
  constexpr std::string_view kScheme = "http://";
  if (url.size() < kScheme.size() || url.substr(0, kScheme.size()) != kScheme) return std::nullopt;
  url.remove_prefix(kScheme.size());
  size_t slash = url.find('/');
  std::string_view authority = url.substr(0, slash);
  HttpUrl out;
  out.path = slash == std::string_view::npos ? "/" : std::string(url.substr(slash));
  bool bracketed = authority.starts_with('[');
  size_t colon = authority.rfind(':');
  if (colon != std::string_view::npos && (!bracketed || authority[colon - 1] == ']')) {
    auto hp = split_host_port(authority);
    if (!hp) return std::nullopt;
    out.host = hp->first;
    out.port = hp->second;
  } else {
    if (bracketed) {
      if (!authority.ends_with(']')) return std::nullopt;
      authority = authority.substr(1, authority.size() - 2);
    }
    out.host = std::string(authority);
    out.port = "80";
  }
  if (out.host.empty()) return std::nullopt;
  return out;
}

base::Result<http1::Response> http_get(const std::string& host, const std::string& port,
                                       std::string_view path, int64_t timeout_ns) {
  const int64_t deadline = base::mono_now_ns() + timeout_ns;
  const bool v6 = host.find(':') != std::string::npos;
  const std::string where = (v6 ? "[" + host + "]" : host) + ":" + port;
  auto connected = connect_to(host, port, where, deadline, timeout_ns);
  if (!connected) return base::Unexpected(connected.error());
  Fd sock{*connected};
  const std::string request = "GET " + std::string(path) + " HTTP/1.1\r\nHost: " + where +
                              "\r\nUser-Agent: ringlb\r\nAccept: */*\r\nConnection: close\r\n\r\n";
  auto timed_out = [&] {
    return base::fail("timed out after " + seconds_text(timeout_ns) +
                      " waiting for the answer from " + where);
  };
  for (size_t sent = 0; sent < request.size();) {
    ssize_t n = ::send(sock.fd, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
    } else if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      if (!wait_for(sock.fd, POLLOUT, deadline)) return timed_out();
    } else {
      return base::fail("cannot send to " + where + ": " + std::strerror(errno));
    }
  }
  std::string answer;
  char buf[16384];
  for (;;) {
    ssize_t n = ::recv(sock.fd, buf, sizeof buf, 0);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      if (!wait_for(sock.fd, POLLIN, deadline)) return timed_out();
      continue;
    }
    if (n < 0) return base::fail("cannot read from " + where + ": " + std::strerror(errno));
    answer.append(buf, static_cast<size_t>(n));
    if (answer.size() > kMaxAnswer) return base::fail("the answer from " + where + " is too large");
    http1::ResponseResult r = http1::parse_response(answer, n == 0);
    if (r.status == http1::ParseStatus::kDone) return std::move(r.response);
    if (r.status == http1::ParseStatus::kBad) {
      return base::fail("malformed answer from " + where + ": " + r.error);
    }
    if (n == 0) return base::fail("the answer from " + where + " was cut short");
  }
}

}  // namespace ringlb::core::runtime
