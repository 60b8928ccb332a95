// The config's units: durations ("1.5s", "250ms") and sizes ("64KiB", "1M"), parsed exactly.
#include <charconv>
#include <limits>
#include <utility>

#include "core/config/config.h"

namespace ringlb::core::config {
namespace {

constexpr uint64_t kKiB = 1024;
constexpr uint64_t kMiB = 1024 * kKiB;
constexpr uint64_t kGiB = 1024 * kMiB;

}  // namespace

std::optional<Duration> parse_duration(std::string_view text) {
  // Integer arithmetic throughout so "1.1s" is exactly 1'100'000'000ns.
  size_t i = 0;
  __int128 whole = 0;
  while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
    whole = whole * 10 + (text[i++] - '0');
    if (whole > std::numeric_limits<int64_t>::max()) return std::nullopt;
  }
  if (i == 0) return std::nullopt;
  __int128 frac = 0;
  __int128 frac_scale = 1;
  if (i < text.size() && text[i] == '.') {
    size_t start = ++i;
    while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
      // Digits past 18 are below a nanosecond for every unit; drop them (truncate).
      if (i - start < 18) {
        frac = frac * 10 + (text[i] - '0');
        frac_scale *= 10;
      }
      ++i;
    }
    if (i == start) return std::nullopt;
  }
  static constexpr std::pair<std::string_view, int64_t> kUnits[] = {
      {"ns", 1},
      {"us", 1'000},
      {"ms", 1'000'000},
      {"s", 1'000'000'000},
      {"m", 60'000'000'000},
      {"h", 3'600'000'000'000},
  };
  std::string_view unit = text.substr(i);
  for (const auto& [name, ns] : kUnits) {
    if (unit != name) continue;
    __int128 total = whole * ns + frac * ns / frac_scale;
    if (total > std::numeric_limits<int64_t>::max()) return std::nullopt;
    return Duration(static_cast<int64_t>(total));
  }
  return std::nullopt;
}

std::optional<uint64_t> parse_size(std::string_view text) {
  uint64_t number = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), number);
  if (ec != std::errc() || end == text.data()) return std::nullopt;
  std::string_view unit = text.substr(static_cast<size_t>(end - text.data()));
  static constexpr std::pair<std::string_view, uint64_t> kUnits[] = {
      {"", 1},       {"B", 1},    {"KiB", kKiB}, {"k", kKiB}, {"K", kKiB},
      {"MiB", kMiB}, {"M", kMiB}, {"GiB", kGiB}, {"G", kGiB},
  };
  for (const auto& [name, scale] : kUnits) {
    if (unit != name) continue;
    if (number > std::numeric_limits<uint64_t>::max() / scale) return std::nullopt;
    return number * scale;
  }
  return std::nullopt;
}

}  // namespace ringlb::core::config
