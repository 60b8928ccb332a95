// Config loading: TOML text -> validated Config (control thread, at start-up only).
// Every error names FILE:LINE:COLUMN and the dotted key, because the log of a failed ECS task is
// often all an operator has; throwing on the first problem keeps the code simple.
#include "core/config/config.h"

#include <arpa/inet.h>
#include <toml++/toml.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <limits>
#include <utility>

namespace ringlb::core::config {
namespace {

constexpr uint64_t kKiB = 1024;
constexpr uint64_t kMiB = 1024 * kKiB;
constexpr uint64_t kGiB = 1024 * kMiB;
constexpr Duration kMaxDuration = std::chrono::hours(24 * 7);
// Reading stops here so a config path pointing at /dev/zero or a log file fails fast.

// User text goes into one-line log messages: keep it on one line and visibly delimited.
std::string quote(std::string_view s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c == 0x7f) {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

std::string type_name(toml::node_type t) {
  switch (t) {
    case toml::node_type::table:
      return "table";
    case toml::node_type::array:
      return "array";
    case toml::node_type::string:
      return "string";
    case toml::node_type::integer:
      return "integer";
    case toml::node_type::floating_point:
      return "float";
    case toml::node_type::boolean:
      return "boolean";
    case toml::node_type::date:
      return "date";
    case toml::node_type::time:
      return "time";
    case toml::node_type::date_time:
      return "date-time";
    case toml::node_type::none:
      break;
  }
  return "nothing";
}

std::string format_size(uint64_t bytes) {
  if (bytes != 0 && bytes % kGiB == 0) return std::to_string(bytes / kGiB) + "GiB";
  if (bytes != 0 && bytes % kMiB == 0) return std::to_string(bytes / kMiB) + "MiB";
  if (bytes != 0 && bytes % kKiB == 0) return std::to_string(bytes / kKiB) + "KiB";
  return std::to_string(bytes) + " bytes";
}

std::string format_duration(Duration d) {
  const int64_t ns = d.count();
  if (ns != 0 && ns % 3'600'000'000'000 == 0) return std::to_string(ns / 3'600'000'000'000) + "h";
  if (ns != 0 && ns % 60'000'000'000 == 0) return std::to_string(ns / 60'000'000'000) + "m";
  if (ns % 1'000'000'000 == 0) return std::to_string(ns / 1'000'000'000) + "s";
  if (ns % 1'000'000 == 0) return std::to_string(ns / 1'000'000) + "ms";
  return std::to_string(ns) + "ns";
}

// Optimal string alignment distance: a swapped pair ("wrokers") is one edit, the most common
// typo in hand-written keys.
size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::vector<size_t>> d(a.size() + 1, std::vector<size_t>(b.size() + 1));
  for (size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[a.size()][b.size()];
}

// ", did you mean `x`?" for the closest candidate within two edits, or "".
template <typename Range>
std::string suggestion(std::string_view word, const Range& candidates) {
  std::string_view best;
  size_t best_distance = 3;
  for (std::string_view c : candidates) {
    size_t d = edit_distance(word, c);
    // d < c.size(): two edits turn any two-letter word into `lb`; that is no suggestion.
    if (d < best_distance && d < c.size()) {
      best = c;
      best_distance = d;
    }
  }
  if (best.empty()) return "";
  return ", did you mean `" + std::string(best) + "`?";
}

std::string join(std::string_view path, std::string_view key) {
  if (path.empty()) return std::string(key);
  return std::string(path) + "." + std::string(key);
}

std::string indexed(std::string_view path, size_t i) {
  return std::string(path) + "[" + std::to_string(i) + "]";
}

// "api.internal:50051" or "localhost": the user meant DNS, which deserves its own message.
bool looks_like_host_name(std::string_view text) {
  std::string_view host = text.substr(0, text.rfind(':'));
  if (host.empty()) return false;
  bool has_letter = false;
  for (char c : host) {
    bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    has_letter |= letter;
    if (!letter && !(c >= '0' && c <= '9') && c != '.' && c != '-' && c != '_') return false;
  }
  return has_letter;
}

// Walks the parsed TOML tree into a Config. Holds only the source name used in messages.
class Loader {
 public:
  explicit Loader(std::string_view source) : source_(source) {}

  Config load(const toml::table& root) {
    check_keys(root, "",
               {"proxy", "limits", "discovery", "listener", "cluster", "admin", "log", "metrics"});
    Config config;
    config.source = source_;
    config.admin.address = *io::parse_socket_address("127.0.0.1:9901");
    if (const toml::node* n = root.get("admin"))
      load_admin(expect_table(*n, "admin"), config.admin);
    if (const toml::node* n = root.get("log")) load_log(expect_table(*n, "log"), config.log);
    if (const toml::node* n = root.get("metrics"))
      load_metrics(expect_table(*n, "metrics"), config.metrics);
    if (const toml::node* n = root.get("proxy"))
      load_proxy(expect_table(*n, "proxy"), config.proxy);
    if (const toml::node* n = root.get("limits"))
      load_limits(expect_table(*n, "limits"), config.limits);
    if (const toml::node* n = root.get("discovery"))
      load_discovery(expect_table(*n, "discovery"), config.discovery);

    // Clusters first, so listeners and routes can check their references as they are read.
    const toml::array& clusters = array_of_tables(root, "cluster");
    for (size_t i = 0; i < clusters.size(); ++i) {
      std::string path = indexed("cluster", i);
      const toml::table& t = expect_table(clusters[i], path);
      ClusterConfig cluster = load_cluster(t, path);
      for (size_t j = 0; j < config.clusters.size(); ++j) {
        if (config.clusters[j].name == cluster.name) {
          fail(*t.get("name"), join(path, "name"),
               "duplicate cluster name " + quote(cluster.name) + " (also " + indexed("cluster", j) +
                   ")");
        }
      }
      config.clusters.push_back(std::move(cluster));
    }

    const toml::array& listeners = array_of_tables(root, "listener");
    for (size_t i = 0; i < listeners.size(); ++i) {
      std::string path = indexed("listener", i);
      const toml::table& t = expect_table(listeners[i], path);
      ListenerConfig listener = load_listener(t, path, config);
      for (size_t j = 0; j < config.listeners.size(); ++j) {
        if (same_bind_address(config.listeners[j].address, listener.address)) {
          fail(*t.get("address"), join(path, "address"),
               "duplicate address " + quote(listener.address.text) + " (also " +
                   indexed("listener", j) + ")");
        }
      }
      config.listeners.push_back(std::move(listener));
    }
    return config;
  }

 private:
  [[noreturn]] void fail(const toml::source_region& at, std::string_view key,
                         std::string_view problem) const {
    throw ConfigError(source_ + ":" + std::to_string(at.begin.line) + ":" +
                      std::to_string(at.begin.column) + ": " + std::string(key) + ": " +
                      std::string(problem));
  }
  [[noreturn]] void fail(const toml::node& at, std::string_view key,
                         std::string_view problem) const {
    fail(at.source(), key, problem);
  }

  // Unknown keys are usually typos that would otherwise silently fall back to a default.
  // toml++ iterates keys sorted, so report the one that comes first in the file.
  void check_keys(const toml::table& t, std::string_view path,
                  std::initializer_list<std::string_view> known) const {
    const toml::key* first = nullptr;
    for (auto&& [key, value] : t) {
      if (std::find(known.begin(), known.end(), key.str()) != known.end()) continue;
      const auto& b = key.source().begin;
      if (first == nullptr || b.line < first->source().begin.line ||
          (b.line == first->source().begin.line && b.column < first->source().begin.column)) {
        first = &key;
      }
    }
    if (first != nullptr) {
      fail(first->source(), join(path, first->str()),
           "unknown key" + suggestion(first->str(), known));
    }
  }

  const toml::node& require(const toml::table& t, std::string_view path,
                            std::string_view key) const {
    if (const toml::node* n = t.get(key)) return *n;
    fail(t.source(), join(path, key), "missing required key");
  }

  const toml::table& expect_table(const toml::node& n, std::string_view key) const {
    if (const toml::table* t = n.as_table()) return *t;
    fail(n, key, "expected a table, got " + type_name(n.type()));
  }

  const toml::array& expect_array(const toml::node& n, std::string_view key) const {
    if (const toml::array* a = n.as_array()) return *a;
    fail(n, key, "expected an array, got " + type_name(n.type()));
  }

  const std::string& expect_string(const toml::node& n, std::string_view key) const {
    if (const toml::value<std::string>* s = n.as_string()) return s->get();
    fail(n, key, "expected a string, got " + type_name(n.type()));
  }

  // `[[name]]` sections: required, and at least one.
  const toml::array& array_of_tables(const toml::table& root, std::string_view name) const {
    std::string at_least_one = "at least one [[" + std::string(name) + "]] is required";
    const toml::node* n = root.get(name);
    if (n == nullptr) fail(root.source(), name, at_least_one);
    const toml::array* a = n->as_array();
    if (a == nullptr) {
      fail(*n, name,
           "expected an array of tables ([[" + std::string(name) + "]]), got " +
               type_name(n->type()));
    }
    if (a->empty()) fail(*n, name, at_least_one);
    return *a;
  }

  int64_t integer_in_range(const toml::node& n, std::string_view key, int64_t lo,
                           int64_t hi) const {
    const toml::value<int64_t>* v = n.as_integer();
    if (v == nullptr) fail(n, key, "expected an integer, got " + type_name(n.type()));
    int64_t x = v->get();
    if (x < lo || x > hi) {
      fail(n, key,
           "must be between " + std::to_string(lo) + " and " + std::to_string(hi) + ", got " +
               std::to_string(x));
    }
    return x;
  }

  Duration duration(const toml::node& n, std::string_view key) const {
    if (n.is_integer() || n.is_floating_point()) {
      fail(n, key, "durations need a unit, e.g. \"5s\"");
    }
    if (!n.is_string()) {
      fail(n, key, "expected a duration string like \"5s\", got " + type_name(n.type()));
    }
    const std::string& text = expect_string(n, key);
    std::optional<Duration> d = parse_duration(text);
    if (!d) {
      fail(n, key,
           "invalid duration " + quote(text) +
               ": expected a non-negative number and one unit of ns, us, ms, s, m, h "
               "(e.g. \"250ms\")");
    }
    // Deadlines are computed as now + duration in signed 64-bit nanoseconds: anything past a
    // week is a typo (or "9223372036s"), never a setting that works.
    if (*d > kMaxDuration) {
      fail(n, key, "duration " + quote(text) + " is out of range (at most 7 days)");
    }
    return *d;
  }

  /// A duration in [lo, hi], with an error naming both bounds.
  Duration duration_in_range(const toml::node& n, std::string_view key, Duration lo,
                             Duration hi) const {
    Duration d = duration(n, key);
    if (d < lo || d > hi) {
      fail(n, key,
           "must be between " + format_duration(lo) + " and " + format_duration(hi) + ", got " +
               quote(expect_string(n, key)));
    }
    return d;
  }

  uint32_t size_in_range(const toml::node& n, std::string_view key, uint64_t lo,
                         uint64_t hi) const {
    return static_cast<uint32_t>(size64_in_range(n, key, lo, std::min<uint64_t>(hi, UINT32_MAX)));
  }

  uint64_t size64_in_range(const toml::node& n, std::string_view key, uint64_t lo,
                           uint64_t hi) const {
    std::optional<uint64_t> bytes;
    if (const toml::value<int64_t>* i = n.as_integer()) {
      if (i->get() < 0) fail(n, key, "must not be negative, got " + std::to_string(i->get()));
      bytes = static_cast<uint64_t>(i->get());
    } else if (const toml::value<std::string>* s = n.as_string()) {
      bytes = parse_size(s->get());
      if (!bytes) {
        fail(n, key,
             "invalid size " + quote(s->get()) +
                 ": expected a whole number of bytes with an optional unit B, KiB, MiB, GiB "
                 "(or k, M, G), e.g. \"256KiB\"");
      }
    } else {
      fail(n, key,
           "expected a size (an integer of bytes or a string like \"256KiB\"), got " +
               type_name(n.type()));
    }
    if (*bytes < lo || *bytes > hi) {
      fail(n, key,
           "must be between " + format_size(lo) + " and " + format_size(hi) + ", got " +
               format_size(*bytes));
    }
    return *bytes;
  }

  template <typename E>
  E choose(const toml::node& n, std::string_view key,
           std::initializer_list<std::pair<std::string_view, E>> choices) const {
    const std::string& text = expect_string(n, key);
    std::string allowed;
    for (const auto& [name, value] : choices) {
      if (text == name) return value;
      allowed += (allowed.empty() ? "" : ", ") + quote(name);
    }
    fail(n, key, "invalid value " + quote(text) + ", expected one of " + allowed);
  }

  io::SocketAddress address(const toml::node& n, std::string_view key, bool endpoint) const {
    const std::string& text = expect_string(n, key);
    if (std::optional<io::SocketAddress> a = io::parse_socket_address(text)) return *std::move(a);
    if (looks_like_host_name(text)) {
      if (endpoint) {
        fail(n, key,
             quote(text) +
                 " is a host name; endpoints must be IP literals (to follow a DNS name, set "
                 "`dns` and `port` instead of `endpoints`)");
      }
      fail(n, key, quote(text) + " is a host name; listen on an IP literal like \"0.0.0.0:8080\"");
    }
    fail(n, key,
         "invalid address " + quote(text) +
             ": expected \"a.b.c.d:port\" or \"[ipv6]:port\" with port 0..65535");
  }

  void check_cluster_ref(const toml::node& n, std::string_view key, const std::string& name,
                         const Config& config) const {
    if (config.find_cluster(name) != nullptr) return;
    std::vector<std::string_view> names;
    for (const ClusterConfig& c : config.clusters) names.push_back(c.name);
    fail(n, key, "unknown cluster " + quote(name) + suggestion(name, names));
  }

  void load_proxy(const toml::table& t, ProxyConfig& p) const {
    check_keys(t, "proxy",
               {"workers", "io_backend", "drain_timeout", "max_connections",
                "max_concurrent_streams", "stream_buffer", "connection_window",
                "max_header_list_size", "idle_timeout", "retry_buffer", "memory_limit",
                "handshake_timeout", "header_timeout", "body_timeout", "send_timeout"});
    if (const toml::node* n = t.get("workers")) {
      if (const toml::value<std::string>* s = n->as_string()) {
        if (s->get() != "auto") {
          fail(*n, "proxy.workers",
               "expected \"auto\" or an integer 1..256, got " + quote(s->get()));
        }
        p.workers = 0;
      } else if (n->is_integer()) {
        p.workers = static_cast<unsigned>(integer_in_range(*n, "proxy.workers", 1, 256));
      } else {
        fail(*n, "proxy.workers",
             "expected \"auto\" or an integer 1..256, got " + type_name(n->type()));
      }
    }
    if (const toml::node* n = t.get("io_backend")) {
      p.io_backend = choose<io::IoBackend>(*n, "proxy.io_backend",
                                           {{"auto", io::IoBackend::kAuto},
                                            {"io_uring", io::IoBackend::kIoUring},
                                            {"epoll", io::IoBackend::kEpoll}});
    }
    if (const toml::node* n = t.get("drain_timeout")) {
      p.drain_timeout =
          duration_in_range(*n, "proxy.drain_timeout", Duration::zero(), std::chrono::hours(1));
    }
    if (const toml::node* n = t.get("max_connections")) {
      p.max_connections = static_cast<uint32_t>(
          integer_in_range(*n, "proxy.max_connections", 1, std::numeric_limits<uint32_t>::max()));
    }
    if (const toml::node* n = t.get("max_concurrent_streams")) {
      p.max_concurrent_streams = static_cast<uint32_t>(integer_in_range(
          *n, "proxy.max_concurrent_streams", 1, std::numeric_limits<int32_t>::max()));
    }
    const toml::node* stream_buffer = t.get("stream_buffer");
    if (stream_buffer != nullptr) {
      p.stream_buffer = size_in_range(*stream_buffer, "proxy.stream_buffer", 16 * kKiB, 64 * kMiB);
    }
    const toml::node* window = t.get("connection_window");
    if (window != nullptr) {
      p.connection_window = size_in_range(*window, "proxy.connection_window", 64 * kKiB, kGiB);
    }
    // A connection window below one stream's window would let a single stream stall the
    // whole connection before its own flow control kicks in.
    if (p.connection_window < p.stream_buffer) {
      if (window != nullptr) {
        fail(*window, "proxy.connection_window",
             "must be at least proxy.stream_buffer (" + format_size(p.stream_buffer) + "), got " +
                 format_size(p.connection_window));
      }
      fail(*stream_buffer, "proxy.stream_buffer",
           "must not exceed proxy.connection_window (" + format_size(p.connection_window) +
               "), got " + format_size(p.stream_buffer));
    }
    if (const toml::node* n = t.get("max_header_list_size")) {
      p.max_header_list_size = size_in_range(*n, "proxy.max_header_list_size", kKiB, 16 * kMiB);
    }
    const std::pair<const char*, Duration*> stages[] = {
        {"idle_timeout", &p.idle_timeout},     {"handshake_timeout", &p.handshake_timeout},
        {"header_timeout", &p.header_timeout}, {"body_timeout", &p.body_timeout},
        {"send_timeout", &p.send_timeout},
    };
    for (auto [key, field] : stages) {
      if (const toml::node* n = t.get(key)) *field = duration(*n, join("proxy", key));
    }
    if (const toml::node* n = t.get("retry_buffer")) {
      p.retry_buffer = size_in_range(*n, "proxy.retry_buffer", 0, 64 * kMiB);
    }
    if (const toml::node* n = t.get("memory_limit")) {
      p.memory_limit = size64_in_range(*n, "proxy.memory_limit", 4 * kMiB, 1024 * kGiB);
    }
  }

  void load_limits(const toml::table& t, LimitsConfig& l) const {
    const std::pair<const char*, uint32_t*> counts[] = {
        {"reset_rate", &l.reset_rate},
        {"reset_burst", &l.reset_burst},
        {"address_reset_rate", &l.address_reset_rate},
        {"address_reset_burst", &l.address_reset_burst},
        {"max_empty_frames", &l.max_empty_frames},
        {"window_updates_per_data_frame", &l.window_updates_per_data_frame},
        {"priority_per_stream", &l.priority_per_stream},
        {"control_rate", &l.control_rate},
        {"control_burst", &l.control_burst},
        {"max_outbound_control_frames", &l.max_outbound_control_frames},
    };
    check_keys(
        t, "limits",
        {"turn_bytes", "refuse_for", "reset_rate", "reset_burst", "address_reset_rate",
         "address_reset_burst", "max_empty_frames", "window_updates_per_data_frame",
         "priority_per_stream", "control_rate", "control_burst", "max_outbound_control_frames"});
    for (auto [key, field] : counts) {
      if (const toml::node* n = t.get(key)) {
        // 0 turns the per-address limit off (behind a balancer that hides client addresses).
        const int64_t lo = field == &l.address_reset_rate ? 0 : 1;
        *field = static_cast<uint32_t>(integer_in_range(*n, join("limits", key), lo, 1'000'000));
      }
    }
    if (const toml::node* n = t.get("turn_bytes")) {
      l.turn_bytes = size_in_range(*n, "limits.turn_bytes", 16 * kKiB, 16 * kMiB);
    }
    if (const toml::node* n = t.get("refuse_for")) {
      l.refuse_for =
          duration_in_range(*n, "limits.refuse_for", Duration::zero(), std::chrono::hours(1));
    }
    // A burst below the rate would refill past itself every second: say so rather than clamp.
    for (auto [rate, burst, key] :
         {std::tuple{l.reset_rate, l.reset_burst, "reset_burst"},
          std::tuple{l.address_reset_rate, l.address_reset_burst, "address_reset_burst"},
          std::tuple{l.control_rate, l.control_burst, "control_burst"}}) {
      if (burst < rate) {
        const toml::node* n = t.get(key);
        fail(n != nullptr ? n->source() : t.source(), join("limits", key),
             "must be at least the matching rate (" + std::to_string(rate) + "), got " +
                 std::to_string(burst));
      }
    }
  }

  ClusterConfig load_cluster(const toml::table& t, const std::string& path) const {
    check_keys(t, path,
               {"name", "lb", "endpoints", "connect_timeout", "dns", "port", "record",
                "min_refresh", "max_refresh", "stale_after", "hold", "keepalive", "health_check",
                "outlier", "retry", "hedge", "slow_start", "tls"});
    ClusterConfig c;

    std::string name_key = join(path, "name");
    const toml::node& name = require(t, path, "name");
    c.name = expect_string(name, name_key);
    bool name_ok = !c.name.empty() && std::all_of(c.name.begin(), c.name.end(), [](char ch) {
      return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
             ch == '_' || ch == '.' || ch == '-';
    });
    // Names show up in metrics labels and admin paths, so keep them to a safe alphabet.
    if (!name_ok) {
      fail(name, name_key,
           "invalid name " + quote(c.name) + ": use letters, digits, '_', '.', '-'");
    }

    if (const toml::node* n = t.get("lb")) {
      c.lb = choose<LbPolicy>(*n, join(path, "lb"),
                              {{"round_robin", LbPolicy::kRoundRobin}, {"p2c", LbPolicy::kP2c}});
    }

    if (const toml::node* n = t.get("dns")) {
      if (t.get("endpoints") != nullptr) {
        fail(*t.get("endpoints"), join(path, "endpoints"),
             "a cluster takes either `endpoints` or `dns`, not both");
      }
      load_dns(t, *n, path, c.dns);
    } else {
      for (std::string_view k :
           {"port", "record", "min_refresh", "max_refresh", "stale_after", "hold"}) {
        if (const toml::node* x = t.get(k)) fail(*x, join(path, k), "only applies with `dns`");
      }
    }

    std::string endpoints_key = join(path, "endpoints");
    if (c.uses_dns()) {
      load_upstream_policies(t, path, c);
      return c;
    }
    if (t.get("endpoints") == nullptr) {
      fail(t.source(), join(path, "endpoints"),
           "missing: a cluster needs `endpoints` (IP literals) or `dns` (a name to follow)");
    }
    const toml::node& endpoints_node = require(t, path, "endpoints");
    const toml::array& endpoints = expect_array(endpoints_node, endpoints_key);
    if (endpoints.empty()) fail(endpoints_node, endpoints_key, "needs at least one endpoint");
    for (size_t i = 0; i < endpoints.size(); ++i) {
      std::string key = indexed(endpoints_key, i);
      const toml::node& e = endpoints[i];
      EndpointConfig endpoint;
      if (e.is_string()) {
        endpoint.address = address(e, key, /*endpoint=*/true);
      } else if (const toml::table* et = e.as_table()) {
        check_keys(*et, key, {"address", "weight"});
        endpoint.address = address(require(*et, key, "address"), join(key, "address"), true);
        if (const toml::node* w = et->get("weight")) {
          endpoint.weight =
              static_cast<uint32_t>(integer_in_range(*w, join(key, "weight"), 1, 10000));
        }
      } else {
        fail(e, key,
             "expected an address string or a table { address, weight }, got " +
                 type_name(e.type()));
      }
      c.endpoints.push_back(std::move(endpoint));
    }

    load_upstream_policies(t, path, c);
    return c;
  }

  void load_upstream_policies(const toml::table& t, const std::string& path,
                              ClusterConfig& c) const {
    if (const toml::node* n = t.get("connect_timeout")) {
      std::string key = join(path, "connect_timeout");
      c.connect_timeout =
          duration_in_range(*n, key, std::chrono::milliseconds(1), std::chrono::minutes(1));
    }
    if (const toml::node* n = t.get("keepalive")) load_keepalive(*n, join(path, "keepalive"), c);
    if (const toml::node* n = t.get("health_check")) {
      load_health_check(*n, join(path, "health_check"), c.health_check);
    }
    if (const toml::node* n = t.get("outlier")) load_outlier(*n, join(path, "outlier"), c.outlier);
    if (const toml::node* n = t.get("retry")) load_retry(*n, join(path, "retry"), c.retry);
    if (const toml::node* n = t.get("hedge")) load_hedge(*n, join(path, "hedge"), c.hedge);
    if (const toml::node* n = t.get("tls")) load_cluster_tls(*n, join(path, "tls"), c);
    if (const toml::node* n = t.get("slow_start")) {
      c.slow_start =
          duration_in_range(*n, join(path, "slow_start"), Duration::zero(), std::chrono::hours(1));
    }
  }

  // `false` turns a policy off; a table sets its keys over the defaults.
  const toml::table* policy_table(const toml::node& n, std::string_view key, bool* enabled) const {
    if (const toml::value<bool>* b = n.as_boolean()) {
      *enabled = b->get();
      return nullptr;
    }
    if (!n.is_table()) {
      fail(n, key, "expected a table (or false to turn it off), got " + type_name(n.type()));
    }
    *enabled = true;
    return n.as_table();
  }

  Duration positive_duration(const toml::node& n, std::string_view key, Duration hi) const {
    return duration_in_range(n, key, std::chrono::milliseconds(1), hi);
  }

  uint32_t count_in_range(const toml::node& n, std::string_view key, int64_t lo, int64_t hi) const {
    return static_cast<uint32_t>(integer_in_range(n, key, lo, hi));
  }

  void load_keepalive(const toml::node& n, const std::string& key, ClusterConfig& c) const {
    KeepaliveConfig& k = c.keepalive;
    const toml::table* t = policy_table(n, key, &k.enabled);
    if (t == nullptr) return;
    check_keys(*t, key, {"interval", "timeout", "idle"});
    if (const toml::node* x = t->get("interval")) {
      k.interval = positive_duration(*x, join(key, "interval"), std::chrono::hours(1));
    }
    if (const toml::node* x = t->get("timeout")) {
      k.timeout = positive_duration(*x, join(key, "timeout"), std::chrono::minutes(5));
    }
    if (const toml::node* x = t->get("idle")) {
      k.idle = positive_duration(*x, join(key, "idle"), std::chrono::hours(24));
    }
  }

  void load_health_check(const toml::node& n, const std::string& key, HealthCheckConfig& h) const {
    const toml::table* t = policy_table(n, key, &h.enabled);
    if (t == nullptr) return;
    check_keys(*t, key, {"interval", "timeout", "unhealthy", "healthy", "service"});
    if (const toml::node* x = t->get("interval")) {
      h.interval = positive_duration(*x, join(key, "interval"), std::chrono::hours(1));
    }
    if (const toml::node* x = t->get("timeout")) {
      h.timeout = positive_duration(*x, join(key, "timeout"), std::chrono::minutes(1));
    }
    if (const toml::node* x = t->get("unhealthy")) {
      h.unhealthy = count_in_range(*x, join(key, "unhealthy"), 1, 100);
    }
    if (const toml::node* x = t->get("healthy")) {
      h.healthy = count_in_range(*x, join(key, "healthy"), 1, 100);
    }
    if (const toml::node* x = t->get("service"))
      h.service = expect_string(*x, join(key, "service"));
  }

  void load_outlier(const toml::node& n, const std::string& key, OutlierConfig& o) const {
    const toml::table* t = policy_table(n, key, &o.enabled);
    if (t == nullptr) return;
    check_keys(*t, key,
               {"consecutive_failures", "consecutive_unavailable", "base_ejection", "max_ejection",
                "max_ejected_percent", "panic_threshold"});
    if (const toml::node* x = t->get("consecutive_failures")) {
      o.consecutive_failures = count_in_range(*x, join(key, "consecutive_failures"), 1, 1000);
    }
    if (const toml::node* x = t->get("consecutive_unavailable")) {
      o.consecutive_unavailable = count_in_range(*x, join(key, "consecutive_unavailable"), 1, 1000);
    }
    if (const toml::node* x = t->get("base_ejection")) {
      o.base_ejection = positive_duration(*x, join(key, "base_ejection"), std::chrono::hours(1));
    }
    if (const toml::node* x = t->get("max_ejection")) {
      o.max_ejection = positive_duration(*x, join(key, "max_ejection"), std::chrono::hours(24));
    }
    if (o.max_ejection < o.base_ejection) {
      fail(t->get("max_ejection") ? *t->get("max_ejection") : *t->get("base_ejection"),
           join(key, "max_ejection"), "must not be less than base_ejection");
    }
    if (const toml::node* x = t->get("max_ejected_percent")) {
      o.max_ejected_percent = count_in_range(*x, join(key, "max_ejected_percent"), 0, 100);
    }
    if (const toml::node* x = t->get("panic_threshold")) {
      o.panic_threshold = count_in_range(*x, join(key, "panic_threshold"), 0, 100);
    }
  }

  uint32_t status_codes(const toml::node& n, std::string_view key) const {
    static constexpr std::array<std::string_view, 17> kNames = {"ok",
                                                                "cancelled",
                                                                "unknown",
                                                                "invalid_argument",
                                                                "deadline_exceeded",
                                                                "not_found",
                                                                "already_exists",
                                                                "permission_denied",
                                                                "resource_exhausted",
                                                                "failed_precondition",
                                                                "aborted",
                                                                "out_of_range",
                                                                "unimplemented",
                                                                "internal",
                                                                "unavailable",
                                                                "data_loss",
                                                                "unauthenticated"};
    const toml::array& list = expect_array(n, key);
    uint32_t bits = 0;
    for (size_t i = 0; i < list.size(); ++i) {
      std::string k = indexed(key, i);
      std::string name = expect_string(list[i], k);
      std::transform(name.begin(), name.end(), name.begin(), [](unsigned char ch) {
        return ch == '-' ? '_' : static_cast<char>(std::tolower(ch));
      });
      auto it = std::find(kNames.begin() + 1, kNames.end(), name);
      if (it == kNames.end()) {
        fail(list[i], k,
             "unknown gRPC status " + quote(expect_string(list[i], k)) + suggestion(name, kNames) +
                 " (names as in grpc: \"unavailable\", ...)");
      }
      bits |= 1u << (it - kNames.begin());
    }
    return bits;
  }

  void load_retry(const toml::node& n, const std::string& key, RetryPolicy& r) const {
    const toml::table& t = expect_table(n, key);
    check_keys(t, key,
               {"on", "attempts", "per_try_timeout", "backoff", "max_backoff", "budget_percent",
                "budget_min_per_second"});
    if (const toml::node* x = t.get("on")) r.on = status_codes(*x, join(key, "on"));
    if (const toml::node* x = t.get("attempts")) {
      r.attempts = count_in_range(*x, join(key, "attempts"), 1, 10);
    }
    if (const toml::node* x = t.get("per_try_timeout"))
      load_per_try(*x, join(key, "per_try_timeout"), r);
    if (const toml::node* x = t.get("backoff")) {
      r.backoff =
          duration_in_range(*x, join(key, "backoff"), Duration::zero(), std::chrono::minutes(1));
    }
    if (const toml::node* x = t.get("max_backoff")) {
      r.max_backoff = duration_in_range(*x, join(key, "max_backoff"), Duration::zero(),
                                        std::chrono::minutes(5));
    }
    if (r.max_backoff < r.backoff) {
      fail(t.get("max_backoff") ? *t.get("max_backoff") : *t.get("backoff"),
           join(key, "max_backoff"), "must not be less than backoff");
    }
    if (const toml::node* x = t.get("budget_percent")) {
      r.budget_percent = count_in_range(*x, join(key, "budget_percent"), 0, 100);
    }
    if (const toml::node* x = t.get("budget_min_per_second")) {
      r.budget_min_per_second = count_in_range(*x, join(key, "budget_min_per_second"), 0, 100000);
    }
  }

  // "off", a duration ("300ms"), or a share of the deadline left at each try ("40%").
  void load_per_try(const toml::node& n, const std::string& key, RetryPolicy& r) const {
    const std::string& text = expect_string(n, key);
    r.per_try_timeout = Duration::zero();
    r.per_try_share_permille = 0;
    if (text == "off") return;
    if (text.ends_with('%')) {
      unsigned pct = 0;
      auto [p, ec] = std::from_chars(text.data(), text.data() + text.size() - 1, pct);
      if (ec != std::errc() || p != text.data() + text.size() - 1 || pct < 1 || pct > 100) {
        fail(n, key, "invalid share " + quote(text) + ": expected 1% to 100%");
      }
      r.per_try_share_permille = static_cast<uint16_t>(pct * 10);
      return;
    }
    if (!parse_duration(text)) {
      fail(n, key,
           "invalid value " + quote(text) +
               ": expected \"off\", a duration like \"300ms\" or a share like \"40%\"");
    }
    r.per_try_timeout = positive_duration(n, key, std::chrono::hours(1));
  }

  void load_hedge(const toml::node& n, const std::string& key, HedgePolicy& h) const {
    const toml::table* t = policy_table(n, key, &h.enabled);
    if (t == nullptr) return;
    check_keys(*t, key, {"after", "methods"});
    if (const toml::node* x = t->get("after")) {
      if (x->is_string() && x->as_string()->get() == "auto") {
        h.after = Duration::zero();
      } else {
        h.after = positive_duration(*x, join(key, "after"), std::chrono::minutes(1));
      }
    }
    if (const toml::node* x = t->get("methods")) {
      std::string mkey = join(key, "methods");
      const toml::array& list = expect_array(*x, mkey);
      h.methods.clear();
      for (size_t i = 0; i < list.size(); ++i) {
        const std::string& m = expect_string(list[i], indexed(mkey, i));
        if (!m.starts_with('/')) {
          fail(list[i], indexed(mkey, i),
               "a method is a :path like \"/pkg.Svc/Get\", got " + quote(m));
        }
        h.methods.push_back(m);
      }
    }
  }

  void load_dns(const toml::table& t, const toml::node& name_node, const std::string& path,
                DnsConfig& d) const {
    std::string key = join(path, "dns");
    d.name = expect_string(name_node, key);
    while (d.name.ends_with('.')) d.name.pop_back();
    bool ok = !d.name.empty() && d.name.size() <= 253 &&
              std::all_of(d.name.begin(), d.name.end(), [](char ch) {
                return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                       (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' || ch == '_';
              });
    if (!ok) fail(name_node, key, "invalid DNS name " + quote(d.name));
    if (const toml::node* n = t.get("record")) {
      d.record = choose<DnsRecord>(
          *n, join(path, "record"),
          {{"A", DnsRecord::kA}, {"AAAA", DnsRecord::kAAAA}, {"SRV", DnsRecord::kSRV}});
    }
    const toml::node* port = t.get("port");
    if (d.record == DnsRecord::kSRV) {
      if (port != nullptr) {
        fail(*port, join(path, "port"), "SRV records carry their own ports; remove `port`");
      }
    } else {
      if (port == nullptr) {
        fail(t.source(), join(path, "port"),
             "missing: A and AAAA records need the endpoints' `port`");
      }
      d.port = static_cast<uint16_t>(integer_in_range(*port, join(path, "port"), 1, 65535));
    }
    if (const toml::node* n = t.get("min_refresh")) {
      d.min_refresh = duration(*n, join(path, "min_refresh"));
      if (d.min_refresh <= Duration::zero()) {
        fail(*n, join(path, "min_refresh"), "must be greater than 0s");
      }
    }
    if (const toml::node* n = t.get("max_refresh")) {
      d.max_refresh = duration(*n, join(path, "max_refresh"));
      if (d.max_refresh < d.min_refresh) {
        fail(*n, join(path, "max_refresh"), "must not be less than min_refresh");
      }
    } else if (d.max_refresh < d.min_refresh) {
      d.max_refresh = d.min_refresh;
    }
    if (const toml::node* n = t.get("stale_after")) {
      d.stale_after = duration(*n, join(path, "stale_after"));
    }
    if (const toml::node* n = t.get("hold")) d.hold = duration(*n, join(path, "hold"));
  }

  void load_admin(const toml::table& t, AdminConfig& a) const {
    check_keys(t, "admin", {"address", "max_connections", "request_timeout"});
    if (const toml::node* n = t.get("address")) {
      if (n->is_string() && expect_string(*n, "admin.address") == "off") {
        a.enabled = false;
      } else {
        a.address = address(*n, "admin.address", false);
      }
    }
    if (const toml::node* n = t.get("max_connections")) {
      a.max_connections =
          static_cast<uint32_t>(integer_in_range(*n, "admin.max_connections", 1, 1024));
    }
    if (const toml::node* n = t.get("request_timeout")) {
      a.request_timeout = duration_in_range(*n, "admin.request_timeout",
                                            std::chrono::milliseconds(10), std::chrono::minutes(5));
    }
  }

  void load_log(const toml::table& t, LogConfig& l) const {
    check_keys(t, "log", {"level", "access", "access_sample", "access_buffer"});
    if (const toml::node* n = t.get("level")) {
      using L = LogConfig::Level;
      l.level = choose<L>(
          *n, "log.level",
          {{"debug", L::kDebug}, {"info", L::kInfo}, {"warn", L::kWarn}, {"error", L::kError}});
      l.level_set = true;
    }
    if (const toml::node* n = t.get("access")) {
      const std::string& text = expect_string(*n, "log.access");
      if (text == "stdout") {
        l.access = AccessLogTarget::kStdout;
      } else if (text == "off") {
        l.access = AccessLogTarget::kOff;
      } else if (text.empty()) {
        fail(*n, "log.access", "expected \"stdout\", \"off\" or a file path, got \"\"");
      } else {
        l.access = AccessLogTarget::kFile;
        l.access_path = text;
      }
    }
    if (const toml::node* n = t.get("access_sample")) {
      double v = 0;
      if (const toml::value<double>* d = n->as_floating_point()) {
        v = d->get();
      } else if (const toml::value<int64_t>* i = n->as_integer()) {
        v = static_cast<double>(i->get());
      } else {
        fail(*n, "log.access_sample", "expected a number 0..1, got " + type_name(n->type()));
      }
      if (!(v >= 0.0 && v <= 1.0)) {
        fail(*n, "log.access_sample", "must be between 0 and 1, got " + std::to_string(v));
      }
      l.access_sample = v;
    }
    if (const toml::node* n = t.get("access_buffer")) {
      l.access_buffer =
          static_cast<uint32_t>(integer_in_range(*n, "log.access_buffer", 16, 1 << 20));
    }
  }

  void load_metrics(const toml::table& t, MetricsConfig& m) const {
    check_keys(t, "metrics", {"max_methods"});
    if (const toml::node* n = t.get("max_methods")) {
      m.max_methods = static_cast<uint32_t>(integer_in_range(*n, "metrics.max_methods", 0, 10000));
    }
  }

  void load_discovery(const toml::table& t, DiscoveryConfig& d) const {
    check_keys(t, "discovery", {"resolvers", "query_timeout"});
    if (const toml::node* n = t.get("resolvers")) {
      const toml::array& list = expect_array(*n, "discovery.resolvers");
      for (size_t i = 0; i < list.size(); ++i) {
        std::string key = indexed("discovery.resolvers", i);
        const std::string& text = expect_string(list[i], key);
        std::optional<io::SocketAddress> a = io::parse_socket_address(text);
        if (!a) {
          // A resolver without a port means the usual one.
          a = io::parse_socket_address(text.find(':') == std::string::npos ? text + ":53"
                                                                           : "[" + text + "]:53");
        }
        if (!a) fail(list[i], key, "invalid resolver " + quote(text) + ": expected \"ip[:port]\"");
        d.resolvers.push_back(*std::move(a));
      }
    }
    if (const toml::node* n = t.get("query_timeout")) {
      d.query_timeout = duration_in_range(*n, "discovery.query_timeout",
                                          std::chrono::milliseconds(1), std::chrono::minutes(1));
    }
  }

  ListenerConfig load_listener(const toml::table& t, const std::string& path,
                               const Config& config) const {
    check_keys(t, path, {"address", "cluster", "routes", "tls"});
    ListenerConfig l;
    if (const toml::node* n = t.get("tls")) load_listener_tls(*n, join(path, "tls"), l.tls);
    l.address = address(require(t, path, "address"), join(path, "address"), false);
    if (const toml::node* n = t.get("cluster")) {
      std::string key = join(path, "cluster");
      l.cluster = expect_string(*n, key);
      check_cluster_ref(*n, key, l.cluster, config);
    }
    if (const toml::node* n = t.get("routes")) {
      std::string routes_key = join(path, "routes");
      const toml::array& routes = expect_array(*n, routes_key);
      for (size_t i = 0; i < routes.size(); ++i) {
        std::string key = indexed(routes_key, i);
        const toml::table& rt = expect_table(routes[i], key);
        check_keys(rt, key, {"prefix", "cluster", "timeout", "retry", "hedge"});
        RouteConfig r;
        const toml::node& prefix = require(rt, key, "prefix");
        r.prefix = expect_string(prefix, join(key, "prefix"));
        // :path always starts with '/', so any other prefix could never match.
        if (!r.prefix.starts_with('/')) {
          fail(prefix, join(key, "prefix"), "must start with '/', got " + quote(r.prefix));
        }
        const toml::node& cluster = require(rt, key, "cluster");
        r.cluster = expect_string(cluster, join(key, "cluster"));
        check_cluster_ref(cluster, join(key, "cluster"), r.cluster, config);
        if (const toml::node* timeout = rt.get("timeout")) {
          r.timeout = duration(*timeout, join(key, "timeout"));
        }
        // The route's retry and hedge keys lay over its cluster's.
        const ClusterConfig& target = *config.find_cluster(r.cluster);
        r.retry = target.retry;
        r.hedge = target.hedge;
        if (const toml::node* x = rt.get("retry")) load_retry(*x, join(key, "retry"), r.retry);
        if (const toml::node* x = rt.get("hedge")) load_hedge(*x, join(key, "hedge"), r.hedge);
        l.routes.push_back(std::move(r));
      }
    }
    if (l.cluster.empty() && l.routes.empty()) {
      fail(t.source(), path, "needs a default `cluster` or at least one route");
    }
    return l;
  }

  std::string where(const toml::node& n, std::string_view key) const {
    return source_ + ":" + std::to_string(n.source().begin.line) + ":" +
           std::to_string(n.source().begin.column) + ": " + std::string(key);
  }

  // A PEM file named by `n`: read now, relative paths from the config file's folder.
  PemFile pem_file(const toml::node& n, std::string_view key) const {
    PemFile f;
    f.where = where(n, key);
    f.path = expect_string(n, key);
    if (f.path.empty()) fail(n, key, "must name a PEM file");
    const bool from_file = !source_.starts_with("env:") && !source_.starts_with("<");
    if (f.path[0] != '/' && from_file && source_.find('/') != std::string::npos) {
      f.path = source_.substr(0, source_.rfind('/') + 1) + f.path;
    }
    std::optional<std::string> text = read_small_file(f.path, 4 * kMiB);
    if (!text) fail(n, key, "cannot read " + quote(f.path) + ": " + std::strerror(errno));
    if (text->find("-----BEGIN ") == std::string::npos) {
      fail(n, key, quote(f.path) + " is not PEM (no -----BEGIN line)");
    }
    f.pem = std::move(*text);
    return f;
  }

  bool boolean(const toml::node& n, std::string_view key) const {
    if (const toml::value<bool>* b = n.as_boolean()) return b->get();
    fail(n, key, "expected true or false, got " + type_name(n.type()));
  }

  void load_listener_tls(const toml::node& n, const std::string& key,
                         ListenerTlsConfig& tls) const {
    const toml::table& t = expect_table(n, key);
    check_keys(t, key, {"cert", "key", "client_ca", "client_cert", "min_version", "sni_certs"});
    tls.enabled = true;
    tls.where = where(n, key);
    tls.cert = pem_file(require(t, key, "cert"), join(key, "cert"));
    tls.key = pem_file(require(t, key, "key"), join(key, "key"));
    if (const toml::node* x = t.get("client_ca"))
      tls.client_ca = pem_file(*x, join(key, "client_ca"));
    if (const toml::node* x = t.get("client_cert")) {
      const std::string& v = expect_string(*x, join(key, "client_cert"));
      if (v != "required" && v != "optional") {
        fail(*x, join(key, "client_cert"),
             "expected \"required\" or \"optional\", got " + quote(v));
      }
      if (tls.client_ca.path.empty()) {
        fail(*x, join(key, "client_cert"),
             "needs `client_ca` (the CAs client certificates are verified against)");
      }
      tls.require_client_cert = v == "required";
    }
    if (const toml::node* x = t.get("min_version")) {
      const std::string& v = expect_string(*x, join(key, "min_version"));
      if (v != "1.2" && v != "1.3")
        fail(*x, join(key, "min_version"), "expected \"1.2\" or \"1.3\", got " + quote(v));
      tls.tls13_only = v == "1.3";
    }
    if (const toml::node* x = t.get("sni_certs")) {
      std::string list_key = join(key, "sni_certs");
      const toml::array& a = expect_array(*x, list_key);
      for (size_t i = 0; i < a.size(); ++i) {
        std::string k = indexed(list_key, i);
        const toml::table& e = expect_table(a[i], k);
        check_keys(e, k, {"cert", "key"});
        tls.sni_certs.emplace_back(pem_file(require(e, k, "cert"), join(k, "cert")),
                                   pem_file(require(e, k, "key"), join(k, "key")));
      }
    }
  }

  void load_cluster_tls(const toml::node& n, const std::string& key, ClusterConfig& c) const {
    ClusterTlsConfig& tls = c.tls;
    const toml::table& t = expect_table(n, key);
    check_keys(t, key, {"sni", "ca", "cert", "key", "verify"});
    tls.enabled = true;
    tls.where = where(n, key);
    if (const toml::node* x = t.get("sni")) tls.sni = expect_string(*x, join(key, "sni"));
    if (const toml::node* x = t.get("verify")) tls.verify = boolean(*x, join(key, "verify"));
    if (const toml::node* x = t.get("ca")) {
      tls.ca = pem_file(*x, join(key, "ca"));
    } else if (tls.verify) {
      // The system store (ca-certificates), read like any other bundle.
      static constexpr const char* kSystem = "/etc/ssl/certs/ca-certificates.crt";
      std::optional<std::string> text = read_small_file(kSystem, 4 * kMiB);
      if (!text) {
        fail(n, key,
             std::string("no `ca` and the system store ") + kSystem + " cannot be read (" +
                 std::strerror(errno) + "): name a CA bundle, or set verify = false");
      }
      tls.ca = PemFile{kSystem, std::move(*text)};
    }
    const toml::node* cert = t.get("cert");
    const toml::node* pkey = t.get("key");
    if ((cert == nullptr) != (pkey == nullptr)) {
      fail(n, key, "a client certificate needs both `cert` and `key`");
    }
    if (cert != nullptr) {
      tls.cert = pem_file(*cert, join(key, "cert"));
      tls.key = pem_file(*pkey, join(key, "key"));
    }
  }

  // Port 0 asks the kernel for a fresh port on every bind, so those never collide.
  static bool same_bind_address(const io::SocketAddress& a, const io::SocketAddress& b) {
    auto port_of = [](const io::SocketAddress& s) {
      return s.storage.ss_family == AF_INET
                 ? reinterpret_cast<const sockaddr_in&>(s.storage).sin_port
                 : reinterpret_cast<const sockaddr_in6&>(s.storage).sin6_port;
    };
    if (port_of(a) == 0 || a.len != b.len) return false;
    return std::memcmp(&a.storage, &b.storage, a.len) == 0;
  }

  std::string source_;
};

}  // namespace

const ClusterConfig* Config::find_cluster(std::string_view name) const {
  for (const ClusterConfig& c : clusters) {
    if (c.name == name) return &c;
  }
  return nullptr;
}

Config parse_config(std::string_view toml_text, std::string_view source_name) {
  toml::table root;
  try {
    root = toml::parse(toml_text, source_name);
  } catch (const toml::parse_error& e) {
    const toml::source_position& at = e.source().begin;
    throw ConfigError(std::string(source_name) + ":" + std::to_string(at.line) + ":" +
                      std::to_string(at.column) +
                      ": syntax error: " + std::string(e.description()));
  }
  return Loader(source_name).load(root);
}

}  // namespace ringlb::core::config
