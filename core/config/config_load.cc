// Reading config text from a file or an environment variable (control thread, start-up and
// reload); the parsing and every check are in config.cc.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "core/config/config.h"

namespace ringlb::core::config {
namespace {

constexpr size_t kMaxConfigBytes = 16 * 1024 * 1024;

}  // namespace

std::optional<std::string> read_small_file(const std::string& path, size_t max_bytes) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  std::string text;
  char buf[64 * 1024];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::close(fd);
      errno = err;
      return std::nullopt;
    }
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
    if (text.size() > max_bytes) {
      ::close(fd);
      errno = EFBIG;
      return std::nullopt;
    }
  }
  ::close(fd);
  return text;
}

Config load_config(const std::string& path) {
  std::optional<std::string> text = read_small_file(path, kMaxConfigBytes);
  if (!text) {
    if (errno == EFBIG) throw ConfigError(path + ": cannot read: larger than 16 MiB");
    throw ConfigError(path + ": cannot read: " + std::strerror(errno));
  }
  return parse_config(*text, path);
}

Config load_config_env(const std::string& name) {
  const std::string source = "env:" + name;
  const char* text = std::getenv(name.c_str());
  if (text == nullptr) {
    throw ConfigError(source + ": environment variable " + name +
                      " is not set (--config-env names the variable that holds the TOML text)");
  }
  std::string_view t(text);
  if (t.find_first_not_of(" \t\r\n") == std::string_view::npos) {
    throw ConfigError(source + ": environment variable " + name + " is empty");
  }
  Config config = parse_config(text, source);
  config.env_var = name;
  return config;
}

}  // namespace ringlb::core::config
