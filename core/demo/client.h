#pragma once
// The demo's client: unary calls over one HTTP/2 connection, on a reactor of its own that runs
// on the calling thread (the demo's main thread) until every call has ended.
#include <cstdint>
#include <map>
#include <string>

#include "core/io/reactor.h"

namespace ringlb::core::demo {

/// How the calls went.
struct CallTally {
  std::map<std::string, int> by_backend;  // echoed calls, by `x-backend` ("(no x-backend)")
  int failed = 0;                         // calls that failed or were never answered
  std::string first_error;                // why the first one failed
};

/// Makes `calls` calls to /demo.Echo/Say on 127.0.0.1:`port`, up to 32 at a time, and checks
/// that each is echoed with grpc-status 0. A connection silent for 10 s fails the calls left.
CallTally make_demo_calls(int calls, uint16_t port, io::IoBackend backend);

}  // namespace ringlb::core::demo
