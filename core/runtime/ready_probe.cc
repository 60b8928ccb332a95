#include "core/runtime/ready_probe.h"

#include <cstdio>
#include <string>
#include <string_view>

#include "core/config/config.h"
#include "core/runtime/http_get.h"

namespace ringlb::core::runtime {
namespace {

constexpr const char* kDefaultAdmin = "127.0.0.1:9901";  // [admin] address's default

void ready_usage(FILE* out) {
  fprintf(out,
          "usage: ringlb ready [--admin HOST:PORT] [--timeout DURATION]\n"
          "  GET http://HOST:PORT/ready on ringlb's admin listener (default %s, timeout 2s);\n"
          "  prints the answer; exit status 0 when ready (200), 1 otherwise, 2 on a usage "
          "error\n",
          kDefaultAdmin);
}

// "--admin X" or "--admin=X": the value, advancing i; nullptr if `arg` is not `name`.
const char* option_value(std::string_view name, int argc, char** argv, int& i, bool& missing) {
  std::string_view arg = argv[i];
  if (arg == name) {
    if (i + 1 >= argc) {
      missing = true;
      return nullptr;
    }
    return argv[++i];
  }
  if (arg.size() > name.size() && arg.starts_with(name) && arg[name.size()] == '=') {
    return argv[i] + name.size() + 1;
  }
  return nullptr;
}

}  // namespace

int run_ready(int argc, char** argv) {
  std::string admin = kDefaultAdmin;
  int64_t timeout_ns = 2'000'000'000;
  for (int i = 0; i < argc; ++i) {
    std::string_view arg = argv[i];
    bool missing = false;
    if (arg == "--help" || arg == "-h") {
      ready_usage(stdout);
      return 0;
    }
    if (const char* v = option_value("--admin", argc, argv, i, missing)) {
      admin = v;
    } else if (const char* t = option_value("--timeout", argc, argv, i, missing)) {
      auto d = config::parse_duration(t);
      if (!d || d->count() <= 0) {
        fprintf(stderr, "ringlb ready: invalid --timeout '%s' (expected e.g. 2s, 500ms)\n", t);
        return 2;
      }
      timeout_ns = d->count();
    } else {
      if (missing) {
        fprintf(stderr, "ringlb ready: %s needs a value\n", argv[i]);
      } else {
        fprintf(stderr, "ringlb ready: unexpected argument '%s'\n", argv[i]);
      }
      ready_usage(stderr);
      return 2;
    }
  }
  auto hp = split_host_port(admin);
  if (!hp) {
    fprintf(stderr, "ringlb ready: invalid --admin '%s' (expected HOST:PORT, e.g. %s)\n",
            admin.c_str(), kDefaultAdmin);
    return 2;
  }
  auto answer = http_get(hp->first, hp->second, "/ready", timeout_ns);
  if (!answer) {
    const bool refused = answer.error().message.starts_with("cannot connect");
    fprintf(stderr, "ringlb ready: %s%s\n", answer.error().message.c_str(),
            refused ? " (is ringlb running, with its [admin] address there?)" : "");
    return 1;
  }
  const std::string& body = answer->body;
  fwrite(body.data(), 1, body.size(), stdout);
  if (!body.empty() && body.back() != '\n') fputc('\n', stdout);
  fflush(stdout);
  if (answer->status == 200) return 0;
  fprintf(stderr, "ringlb ready: not ready (HTTP %d from %s/ready)\n", answer->status,
          admin.c_str());
  return 1;
}

}  // namespace ringlb::core::runtime
