// libFuzzer target: core::config::parse_config on arbitrary text. A ConfigError is an expected
// outcome (with a "SOURCE:LINE:COLUMN: " prefix); a crash, UB, a leak or any other exception is a
// bug. An accepted config must also hold what the rest of ringlb assumes of it: every cluster a
// listener or route names exists, and the numbers are in the ranges documented in config.h.
// Built and run by tests/fuzz/run.sh.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <string_view>

#include "core/config/config.h"

namespace {

using namespace ringlb::core::config;

constexpr std::string_view kSource = "fuzz.toml";

[[noreturn]] void die(const char* what, const std::string& detail) {
  std::fprintf(stderr, "config_fuzz: %s: %s\n", what, detail.c_str());
  std::abort();
}

void check_accepted(const Config& c) {
  if (c.listeners.empty() || c.clusters.empty()) die("accepted without listener or cluster", "");
  for (const ListenerConfig& l : c.listeners) {
    if (!l.cluster.empty() && c.find_cluster(l.cluster) == nullptr) {
      die("listener names an unknown cluster", l.cluster);
    }
    if (l.cluster.empty() && l.routes.empty()) die("listener with nowhere to send calls", "");
    for (const RouteConfig& r : l.routes) {
      if (c.find_cluster(r.cluster) == nullptr) die("route names an unknown cluster", r.cluster);
      if (r.timeout.count() < 0) die("negative route timeout", r.prefix);
    }
  }
  for (const ClusterConfig& cl : c.clusters) {
    if (cl.name.empty()) die("cluster without a name", "");
    if (!cl.uses_dns() && cl.endpoints.empty()) die("static cluster without endpoints", cl.name);
    for (const EndpointConfig& e : cl.endpoints) {
      if (e.weight < 1 || e.weight > 10000) die("endpoint weight out of range", cl.name);
    }
    if (cl.connect_timeout.count() < 0) die("negative connect_timeout", cl.name);
  }
  if (c.proxy.drain_timeout.count() < 0) die("negative drain_timeout", "");
}

// toml++ 3.3 (Debian 12) reaches __builtin_unreachable() in is_non_ascii_horizontal_whitespace()
// for code points its lookup table does not cover (U+00A1..U+0499, U+2C5E..U+2FFF,
// U+3001..U+3057, U+FB26..U+FEFE) when it meets one where it looks for whitespace (upstream
// issues 190 and 295, fixed by marzer/tomlplusplus PR 305): undefined behaviour inside the TOML
// library, not in ringlb, that UBSan stops on at once. Inputs holding such a code point are
// skipped so the fuzzer gets past it; all other non-ASCII text is still fuzzed.
bool hits_known_toml_bug(std::string_view text) {
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  for (size_t i = 0; i < n; ++i) {
    const unsigned lead = p[i];
    size_t more = lead >= 0xf0 ? 3 : lead >= 0xe0 ? 2 : lead >= 0xc0 ? 1 : 0;
    if (more == 0 || i + more >= n) continue;  // ASCII, a stray continuation, or cut off
    char32_t cp = lead & (0x3f >> more);
    for (size_t k = 1; k <= more; ++k) cp = (cp << 6) | (p[i + k] & 0x3f);
    if ((cp >= 0xa1 && cp <= 0x499) || (cp >= 0x2c5e && cp <= 0x2fff) ||
        (cp >= 0x3001 && cp <= 0x3057) || (cp >= 0xfb26 && cp <= 0xfefe)) {
      return true;
    }
  }
  return false;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  if (hits_known_toml_bug(text)) return -1;  // -1: libFuzzer keeps it out of the corpus
  try {
    Config c = parse_config(text, kSource);
    check_accepted(c);
  } catch (const ConfigError& e) {
    std::string_view what = e.what();
    if (what.substr(0, kSource.size() + 1) != std::string(kSource) + ":") {
      die("ConfigError without the source prefix", e.what());
    }
  } catch (const std::exception& e) {
    die("unexpected exception (not a ConfigError)", e.what());
  }
  return 0;
}
