// sd_notify(3)'s datagram, by hand (see sd_notify.h). Any thread.
#include "core/runtime/sd_notify.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <string>

#include "core/base/log.h"

namespace ringlb::core::runtime {

namespace {

base::Unexpected fail(std::string message, int err) {
  if (err != 0) message += std::string(": ") + std::strerror(err);
  return base::Unexpected(base::Error{std::move(message), err});
}

}  // namespace

base::Result<bool> sd_notify(std::string_view state) {
  const char* name = std::getenv("NOTIFY_SOCKET");
  if (name == nullptr || *name == '\0') return false;
  return sd_notify_to(name, state);
}

base::Result<bool> sd_notify_to(std::string_view socket_name, std::string_view state) {
  const std::string shown = "NOTIFY_SOCKET=" + std::string(socket_name);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  // "@name" is Linux's abstract namespace: the address starts with a NUL byte and its length,
  // not a terminator, says where it ends. A path needs room for its terminator.
  if (socket_name.empty() || (socket_name[0] != '/' && socket_name[0] != '@')) {
    return fail(shown + ": neither an absolute path nor an @abstract name", 0);
  }
  if (socket_name.size() >= sizeof sa.sun_path) return fail(shown + ": name too long", 0);
  std::memcpy(sa.sun_path, socket_name.data(), socket_name.size());
  socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + socket_name.size());
  if (socket_name[0] == '@') {
    sa.sun_path[0] = '\0';
  } else {
    ++len;  // the terminating NUL, as libsystemd counts it
  }

  int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return fail(shown + ": socket", errno);
  ssize_t n = ::sendto(fd, state.data(), state.size(), MSG_NOSIGNAL | MSG_DONTWAIT,
                       reinterpret_cast<const sockaddr*>(&sa), len);
  int err = errno;
  ::close(fd);
  if (n < 0) return fail(shown + ": send", err);
  if (static_cast<size_t>(n) != state.size()) return fail(shown + ": short send", 0);
  return true;
}

void notify_systemd(std::string_view state) {
  base::Result<bool> sent = sd_notify(state);
  std::string_view first = state.substr(0, state.find('\n'));
  if (!sent) {
    LOG_WARN("systemd: could not send %.*s: %s", static_cast<int>(first.size()), first.data(),
             sent.error().message.c_str());
  } else if (*sent) {
    LOG_INFO("systemd: sent %.*s", static_cast<int>(first.size()), first.data());
  }
}

}  // namespace ringlb::core::runtime
