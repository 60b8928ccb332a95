#pragma once
// `ringlb demo` and `ringlb backend`: the README's quick start, and the small gRPC test backend it
// starts (h2c with prior knowledge; echoes each call and names itself in `x-backend`). The same
// backend serves the integration tests and the benchmarks. Both entry points run on the calling
// thread (main); backend event loops run on threads they start and own.

namespace ringlb::core::demo {

/// `ringlb demo [--port N] [--backends K] [--calls N] [--exit]`: starts K test backends and the
/// proxy (`self_exe --config TMPFILE`) in front of them, sends N unary calls over one HTTP/2
/// connection and shows which backend answered each. Then waits for Ctrl-C, unless --exit.
/// `argv` starts after the subcommand word. Returns the process exit code.
int run_demo(int argc, char** argv, const char* self_exe);

/// `ringlb backend --listen 127.0.0.1:PORT --name NAME [--delay-ms N] [--threads N]`: a small
/// fast gRPC test backend that answers any path; runs until SIGINT/SIGTERM. Prints the bound
/// address (useful with port 0). `argv` starts after the subcommand word. Returns the exit code.
int run_backend(int argc, char** argv);

}  // namespace ringlb::core::demo
