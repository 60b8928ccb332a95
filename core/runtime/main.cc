// ringlb entry point: argument handling only. Control thread.
#include <nghttp2/nghttp2ver.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#include "core/base/log.h"
#include "core/config/config.h"
#include "core/demo/demo.h"
#include "core/proxy/tls_contexts.h"
#include "core/runtime/ready_probe.h"
#include "core/runtime/server.h"

namespace {

// GNU style (Usage: / or: / options), which help2man turns into the man page's SYNOPSIS and
// OPTIONS (packaging/deb/build-deb.sh; packaging/deb/ringlb.h2m adds the other sections).
void usage(FILE* out) {
  fprintf(out,
          "Usage: ringlb --config FILE [--log-level LEVEL]\n"
          "  or:  ringlb --config-env NAME [--log-level LEVEL]\n"
          "  or:  ringlb check FILE\n"
          "  or:  ringlb check --config-env NAME\n"
          "  or:  ringlb ready [--admin HOST:PORT] [--timeout DURATION]\n"
          "  or:  ringlb demo [--port N]\n"
          "  or:  ringlb backend --listen ADDR --name NAME [BACKEND-OPTION]...\n"
          "  or:  ringlb --version\n"
          "\n"
          "Options:\n"
          "  -c, --config FILE    serve with this config file (TOML)\n"
          "      --config-env NAME\n"
          "                       serve with the TOML text of environment variable NAME\n"
          "                       (ECS task definitions, SSM parameters, secrets); errors\n"
          "                       name env:NAME:LINE:COLUMN; SIGHUP re-parses the same text\n"
          "      --log-level LEVEL\n"
          "                       debug, info, warn or error; wins over [log] level\n"
          "  -h, --help           show this help and exit\n"
          "      --version        show the version and exit\n"
          "\n"
          "Commands:\n"
          "  check FILE           validate a config file and exit (0: it loads)\n"
          "  check --config-env NAME\n"
          "                       validate the config in environment variable NAME\n"
          "  ready                ask a running ringlb whether it serves: GET /ready on\n"
          "                       its admin listener, print the answer; exit 0 when ready\n"
          "                       (200), 1 when not or unreachable, 2 on a usage error\n"
          "                       (a container HEALTHCHECK, an ECS health check); options:\n"
          "                       --admin HOST:PORT (default 127.0.0.1:9901),\n"
          "                       --timeout DURATION (default 2s)\n"
          "  demo [--port N]      run 3 local gRPC backends behind ringlb and show how one\n"
          "                       connection's calls spread\n"
          "  backend ...          a small gRPC echo backend (tests, benchmarks); its options:\n"
          "                       --delay-ms N, --threads N, --io-backend auto|io_uring|epoll\n");
}

// Out of memory aborts, loudly (DESIGN.md rule 4): operator new never throws, so no bad_alloc can
// unwind through nghttp2's or c-ares' C frames on a shard or the control thread.
[[noreturn]] void out_of_memory() {
  static const char kMsg[] = "ringlb: out of memory\n";
  ssize_t n = ::write(2, kMsg, sizeof kMsg - 1);
  (void)n;
  std::abort();
}

bool set_level(const char* name) {
  using ringlb::core::base::LogLevel;
  if (!strcmp(name, "debug"))
    ringlb::core::base::set_log_level(LogLevel::kDebug);
  else if (!strcmp(name, "info"))
    ringlb::core::base::set_log_level(LogLevel::kInfo);
  else if (!strcmp(name, "warn"))
    ringlb::core::base::set_log_level(LogLevel::kWarn);
  else if (!strcmp(name, "error"))
    ringlb::core::base::set_log_level(LogLevel::kError);
  else
    return false;
  return true;
}

// `ringlb check FILE` / `ringlb check --config-env NAME`, argv after "check".
int check(int argc, char** argv) {
  bool from_env = argc >= 1 && !strcmp(argv[0], "--config-env");
  if (argc != (from_env ? 2 : 1)) {
    usage(stderr);
    return 2;
  }
  try {
    ringlb::core::config::Config c = from_env ? ringlb::core::config::load_config_env(argv[1])
                                              : ringlb::core::config::load_config(argv[0]);
    if (auto tls = ringlb::core::proxy::check_tls(c); !tls) {
      fprintf(stderr, "%s\n", tls.error().message.c_str());
      return 1;
    }
    printf("%s: ok (%zu listeners, %zu clusters)\n", c.source.c_str(), c.listeners.size(),
           c.clusters.size());
    return 0;
  } catch (const ringlb::core::config::ConfigError& e) {
    fprintf(stderr, "%s\n", e.what());
    return 1;
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::set_new_handler(out_of_memory);
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  std::string cmd = argv[1];
  if (cmd == "--version" || cmd == "version") {
    printf("ringlb %s (nghttp2 %s)\n", RINGLB_VERSION, NGHTTP2_VERSION);
    return 0;
  }
  if (cmd == "--help" || cmd == "-h" || cmd == "help") {
    usage(stdout);
    return 0;
  }
  if (cmd == "demo") return ringlb::core::demo::run_demo(argc - 2, argv + 2, "/proc/self/exe");
  if (cmd == "backend") return ringlb::core::demo::run_backend(argc - 2, argv + 2);
  if (cmd == "ready") return ringlb::core::runtime::run_ready(argc - 2, argv + 2);
  if (cmd == "check") return check(argc - 2, argv + 2);
  std::string config_path;
  std::string config_env;
  bool level_given = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if ((a == "--config" || a == "-c") && i + 1 < argc) {
      config_path = argv[++i];
    } else if (a == "--config-env" && i + 1 < argc) {
      config_env = argv[++i];
    } else if (a == "--log-level" && i + 1 < argc) {
      level_given = true;
      if (!set_level(argv[++i])) {
        fprintf(stderr, "ringlb: unknown log level '%s'\n", argv[i]);
        return 2;
      }
    } else {
      fprintf(stderr, "ringlb: unexpected argument '%s'\n", a.c_str());
      usage(stderr);
      return 2;
    }
  }
  if (config_path.empty() == config_env.empty()) {
    if (!config_path.empty())
      fprintf(stderr, "ringlb: --config and --config-env exclude each other\n");
    usage(stderr);
    return 2;
  }
  ringlb::core::config::Config config;
  try {
    config = config_env.empty() ? ringlb::core::config::load_config(config_path)
                                : ringlb::core::config::load_config_env(config_env);
  } catch (const ringlb::core::config::ConfigError& e) {
    fprintf(stderr, "%s\n", e.what());
    return 1;
  }
  if (config.log.level_set && !level_given) {
    const char* names[] = {"debug", "info", "warn", "error"};
    set_level(names[static_cast<int>(config.log.level)]);
  }
  return ringlb::core::runtime::run_server(config, level_given);
}
