// sd_notify by hand: the datagram reaches a real AF_UNIX socket (path and abstract names), the
// receiver sees our pid in SCM_CREDENTIALS (what systemd checks), and bad names are errors.
#include "core/runtime/sd_notify.h"

#include <doctest/doctest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <string>

using ringlb::core::runtime::sd_notify;
using ringlb::core::runtime::sd_notify_to;

namespace {

// A bound datagram socket with SO_PASSCRED, as systemd's notify socket is.
struct Receiver {
  int fd = -1;
  std::string name;  // as NOTIFY_SOCKET spells it
  std::string path;  // to unlink, for a path name

  explicit Receiver(bool abstract) {
    fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    int on = 1;
    REQUIRE(::setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &on, sizeof on) == 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::string id = "ringlb-sd-notify-test-" + std::to_string(::getpid());
    socklen_t len;
    if (abstract) {
      name = "@" + id;
      std::memcpy(sa.sun_path + 1, id.data(), id.size());
      len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + id.size());
    } else {
      const char* tmp = std::getenv("TMPDIR");
      path = std::string(tmp && *tmp ? tmp : "/tmp") + "/" + id + ".sock";
      ::unlink(path.c_str());
      name = path;
      std::memcpy(sa.sun_path, path.data(), path.size());
      len = static_cast<socklen_t>(sizeof sa);
    }
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&sa), len) == 0);
  }
  ~Receiver() {
    ::close(fd);
    if (!path.empty()) ::unlink(path.c_str());
  }

  // One datagram (non-blocking: the send happened before) and the sender's pid.
  std::string take(pid_t* pid) {
    char buf[512];
    iovec iov{buf, sizeof buf};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(ucred))];
    msghdr m{};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    m.msg_control = control;
    m.msg_controllen = sizeof control;
    ssize_t n = ::recvmsg(fd, &m, MSG_DONTWAIT);
    if (n < 0) return "(nothing)";
    *pid = 0;
    for (cmsghdr* c = CMSG_FIRSTHDR(&m); c != nullptr; c = CMSG_NXTHDR(&m, c)) {
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS) {
        ucred cred;
        std::memcpy(&cred, CMSG_DATA(c), sizeof cred);
        *pid = cred.pid;
      }
    }
    return std::string(buf, static_cast<size_t>(n));
  }
};

}  // namespace

TEST_CASE("sd_notify sends one datagram to a path socket, with our pid as credentials") {
  Receiver r(false);
  auto sent = sd_notify_to(r.name, "READY=1\nSTATUS=serving: 2 workers");
  REQUIRE(sent.has_value());
  CHECK(*sent);
  pid_t pid = -1;
  CHECK(r.take(&pid) == "READY=1\nSTATUS=serving: 2 workers");
  CHECK(pid == ::getpid());
}

TEST_CASE("sd_notify reaches an @abstract socket") {
  Receiver r(true);
  auto sent = sd_notify_to(r.name, "STOPPING=1");
  REQUIRE(sent.has_value());
  pid_t pid = -1;
  CHECK(r.take(&pid) == "STOPPING=1");
  CHECK(pid == ::getpid());
}

TEST_CASE("sd_notify follows $NOTIFY_SOCKET and does nothing without it") {
  const char* saved = std::getenv("NOTIFY_SOCKET");
  std::string keep = saved ? saved : "";
  Receiver r(false);
  ::setenv("NOTIFY_SOCKET", r.name.c_str(), 1);
  auto sent = sd_notify("READY=1");
  REQUIRE(sent.has_value());
  CHECK(*sent);
  pid_t pid = -1;
  CHECK(r.take(&pid) == "READY=1");

  ::unsetenv("NOTIFY_SOCKET");
  sent = sd_notify("READY=1");
  REQUIRE(sent.has_value());
  CHECK_FALSE(*sent);
  ::setenv("NOTIFY_SOCKET", "", 1);
  sent = sd_notify("READY=1");
  REQUIRE(sent.has_value());
  CHECK_FALSE(*sent);
  CHECK(r.take(&pid) == "(nothing)");
  if (saved) {
    ::setenv("NOTIFY_SOCKET", keep.c_str(), 1);
  } else {
    ::unsetenv("NOTIFY_SOCKET");
  }
}

TEST_CASE("an unusable NOTIFY_SOCKET is an error that names it") {
  auto relative = sd_notify_to("run/notify", "READY=1");
  REQUIRE_FALSE(relative.has_value());
  CHECK(relative.error().message.find("NOTIFY_SOCKET=run/notify") != std::string::npos);

  auto long_name = sd_notify_to("/" + std::string(200, 'x'), "READY=1");
  REQUIRE_FALSE(long_name.has_value());
  CHECK(long_name.error().message.find("too long") != std::string::npos);

  auto missing = sd_notify_to("/nonexistent-dir-ringlb/notify", "READY=1");
  REQUIRE_FALSE(missing.has_value());
  CHECK(missing.error().sys_errno == ENOENT);
}
