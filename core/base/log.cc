#include "core/base/log.h"

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <ctime>

namespace ringlb::core::base {
namespace {
std::atomic<int> g_level{static_cast<int>(LogLevel::kInfo)};
const char* const kNames[] = {"debug", "info", "warn", "error"};
}  // namespace

void set_log_level(LogLevel level) { g_level.store(static_cast<int>(level)); }

bool log_enabled(LogLevel level) {
  return static_cast<int>(level) >= g_level.load(std::memory_order_relaxed);
}

void log(LogLevel level, const char* fmt, ...) {
  char line[2048];
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  tm t;
  gmtime_r(&ts.tv_sec, &t);
  int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ ringlb[%s] ",
                   t.tm_year + 1900, t.tm_mon + 1, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec,
                   ts.tv_nsec / 1000000, kNames[static_cast<int>(level)]);
  va_list ap;
  va_start(ap, fmt);
  int m = vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
  va_end(ap);
  size_t len = n + (m < 0 ? 0 : std::min<size_t>(m, sizeof line - n - 2));
  line[len++] = '\n';
  ssize_t r = ::write(2, line, len);
  (void)r;
}

}  // namespace ringlb::core::base
