#include "core/demo/options.h"

#include <algorithm>
#include <cstdio>
#include <string>
#include <utility>

#include "core/base/log.h"

namespace ringlb::core::demo {

bool parse_options(int argc, char** argv, std::initializer_list<std::string_view> flags,
                   const char* usage, const OptionHandler& on_option) {
  for (int i = 0; i < argc; ++i) {
    const char* raw = argv[i];
    std::string_view arg = raw, value;
    bool is_flag = std::find(flags.begin(), flags.end(), arg) != flags.end();
    if (auto eq = arg.find('='); eq != arg.npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
    } else if (!is_flag && i + 1 < argc) {
      value = argv[++i];
    } else if (!is_flag) {
      arg = {};  // a value-taking option at the end: reported below
    }
    if (!arg.starts_with("--") || !on_option(arg, value)) {
      fprintf(stderr, "bad argument '%s'\nusage: %s\n", raw, usage);
      return false;
    }
  }
  return true;
}

bool parse_io_backend(std::string_view text, io::IoBackend& out) {
  constexpr std::pair<std::string_view, io::IoBackend> kNames[] = {
      {"auto", io::IoBackend::kAuto},
      {"io_uring", io::IoBackend::kIoUring},
      {"epoll", io::IoBackend::kEpoll}};
  for (const auto& [name, backend] : kNames) {
    if (text == name) {
      out = backend;
      return true;
    }
  }
  return false;
}

std::optional<io::IoBackend> pick_reactor(io::IoBackend want) {
  std::string error;
  std::optional<io::ReactorChoice> choice = io::choose_reactor(want, error);
  if (!choice) {
    LOG_ERROR("%s", error.c_str());
    return std::nullopt;
  }
  // Quiet by default: the backend's stdout line is what tests and the benchmarks read.
  LOG_DEBUG("io backend: %s (%s)",
            choice->backend == io::IoBackend::kIoUring ? "io_uring" : "epoll",
            choice->note.c_str());
  return choice->backend;
}

}  // namespace ringlb::core::demo
