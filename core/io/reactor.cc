#include "core/io/reactor.h"

#include <cerrno>
#include <cstring>

namespace ringlb::core::io {

std::optional<ReactorChoice> choose_reactor(IoBackend want, std::string& error) {
  if (want == IoBackend::kEpoll) return ReactorChoice{IoBackend::kEpoll, "configured"};
  // Probe once with a throwaway ring; shards build their own on their own threads.
  int err = 0;
  std::string why;
  auto probe = make_uring_reactor(err, why);
  if (probe)
    return ReactorChoice{IoBackend::kIoUring, want == IoBackend::kAuto ? "probed" : "configured"};
  if (want == IoBackend::kIoUring) {
    error = why + "; io_backend = \"io_uring\" is strict (use \"auto\" or \"epoll\" to fall back)";
    return std::nullopt;
  }
  if (err == EPERM || err == ENOSYS || err == EINVAL || err == EACCES) {
    // Seccomp profiles (Fargate, Docker >= 25, containerd >= 2.0) and
    // kernel.io_uring_disabled answer EPERM/ENOSYS; kernels without what we use answer EINVAL.
    return ReactorChoice{IoBackend::kEpoll, why +
                                                ": falling back to epoll (io_uring is denied "
                                                "by seccomp/sysctl or too old on this kernel)"};
  }
  error = why + ": not falling back, since this is a resource problem, not a missing feature";
  return std::nullopt;
}

std::unique_ptr<Reactor> make_reactor(IoBackend backend, std::string& error) {
  if (backend == IoBackend::kIoUring) {
    int err = 0;
    return make_uring_reactor(err, error);
  }
  return make_epoll_reactor(error);
}

}  // namespace ringlb::core::io
