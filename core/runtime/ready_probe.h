#pragma once
// `ringlb ready`: asks a running ringlb's admin listener whether it is ready (GET /ready), for
// a container HEALTHCHECK or an ECS container health check in images without curl. The CLI's
// thread only.

namespace ringlb::core::runtime {

/// `ringlb ready [--admin HOST:PORT] [--timeout DURATION]` with argv after "ready". Prints the
/// answer's body to stdout. Returns 0 on 200, 1 on any other status or when the admin cannot be
/// reached (a message on stderr says why), 2 on a usage error.
int run_ready(int argc, char** argv);

}  // namespace ringlb::core::runtime
