#pragma once
// The test backend behind `ringlb backend` and `ringlb demo`: h2c with prior knowledge, answers
// any path by echoing the call's first message, names itself in `x-backend`, and can hold each
// reply back by a fixed delay. The integration tests and the benchmarks use it as a fast
// backend, so the per-call path allocates nothing of its own once warm.
//
// Threads: start() runs on the creating thread and starts one loop thread, which owns the
// listening socket, its reactor and every connection; the destructor (creating thread again)
// asks that thread to stop and joins it.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/io/reactor.h"

namespace ringlb::core::demo {

class BackendLoop {
 public:
  /// Serves `listen_fd` (a non-blocking listening socket, owned from here on, even on failure)
  /// as `name` on a new thread with a reactor of kind `backend`, answering each call `delay_ns`
  /// after its request ends. Returns once the thread serves, or nullptr with `error` set.
  static std::unique_ptr<BackendLoop> start(int listen_fd, std::string name, int64_t delay_ns,
                                            io::IoBackend backend, std::string& error);
  /// Stops the loop: connections are closed and the thread joined.
  virtual ~BackendLoop() = default;

 protected:
  BackendLoop() = default;
};

using Backends = std::vector<std::unique_ptr<BackendLoop>>;  // stopped when it goes

}  // namespace ringlb::core::demo
