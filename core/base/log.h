#pragma once
// Logging: one line per call, written with a single write(2) to stderr so lines from different
// threads never interleave. Any thread. Not for the per-call hot path except on errors.
#include <cstdarg>

namespace ringlb::core::base {

enum class LogLevel { kDebug, kInfo, kWarn, kError };

void set_log_level(LogLevel level);
bool log_enabled(LogLevel level);
void log(LogLevel level, const char* fmt, ...) __attribute__((format(printf, 2, 3)));

#define RINGLB_LOG(level, ...)                                                 \
  do {                                                                         \
    if (::ringlb::core::base::log_enabled(level)) ::ringlb::core::base::log(level, __VA_ARGS__); \
  } while (0)
#define LOG_DEBUG(...) RINGLB_LOG(::ringlb::core::base::LogLevel::kDebug, __VA_ARGS__)
#define LOG_INFO(...) RINGLB_LOG(::ringlb::core::base::LogLevel::kInfo, __VA_ARGS__)
#define LOG_WARN(...) RINGLB_LOG(::ringlb::core::base::LogLevel::kWarn, __VA_ARGS__)
#define LOG_ERROR(...) RINGLB_LOG(::ringlb::core::base::LogLevel::kError, __VA_ARGS__)

}  // namespace ringlb::core::base
