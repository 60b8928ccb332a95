// Config loader: a full config round-trips into the struct, and every kind of mistake an operator
// can make produces "FILE:LINE:COLUMN: KEY: problem" pointing at the right spot.
#include "core/config/config.h"

#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <cstring>
#include <string>

using namespace std::chrono_literals;
using ringlb::core::config::AccessLogTarget;
using ringlb::core::config::ClusterConfig;
using ringlb::core::config::Config;
using ringlb::core::config::ConfigError;
using ringlb::core::config::Duration;
using ringlb::core::config::LbPolicy;
using ringlb::core::config::load_config;
using ringlb::core::config::LogConfig;
using ringlb::core::config::parse_config;
using ringlb::core::config::parse_duration;
using ringlb::core::config::parse_size;
using ringlb::core::config::RouteConfig;
using ringlb::core::io::IoBackend;
using ringlb::core::io::parse_socket_address;

namespace {

std::string error_of(std::string_view text) {
  try {
    (void)parse_config(text, "t.toml");
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "(no error)";
}

// Checks a substring so a failure prints the whole message it got.
#define CHECK_ERROR(text, expected)                                         \
  do {                                                                      \
    std::string got_ = error_of(text);                                      \
    CHECK_MESSAGE(got_.find(expected) != std::string::npos, "got: ", got_); \
  } while (0)

// Line 1 is "[[listener]]"; tests append to it or prepend a [proxy] table.
constexpr std::string_view kMinimal = R"([[listener]]
address = "127.0.0.1:8080"
cluster = "a"

[[cluster]]
name = "a"
endpoints = ["10.0.0.1:1"]
)";

// Appended after a listener under test; clusters are validated before listeners.
constexpr std::string_view kCluster = "[[cluster]]\nname = \"a\"\nendpoints = [\"10.0.0.1:1\"]\n";

std::string with_proxy(std::string_view proxy_lines) {
  return "[proxy]\n" + std::string(proxy_lines) + std::string(kMinimal);
}

uint16_t port_of(const ringlb::core::io::SocketAddress& a) {
  if (a.storage.ss_family == AF_INET) {
    return ntohs(reinterpret_cast<const sockaddr_in&>(a.storage).sin_port);
  }
  return ntohs(reinterpret_cast<const sockaddr_in6&>(a.storage).sin6_port);
}

}  // namespace

TEST_CASE("a full config parses into the expected values") {
  constexpr std::string_view text = R"(
[proxy]
workers = 4
io_backend = "epoll"
drain_timeout = "1.5s"
max_connections = 500
max_concurrent_streams = 100
stream_buffer = "1MiB"
connection_window = 16777216
max_header_list_size = "32k"
idle_timeout = "0s"

[[listener]]
address = "0.0.0.0:8080"
cluster = "orders"
routes = [ { prefix = "/payments.", cluster = "payments", timeout = "2s" } ]

[[listener]]
address = "[::1]:0"
[[listener.routes]]
prefix = "/orders."
cluster = "orders"

[[cluster]]
name = "orders"
endpoints = ["10.0.1.5:50051", { address = "10.0.1.6:50051", weight = 3 }]

[[cluster]]
name = "payments"
lb = "p2c"
endpoints = [ "[fd00::1]:50051" ]
connect_timeout = "250ms"
)";
  Config c = parse_config(text, "full.toml");
  CHECK(c.source == "full.toml");
  CHECK(c.proxy.workers == 4);
  CHECK(c.proxy.io_backend == IoBackend::kEpoll);
  CHECK(c.proxy.drain_timeout == 1500ms);
  CHECK(c.proxy.max_connections == 500);
  CHECK(c.proxy.max_concurrent_streams == 100);
  CHECK(c.proxy.stream_buffer == 1024 * 1024);
  CHECK(c.proxy.connection_window == 16 * 1024 * 1024);
  CHECK(c.proxy.max_header_list_size == 32 * 1024);
  CHECK(c.proxy.idle_timeout == Duration::zero());

  REQUIRE(c.listeners.size() == 2);
  CHECK(c.listeners[0].address.text == "0.0.0.0:8080");
  CHECK(c.listeners[0].address.storage.ss_family == AF_INET);
  CHECK(c.listeners[0].address.len == sizeof(sockaddr_in));
  CHECK(port_of(c.listeners[0].address) == 8080);
  CHECK(c.listeners[0].cluster == "orders");
  REQUIRE(c.listeners[0].routes.size() == 1);
  CHECK(c.listeners[0].routes[0].prefix == "/payments.");
  CHECK(c.listeners[0].routes[0].cluster == "payments");
  CHECK(c.listeners[0].routes[0].timeout == 2s);
  CHECK(c.listeners[1].address.storage.ss_family == AF_INET6);
  CHECK(port_of(c.listeners[1].address) == 0);
  CHECK(c.listeners[1].cluster.empty());
  REQUIRE(c.listeners[1].routes.size() == 1);
  CHECK(c.listeners[1].routes[0].prefix == "/orders.");
  CHECK(c.listeners[1].routes[0].timeout == Duration::zero());

  REQUIRE(c.clusters.size() == 2);
  CHECK(c.clusters[0].name == "orders");
  CHECK(c.clusters[0].lb == LbPolicy::kRoundRobin);
  CHECK(c.clusters[0].connect_timeout == 250ms);
  REQUIRE(c.clusters[0].endpoints.size() == 2);
  CHECK(c.clusters[0].endpoints[0].address.text == "10.0.1.5:50051");
  CHECK(c.clusters[0].endpoints[0].weight == 1);
  CHECK(c.clusters[0].endpoints[1].address.text == "10.0.1.6:50051");
  CHECK(port_of(c.clusters[0].endpoints[1].address) == 50051);
  CHECK(c.clusters[0].endpoints[1].weight == 3);
  CHECK(c.clusters[1].lb == LbPolicy::kP2c);
  CHECK(c.clusters[1].connect_timeout == 250ms);
  CHECK(c.clusters[1].endpoints[0].address.storage.ss_family == AF_INET6);

  CHECK(c.find_cluster("payments") == &c.clusters[1]);
  CHECK(c.find_cluster("nope") == nullptr);
}

TEST_CASE("defaults apply when [proxy] is absent") {
  Config c = parse_config(kMinimal, "t.toml");
  CHECK(c.proxy.workers == 0);
  CHECK(c.proxy.io_backend == IoBackend::kAuto);
  CHECK(c.proxy.drain_timeout == 20s);
  CHECK(c.proxy.stream_buffer == 256 * 1024);
  CHECK(c.proxy.connection_window == 8 * 1024 * 1024);
  CHECK(c.proxy.idle_timeout == 3min);
  CHECK(parse_config(with_proxy("workers = \"auto\"\n"), "t.toml").proxy.workers == 0);
}

TEST_CASE("syntax error keeps toml++'s description and position") {
  CHECK(error_of("[proxy]\nworkers = \n") ==
        "t.toml:2:11: syntax error: Error while parsing key-value pair: expected value, saw "
        "'\\n'");
  CHECK_ERROR("[proxy]\n[proxy]\n", "t.toml:2:1: syntax error: ");
}

TEST_CASE("unknown keys, with a suggestion when one is close") {
  CHECK(error_of(with_proxy("wrokers = 2\n")) ==
        "t.toml:2:1: proxy.wrokers: unknown key, did you mean `workers`?");
  CHECK(error_of("[proxxy]\n" + std::string(kMinimal)) ==
        "t.toml:1:2: proxxy: unknown key, did you mean `proxy`?");
  CHECK(error_of(std::string(kMinimal) + "colour = \"blue\"\n") ==
        "t.toml:8:1: cluster[0].colour: unknown key");
  // Inline tables in arrays: the key's own column.
  CHECK_ERROR(std::string(kMinimal) +
                  "[[cluster]]\nname = \"b\"\n"
                  "endpoints = [{ address = \"10.0.0.2:1\", wieght = 2 }]\n",
              "t.toml:10:40: cluster[1].endpoints[0].wieght: unknown key, did you mean `weight`?");
}

TEST_CASE("wrong types") {
  CHECK(error_of(with_proxy("max_connections = \"many\"\n")) ==
        "t.toml:2:19: proxy.max_connections: expected an integer, got string");
  CHECK(error_of("proxy = 3\n" + std::string(kMinimal)) ==
        "t.toml:1:9: proxy: expected a table, got integer");
  CHECK_ERROR(std::string(kMinimal) + "lb = 1\n",
              "t.toml:8:6: cluster[0].lb: expected a string, got integer");
  CHECK_ERROR("[listener]\naddress = \"1.2.3.4:5\"\n" + std::string(kCluster),
              "t.toml:1:1: listener: expected an array of tables ([[listener]]), got table");
  CHECK_ERROR(with_proxy("workers = 1.5\n"),
              "t.toml:2:11: proxy.workers: expected \"auto\" or an integer 1..256, got float");
}

TEST_CASE("bad enum values list the allowed ones") {
  CHECK(error_of(with_proxy("io_backend = \"kqueue\"\n")) ==
        "t.toml:2:14: proxy.io_backend: invalid value \"kqueue\", expected one of \"auto\", "
        "\"io_uring\", \"epoll\"");
  CHECK_ERROR(std::string(kMinimal) + "lb = \"random\"\n",
              "t.toml:8:6: cluster[0].lb: invalid value \"random\", expected one of "
              "\"round_robin\", \"p2c\"");
}

TEST_CASE("bad addresses") {
  CHECK(error_of("[[listener]]\naddress = \"1.2.3.4\"\n" + std::string(kCluster)) ==
        "t.toml:2:11: listener[0].address: invalid address \"1.2.3.4\": expected "
        "\"a.b.c.d:port\" or \"[ipv6]:port\" with port 0..65535");
  CHECK_ERROR("[[listener]]\naddress = \"1.2.3.4:70000\"\n" + std::string(kCluster),
              "t.toml:2:11: listener[0].address: invalid address \"1.2.3.4:70000\"");
  CHECK_ERROR("[[listener]]\naddress = \"::1:80\"\n" + std::string(kCluster),
              "t.toml:2:11: listener[0].address: invalid address \"::1:80\"");
  CHECK_ERROR("[[listener]]\naddress = \"localhost:80\"\n" + std::string(kCluster),
              "t.toml:2:11: listener[0].address: \"localhost:80\" is a host name");
  CHECK_ERROR(std::string(kMinimal) + "[[cluster]]\nname = \"b\"\nendpoints = [\"10.0.0.300:1\"]\n",
              "t.toml:10:14: cluster[1].endpoints[0]: invalid address \"10.0.0.300:1\"");
}

TEST_CASE("a host name in endpoints points at dns") {
  CHECK(error_of(
            std::string(kMinimal) +
            "[[cluster]]\nname = \"b\"\nendpoints = [\"10.0.0.2:1\", \"orders.local:50051\"]\n") ==
        "t.toml:10:28: cluster[1].endpoints[1]: \"orders.local:50051\" is a host name; endpoints "
        "must be IP literals (to follow a DNS name, set `dns` and `port` instead of `endpoints`)");
  CHECK_ERROR(
      std::string(kMinimal) + "dns = \"orders.local\"\n",
      "t.toml:7:13: cluster[0].endpoints: a cluster takes either `endpoints` or `dns`, not both");
}

constexpr std::string_view kListenerB =
    "[[listener]]\naddress = \"127.0.0.1:8080\"\ncluster = \"b\"\n";

TEST_CASE("dns clusters") {
  using namespace std::chrono_literals;
  ringlb::core::config::Config c = ringlb::core::config::parse_config(
      std::string(kListenerB) +
          "[discovery]\nresolvers = [\"127.0.0.1:5353\", \"10.0.0.2\"]\nquery_timeout = \"500ms\"\n"
          "[[cluster]]\nname = \"b\"\nlb = \"p2c\"\ndns = \"payments.internal.local.\"\n"
          "port = 50051\nmin_refresh = \"200ms\"\nmax_refresh = \"10s\"\nstale_after = \"2s\"\n"
          "hold = \"0s\"\n"
          "[[cluster]]\nname = \"s\"\ndns = \"_grpc._tcp.x.local\"\nrecord = \"SRV\"\n",
      "t.toml");
  REQUIRE(c.clusters.size() == 2);
  const auto& b = c.clusters[0];
  CHECK(b.uses_dns());
  CHECK(b.dns.name == "payments.internal.local");
  CHECK(b.dns.port == 50051);
  CHECK(b.dns.record == ringlb::core::config::DnsRecord::kA);
  CHECK(b.dns.min_refresh == 200ms);
  CHECK(b.dns.max_refresh == 10s);
  CHECK(b.dns.stale_after == 2s);
  CHECK(b.dns.hold == 0s);
  CHECK(c.clusters[1].dns.record == ringlb::core::config::DnsRecord::kSRV);
  CHECK(c.clusters[1].dns.hold < 0s);  // derived
  REQUIRE(c.discovery.resolvers.size() == 2);
  CHECK(c.discovery.resolvers[0].text == "127.0.0.1:5353");
  CHECK(c.discovery.resolvers[1].text == "10.0.0.2:53");
  CHECK(c.discovery.query_timeout == 500ms);

  const std::string head = std::string(kListenerB) + "[[cluster]]\nname = \"b\"\n";
  CHECK(error_of(head + "dns = \"x.local\"\n") ==
        "t.toml:4:1: cluster[0].port: missing: A and AAAA records need the endpoints' `port`");
  CHECK(error_of(head + "dns = \"x.local\"\nrecord = \"SRV\"\nport = 1\n") ==
        "t.toml:8:8: cluster[0].port: SRV records carry their own ports; remove `port`");
  CHECK(error_of(head + "dns = \"x.local\"\nrecord = \"MX\"\nport = 1\n") ==
        "t.toml:7:10: cluster[0].record: invalid value \"MX\", expected one of \"A\", \"AAAA\", "
        "\"SRV\"");
  CHECK(error_of(head + "dns = \"bad name!\"\nport = 1\n") ==
        "t.toml:6:7: cluster[0].dns: invalid DNS name \"bad name!\"");
  CHECK(error_of(head +
                 "dns = \"x.local\"\nport = 1\nmin_refresh = \"5s\"\nmax_refresh = \"1s\"\n") ==
        "t.toml:9:15: cluster[0].max_refresh: must not be less than min_refresh");
  CHECK(error_of(head + "endpoints = [\"10.0.0.1:1\"]\nport = 1\n") ==
        "t.toml:7:8: cluster[0].port: only applies with `dns`");
  CHECK(error_of(head) ==
        "t.toml:4:1: cluster[0].endpoints: missing: a cluster needs `endpoints` (IP literals) or "
        "`dns` (a name to follow)");
  CHECK(error_of(std::string(kMinimal) + "[discovery]\nresolvers = [\"dns.local\"]\n") ==
        "t.toml:9:14: discovery.resolvers[0]: invalid resolver \"dns.local\": expected "
        "\"ip[:port]\"");
}

TEST_CASE("bad durations") {
  CHECK(error_of(with_proxy("drain_timeout = \"5 sec\"\n")) ==
        "t.toml:2:17: proxy.drain_timeout: invalid duration \"5 sec\": expected a non-negative "
        "number and one unit of ns, us, ms, s, m, h (e.g. \"250ms\")");
  CHECK_ERROR(with_proxy("idle_timeout = \"-1s\"\n"),
              "t.toml:2:16: proxy.idle_timeout: invalid duration \"-1s\"");
  CHECK_ERROR(std::string(kMinimal) + "connect_timeout = \"0s\"\n",
              "t.toml:8:19: cluster[0].connect_timeout: must be between 1ms and 1m, got \"0s\"");
}

TEST_CASE("durations past a sane range are errors, not settings that fail every call") {
  // Accepted before, then every deadline (now + 2^63 ns) overflowed and every call failed.
  CHECK(error_of(std::string(kMinimal) + "connect_timeout = \"9223372036s\"\n") ==
        "t.toml:8:19: cluster[0].connect_timeout: duration \"9223372036s\" is out of range "
        "(at most 7 days)");
  CHECK(error_of(std::string(kMinimal) + "connect_timeout = \"2m\"\n") ==
        "t.toml:8:19: cluster[0].connect_timeout: must be between 1ms and 1m, got \"2m\"");
  CHECK(error_of(with_proxy("idle_timeout = \"169h\"\n")) ==
        "t.toml:2:16: proxy.idle_timeout: duration \"169h\" is out of range (at most 7 days)");
  CHECK(error_of(with_proxy("drain_timeout = \"2h\"\n")) ==
        "t.toml:2:17: proxy.drain_timeout: must be between 0s and 1h, got \"2h\"");
  CHECK(ringlb::core::config::parse_config(with_proxy("idle_timeout = \"168h\"\n"), "t.toml")
            .proxy.idle_timeout == std::chrono::hours(168));
}

TEST_CASE("retry_buffer and memory_limit") {
  auto c = ringlb::core::config::parse_config(
      with_proxy("retry_buffer = \"64KiB\"\nmemory_limit = \"1GiB\"\n"), "t.toml");
  CHECK(c.proxy.retry_buffer == 64 * 1024);
  CHECK(c.proxy.memory_limit == 1024ull * 1024 * 1024);
  CHECK(error_of(with_proxy("memory_limit = \"1MiB\"\n")) ==
        "t.toml:2:16: proxy.memory_limit: must be between 4MiB and 1024GiB, got 1MiB");
}

TEST_CASE("a bare integer duration asks for a unit") {
  CHECK(error_of(with_proxy("drain_timeout = 5\n")) ==
        "t.toml:2:17: proxy.drain_timeout: durations need a unit, e.g. \"5s\"");
  CHECK_ERROR(
      "[[listener]]\naddress = \"1.2.3.4:5\"\n"
      "routes = [{ prefix = \"/\", cluster = \"a\", timeout = 2 }]\n"
      "[[cluster]]\nname = \"a\"\nendpoints = [\"10.0.0.1:1\"]\n",
      "t.toml:3:52: listener[0].routes[0].timeout: durations need a unit, e.g. \"5s\"");
}

TEST_CASE("bad sizes") {
  CHECK(error_of(with_proxy("stream_buffer = \"1MB\"\n")) ==
        "t.toml:2:17: proxy.stream_buffer: invalid size \"1MB\": expected a whole number of bytes "
        "with an optional unit B, KiB, MiB, GiB (or k, M, G), e.g. \"256KiB\"");
  CHECK(error_of(with_proxy("stream_buffer = \"8KiB\"\n")) ==
        "t.toml:2:17: proxy.stream_buffer: must be between 16KiB and 64MiB, got 8KiB");
  CHECK_ERROR(with_proxy("max_header_list_size = 100\n"),
              "t.toml:2:24: proxy.max_header_list_size: must be between 1KiB and 16MiB, got 100 "
              "bytes");
  CHECK_ERROR(with_proxy("connection_window = -1\n"),
              "t.toml:2:21: proxy.connection_window: must not be negative, got -1");
  CHECK_ERROR(with_proxy("stream_buffer = \"4MiB\"\nconnection_window = \"1MiB\"\n"),
              "t.toml:3:21: proxy.connection_window: must be at least proxy.stream_buffer (4MiB), "
              "got 1MiB");
  CHECK_ERROR(with_proxy("stream_buffer = \"16MiB\"\n"),
              "t.toml:2:17: proxy.stream_buffer: must not exceed proxy.connection_window (8MiB), "
              "got 16MiB");
}

TEST_CASE("out-of-range numbers") {
  CHECK(error_of(with_proxy("workers = 0\n")) ==
        "t.toml:2:11: proxy.workers: must be between 1 and 256, got 0");
  CHECK_ERROR(with_proxy("workers = 257\n"),
              "t.toml:2:11: proxy.workers: must be between 1 and 256");
  CHECK_ERROR(with_proxy("workers = \"all\"\n"),
              "t.toml:2:11: proxy.workers: expected \"auto\" or an integer 1..256, got \"all\"");
  CHECK_ERROR(with_proxy("max_concurrent_streams = 2147483648\n"),
              "t.toml:2:26: proxy.max_concurrent_streams: must be between 1 and 2147483647");
  CHECK_ERROR(std::string(kMinimal) +
                  "[[cluster]]\nname = \"b\"\n"
                  "endpoints = [{ address = \"10.0.0.2:1\", weight = 0 }]\n",
              "t.toml:10:49: cluster[1].endpoints[0].weight: must be between 1 and 10000, got 0");
}

TEST_CASE("missing required sections and keys") {
  CHECK(error_of("[[cluster]]\nname = \"a\"\nendpoints = [\"10.0.0.1:1\"]\n") ==
        "t.toml:1:1: listener: at least one [[listener]] is required");
  CHECK(error_of("[[listener]]\naddress = \"1.2.3.4:5\"\ncluster = \"a\"\n") ==
        "t.toml:1:1: cluster: at least one [[cluster]] is required");
  CHECK_ERROR("listener = []\n[[cluster]]\nname = \"a\"\nendpoints = [\"10.0.0.1:1\"]\n",
              "t.toml:1:12: listener: at least one [[listener]] is required");
  // The table's own position when a required key is missing.
  CHECK(error_of(std::string(kMinimal) + "\n[[cluster]]\nendpoints = [\"10.0.0.2:1\"]\n") ==
        "t.toml:9:1: cluster[1].name: missing required key");
  CHECK(error_of("[[listener]]\ncluster = \"a\"\n[[cluster]]\nname = \"a\"\n"
                 "endpoints = [\"10.0.0.1:1\"]\n") ==
        "t.toml:1:1: listener[0].address: missing required key");
  CHECK_ERROR(std::string(kMinimal) + "[[cluster]]\nname = \"b\"\n",
              "t.toml:8:1: cluster[1].endpoints: missing: a cluster needs `endpoints`");
  CHECK_ERROR(std::string(kMinimal) + "[[cluster]]\nname = \"b\"\nendpoints = []\n",
              "t.toml:10:13: cluster[1].endpoints: needs at least one endpoint");
  CHECK_ERROR(std::string(kMinimal) + "[[cluster]]\nname = \"b\"\nendpoints = [{ weight = 2 }]\n",
              "t.toml:10:14: cluster[1].endpoints[0].address: missing required key");
  CHECK_ERROR(
      "[[listener]]\naddress = \"1.2.3.4:5\"\n[[cluster]]\nname = \"a\"\n"
      "endpoints = [\"10.0.0.1:1\"]\n",
      "t.toml:1:1: listener[0]: needs a default `cluster` or at least one route");
}

TEST_CASE("references to unknown clusters") {
  CHECK(error_of("[[listener]]\naddress = \"1.2.3.4:5\"\ncluster = \"ordres\"\n"
                 "[[cluster]]\nname = \"orders\"\nendpoints = [\"10.0.0.1:1\"]\n") ==
        "t.toml:3:11: listener[0].cluster: unknown cluster \"ordres\", did you mean `orders`?");
  CHECK(error_of("[[listener]]\naddress = \"1.2.3.4:5\"\n"
                 "routes = [{ prefix = \"/a\", cluster = \"a\" }, { prefix = \"/b\", cluster = "
                 "\"zzz\" }]\n"
                 "[[cluster]]\nname = \"a\"\nendpoints = [\"10.0.0.1:1\"]\n") ==
        "t.toml:3:72: listener[0].routes[1].cluster: unknown cluster \"zzz\"");
}

TEST_CASE("duplicates") {
  CHECK(error_of(std::string(kMinimal) +
                 "[[cluster]]\nname = \"a\"\nendpoints = [\"10.0.0.2:1\"]\n") ==
        "t.toml:9:8: cluster[1].name: duplicate cluster name \"a\" (also cluster[0])");
  CHECK_ERROR(
      std::string(kMinimal) + "[[listener]]\naddress = \"127.0.0.1:8080\"\ncluster = \"a\"\n",
      "t.toml:9:11: listener[1].address: duplicate address \"127.0.0.1:8080\" (also "
      "listener[0])");
  // Port 0 means a fresh ephemeral port per bind, so it never collides.
  Config c = parse_config(
      "[[listener]]\naddress = \"127.0.0.1:0\"\ncluster = \"a\"\n"
      "[[listener]]\naddress = \"127.0.0.1:0\"\ncluster = \"a\"\n"
      "[[cluster]]\nname = \"a\"\nendpoints = [\"10.0.0.1:1\"]\n",
      "t.toml");
  CHECK(c.listeners.size() == 2);
}

TEST_CASE("bad cluster names and route prefixes") {
  CHECK(error_of("[[listener]]\naddress = \"1.2.3.4:5\"\n"
                 "routes = [{ prefix = \"payments.\", cluster = \"a\" }]\n"
                 "[[cluster]]\nname = \"a\"\nendpoints = [\"10.0.0.1:1\"]\n") ==
        "t.toml:3:22: listener[0].routes[0].prefix: must start with '/', got \"payments.\"");
  CHECK_ERROR(
      std::string(kMinimal) + "[[cluster]]\nname = \"my cluster\"\nendpoints = [\"10.0.0.2:1\"]\n",
      "t.toml:9:8: cluster[1].name: invalid name \"my cluster\"");
}

TEST_CASE("parse_duration") {
  CHECK(parse_duration("250ms") == Duration(250ms));
  CHECK(parse_duration("1.5s") == Duration(1500ms));
  CHECK(parse_duration("1.1s") == Duration(1'100'000'000));
  CHECK(parse_duration("2m") == Duration(120s));
  CHECK(parse_duration("1h") == Duration(3600s));
  CHECK(parse_duration("0s") == Duration::zero());
  CHECK(parse_duration("100us") == Duration(100us));
  CHECK(parse_duration("7ns") == Duration(7));
  CHECK(parse_duration("0.5m") == Duration(30s));
  CHECK_FALSE(parse_duration(""));
  CHECK_FALSE(parse_duration("5"));
  CHECK_FALSE(parse_duration("s"));
  CHECK_FALSE(parse_duration("-1s"));
  CHECK_FALSE(parse_duration(".5s"));
  CHECK_FALSE(parse_duration("5.s"));
  CHECK_FALSE(parse_duration("5 s"));
  CHECK_FALSE(parse_duration("5sec"));
  CHECK_FALSE(parse_duration("1h30m"));
  CHECK_FALSE(parse_duration("99999999999999999999s"));
  CHECK_FALSE(parse_duration("3000000h"));  // past int64 nanoseconds (~292 years)
}

TEST_CASE("parse_socket_address") {
  auto v4 = parse_socket_address("10.1.2.3:50051");
  REQUIRE(v4);
  CHECK(v4->storage.ss_family == AF_INET);
  CHECK(v4->len == sizeof(sockaddr_in));
  CHECK(v4->text == "10.1.2.3:50051");
  const auto& sin = reinterpret_cast<const sockaddr_in&>(v4->storage);
  CHECK(ntohs(sin.sin_port) == 50051);
  CHECK(ntohl(sin.sin_addr.s_addr) == 0x0a010203u);

  auto v6 = parse_socket_address("[2001:db8::1]:443");
  REQUIRE(v6);
  CHECK(v6->storage.ss_family == AF_INET6);
  CHECK(v6->len == sizeof(sockaddr_in6));
  const auto& sin6 = reinterpret_cast<const sockaddr_in6&>(v6->storage);
  CHECK(ntohs(sin6.sin6_port) == 443);
  in6_addr expected{};
  REQUIRE(inet_pton(AF_INET6, "2001:db8::1", &expected) == 1);
  CHECK(std::memcmp(&sin6.sin6_addr, &expected, sizeof expected) == 0);

  CHECK(parse_socket_address("[::]:0"));
  CHECK(parse_socket_address("0.0.0.0:0"));
  CHECK(parse_socket_address("1.2.3.4:65535"));
  CHECK(parse_socket_address("[::ffff:1.2.3.4]:1"));
  CHECK_FALSE(parse_socket_address("1.2.3.4:65536"));
  CHECK_FALSE(parse_socket_address("1.2.3.4:"));
  CHECK_FALSE(parse_socket_address("1.2.3.4"));
  CHECK_FALSE(parse_socket_address("1.2.3.4:-1"));
  CHECK_FALSE(parse_socket_address("1.2.3.4:+80"));
  CHECK_FALSE(parse_socket_address("1.2.3:80"));
  CHECK_FALSE(parse_socket_address(":80"));
  CHECK_FALSE(parse_socket_address("localhost:80"));
  CHECK_FALSE(parse_socket_address("::1:80"));
  CHECK_FALSE(parse_socket_address("[::1]"));
  CHECK_FALSE(parse_socket_address("[::1]80"));
  CHECK_FALSE(parse_socket_address("[1.2.3.4]:80"));
  CHECK_FALSE(parse_socket_address("[]:80"));
  CHECK_FALSE(parse_socket_address(std::string_view("1.2.3.4\0x:80", 12)));
}

TEST_CASE("parse_size") {
  CHECK(parse_size("0") == 0u);
  CHECK(parse_size("65536") == 65536u);
  CHECK(parse_size("512B") == 512u);
  CHECK(parse_size("256KiB") == 256u * 1024);
  CHECK(parse_size("64k") == 64u * 1024);
  CHECK(parse_size("64K") == 64u * 1024);
  CHECK(parse_size("8MiB") == 8u * 1024 * 1024);
  CHECK(parse_size("16M") == 16u * 1024 * 1024);
  CHECK(parse_size("1GiB") == 1024u * 1024 * 1024);
  CHECK(parse_size("2G") == 2ull * 1024 * 1024 * 1024);
  CHECK_FALSE(parse_size(""));
  CHECK_FALSE(parse_size("KiB"));
  CHECK_FALSE(parse_size("1MB"));
  CHECK_FALSE(parse_size("1.5MiB"));
  CHECK_FALSE(parse_size("-1"));
  CHECK_FALSE(parse_size("1 MiB"));
  CHECK_FALSE(parse_size("99999999999999999999"));
  CHECK_FALSE(parse_size("17179869184G"));  // overflows uint64
}

TEST_CASE("load_config reads a file and names it in errors") {
  CHECK_THROWS_WITH_AS(load_config("/nonexistent/ringlb.toml"),
                       "/nonexistent/ringlb.toml: cannot read: No such file or directory",
                       ConfigError);
  CHECK_THROWS_WITH_AS(load_config("/"), "/: cannot read: Is a directory", ConfigError);

  char path[] = "/tmp/ringlb_config_testXXXXXX";
  int fd = mkstemp(path);
  REQUIRE(fd >= 0);
  std::string text = std::string(kMinimal) + "lb = \"p2c\"\n";
  REQUIRE(write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()));
  close(fd);
  Config c = load_config(path);
  CHECK(c.source == path);
  CHECK(c.clusters.at(0).lb == LbPolicy::kP2c);

  fd = open(path, O_WRONLY | O_TRUNC);
  REQUIRE(fd >= 0);
  text = std::string(kMinimal) + "lb = \"p3c\"\n";
  REQUIRE(write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()));
  close(fd);
  CHECK_THROWS_WITH_AS(
      load_config(path),
      (std::string(path) + ":8:6: cluster[0].lb: invalid value \"p3c\", expected one of "
                           "\"round_robin\", \"p2c\"")
          .c_str(),
      ConfigError);
  unlink(path);
}

TEST_CASE("load_config_env parses a variable's text and names env:NAME in errors") {
  using ringlb::core::config::load_config_env;
  ::unsetenv("RINGLB_TEST_CONFIG_UNSET");
  CHECK_THROWS_WITH_AS(load_config_env("RINGLB_TEST_CONFIG_UNSET"),
                       "env:RINGLB_TEST_CONFIG_UNSET: environment variable "
                       "RINGLB_TEST_CONFIG_UNSET is not set (--config-env names the variable "
                       "that holds the TOML text)",
                       ConfigError);
  ::setenv("RINGLB_TEST_CONFIG", "", 1);
  CHECK_THROWS_WITH_AS(load_config_env("RINGLB_TEST_CONFIG"),
                       "env:RINGLB_TEST_CONFIG: environment variable RINGLB_TEST_CONFIG is empty",
                       ConfigError);
  ::setenv("RINGLB_TEST_CONFIG", " \n\t\n", 1);
  CHECK_THROWS_WITH_AS(load_config_env("RINGLB_TEST_CONFIG"),
                       "env:RINGLB_TEST_CONFIG: environment variable RINGLB_TEST_CONFIG is empty",
                       ConfigError);

  std::string text = std::string(kMinimal) + "lb = \"p2c\"\n";
  ::setenv("RINGLB_TEST_CONFIG", text.c_str(), 1);
  Config c = load_config_env("RINGLB_TEST_CONFIG");
  CHECK(c.source == "env:RINGLB_TEST_CONFIG");
  CHECK(c.env_var == "RINGLB_TEST_CONFIG");
  CHECK(c.clusters.at(0).lb == LbPolicy::kP2c);
  CHECK(load_config_env("RINGLB_TEST_CONFIG").clusters.size() == 1);  // the same text again

  text = std::string(kMinimal) + "lb = \"p3c\"\n";
  ::setenv("RINGLB_TEST_CONFIG", text.c_str(), 1);
  CHECK_THROWS_WITH_AS(load_config_env("RINGLB_TEST_CONFIG"),
                       "env:RINGLB_TEST_CONFIG:8:6: cluster[0].lb: invalid value \"p3c\", "
                       "expected one of \"round_robin\", \"p2c\"",
                       ConfigError);
  ::setenv("RINGLB_TEST_CONFIG", "[proxy\n", 1);
  std::string syntax;
  try {
    (void)load_config_env("RINGLB_TEST_CONFIG");
  } catch (const ConfigError& e) {
    syntax = e.what();
  }
  CHECK_MESSAGE(syntax.starts_with("env:RINGLB_TEST_CONFIG:1:"), syntax);
  CHECK_MESSAGE(syntax.find("syntax error") != std::string::npos, syntax);
  ::unsetenv("RINGLB_TEST_CONFIG");
}

TEST_CASE("resilience defaults: keepalive, outlier and the unavailable retry are on") {
  Config c = parse_config(kMinimal, "t.toml");
  const ClusterConfig& cl = c.clusters[0];
  CHECK(cl.connect_timeout == 250ms);
  CHECK(cl.keepalive.enabled);
  CHECK(cl.keepalive.interval == 250ms);
  CHECK(cl.keepalive.timeout == 500ms);
  CHECK(cl.outlier.enabled);
  CHECK_FALSE(cl.health_check.enabled);
  CHECK_FALSE(cl.hedge.enabled);
  CHECK(cl.retry.attempts == 3);
  CHECK(cl.retry.retries(14));
  CHECK_FALSE(cl.retry.retries(4));
  CHECK(cl.retry.per_try_timeout == 0ms);
  CHECK(cl.slow_start == 0ms);
}

TEST_CASE("resilience keys parse, and routes lay their retry keys over the cluster's") {
  Config c = parse_config(R"([[listener]]
address = "127.0.0.1:0"
cluster = "c"
routes = [ { prefix = "/a.", cluster = "c", retry = { per_try_timeout = "40%" }, hedge = { after = "150ms" } } ]

[[cluster]]
name = "c"
endpoints = ["127.0.0.1:1"]
keepalive = { interval = "1s", timeout = "2s", idle = "1m" }
health_check = { interval = "1s", timeout = "300ms", unhealthy = 3, healthy = 1, service = "x" }
outlier = { consecutive_failures = 5, base_ejection = "1s", max_ejection = "10s", max_ejected_percent = 34, panic_threshold = 0 }
retry = { on = ["unavailable", "RESOURCE_EXHAUSTED"], attempts = 4, per_try_timeout = "300ms", backoff = "10ms", max_backoff = "100ms", budget_percent = 50 }
hedge = false
slow_start = "10s"
)",
                          "t.toml");
  const ClusterConfig& cl = c.clusters[0];
  CHECK(cl.keepalive.interval == 1s);
  CHECK(cl.keepalive.idle == 60s);
  CHECK(cl.health_check.enabled);
  CHECK(cl.health_check.unhealthy == 3);
  CHECK(cl.health_check.service == "x");
  CHECK(cl.outlier.consecutive_failures == 5);
  CHECK(cl.outlier.consecutive_unavailable == 3);
  CHECK(cl.outlier.max_ejected_percent == 34);
  CHECK(cl.retry.retries(8));
  CHECK(cl.retry.retries(14));
  CHECK(cl.retry.attempts == 4);
  CHECK(cl.retry.per_try_timeout == 300ms);
  CHECK(cl.slow_start == 10s);
  const RouteConfig& r = c.listeners[0].routes[0];
  CHECK(r.retry.attempts == 4);  // from the cluster
  CHECK(r.retry.per_try_timeout == 0ms);
  CHECK(r.retry.per_try_share_permille == 400);
  CHECK(r.hedge.enabled);
  CHECK(r.hedge.after == 150ms);
}

TEST_CASE("resilience keys: errors name file, line, column and key") {
  CHECK_ERROR(std::string(kMinimal) + "retry = { on = [\"unavailabel\"] }\n",
              "t.toml:8:17: cluster[0].retry.on[0]: unknown gRPC status \"unavailabel\", did you "
              "mean `unavailable`? (names as in grpc: \"unavailable\", ...)");
  CHECK_ERROR(std::string(kMinimal) + "retry = { per_try_timeout = \"140%\" }\n",
              "t.toml:8:29: cluster[0].retry.per_try_timeout: invalid share \"140%\": expected 1% "
              "to 100%");
  CHECK_ERROR(std::string(kMinimal) + "keepalive = { interval = \"0s\" }\n",
              "t.toml:8:26: cluster[0].keepalive.interval: must be between 1ms and 1h, got \"0s\"");
  CHECK_ERROR(
      std::string(kMinimal) + "outlier = { base_ejection = \"10s\", max_ejection = \"1s\" }\n",
      "t.toml:8:51: cluster[0].outlier.max_ejection: must not be less than base_ejection");
  CHECK_ERROR(std::string(kMinimal) + "hedge = { methods = [\"Get\"] }\n",
              "t.toml:8:22: cluster[0].hedge.methods[0]: a method is a :path like "
              "\"/pkg.Svc/Get\", got \"Get\"");
}

TEST_CASE("operations tables: [admin], [log], [metrics]") {
  Config d = parse_config(kMinimal, "t.toml");
  CHECK(d.admin.enabled);
  CHECK(d.admin.address.text == "127.0.0.1:9901");
  CHECK(d.admin.max_connections == 16);
  CHECK(d.log.access == AccessLogTarget::kStdout);
  CHECK(d.log.access_sample == 1.0);
  CHECK_FALSE(d.log.level_set);
  CHECK(d.metrics.max_methods == 200);

  std::string text = std::string(
                         "[admin]\naddress = \"127.0.0.1:0\"\nmax_connections = 4\n"
                         "request_timeout = \"2s\"\n"
                         "[log]\nlevel = \"warn\"\naccess = \"/tmp/access.log\"\n"
                         "access_sample = 0.25\naccess_buffer = 64\n"
                         "[metrics]\nmax_methods = 3\n") +
                     std::string(kMinimal);
  Config c = parse_config(text, "t.toml");
  CHECK(c.admin.address.text == "127.0.0.1:0");
  CHECK(c.admin.max_connections == 4);
  CHECK(c.admin.request_timeout == 2s);
  CHECK(c.log.level == LogConfig::Level::kWarn);
  CHECK(c.log.level_set);
  CHECK(c.log.access == AccessLogTarget::kFile);
  CHECK(c.log.access_path == "/tmp/access.log");
  CHECK(c.log.access_sample == 0.25);
  CHECK(c.log.access_buffer == 64);
  CHECK(c.metrics.max_methods == 3);

  Config off = parse_config(
      std::string("[admin]\naddress = \"off\"\n[log]\naccess = \"off\"\n") + std::string(kMinimal),
      "t.toml");
  CHECK_FALSE(off.admin.enabled);
  CHECK(off.log.access == AccessLogTarget::kOff);

  CHECK_ERROR(std::string("[log]\naccess_sample = 1.5\n") + std::string(kMinimal),
              "t.toml:2:17: log.access_sample: must be between 0 and 1, got 1.500000");
  CHECK_ERROR(std::string("[admin]\naddres = \"x\"\n") + std::string(kMinimal),
              "t.toml:2:1: admin.addres: unknown key, did you mean `address`?");
  CHECK_ERROR(std::string("[log]\nlevel = \"verbose\"\n") + std::string(kMinimal),
              "t.toml:2:9: log.level: invalid value \"verbose\", expected one of \"debug\", "
              "\"info\", \"warn\", \"error\"");
}

TEST_CASE("tls tables: files read relative to the config, errors at the key naming the file") {
  char dir[] = "/tmp/ringlb-tls-config-XXXXXX";
  REQUIRE(mkdtemp(dir) != nullptr);
  const std::string d = dir;
  auto write = [&](const std::string& name, const std::string& text) {
    FILE* f = fopen((d + "/" + name).c_str(), "w");
    REQUIRE(f != nullptr);
    fputs(text.c_str(), f);
    fclose(f);
  };
  write("a.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
  write("plain.txt", "not pem at all\n");
  auto cfg = [&](const std::string& listener_tls, const std::string& cluster_tls) {
    write("r.toml", "[[cluster]]\nname = \"a\"\nendpoints = [\"10.0.0.1:1\"]\n" + cluster_tls +
                        "\n[[listener]]\naddress = \"127.0.0.1:8080\"\ncluster = \"a\"\n" +
                        listener_tls + "\n");
    return d + "/r.toml";
  };
  auto error_loading = [&](const std::string& path) -> std::string {
    try {
      (void)load_config(path);
    } catch (const ConfigError& e) {
      return e.what();
    }
    return "(no error)";
  };

  Config c = load_config(cfg("tls = { cert = \"a.pem\", key = \"a.pem\" }",
                             "tls = { ca = \"a.pem\", sni = \"x.internal\" }"));
  REQUIRE(c.listeners[0].tls.enabled);
  CHECK(c.listeners[0].tls.cert.path == d + "/a.pem");
  CHECK(c.listeners[0].tls.cert.pem.starts_with("-----BEGIN CERTIFICATE-----"));
  CHECK(c.listeners[0].tls.cert.where == d + "/r.toml:8:16: listener[0].tls.cert");
  CHECK(c.listeners[0].tls.require_client_cert);
  CHECK_FALSE(c.listeners[0].tls.tls13_only);
  CHECK(c.clusters[0].tls.enabled);
  CHECK(c.clusters[0].tls.sni == "x.internal");
  CHECK(c.clusters[0].tls.verify);

  std::string e = error_loading(cfg("tls = { cert = \"missing.pem\", key = \"a.pem\" }", ""));
  CHECK_MESSAGE(e.find("r.toml:8:16: ") != std::string::npos, e);
  CHECK_MESSAGE(
      e.find("listener[0].tls.cert: cannot read \"" + d + "/missing.pem\"") != std::string::npos,
      e);
  e = error_loading(cfg("tls = { cert = \"a.pem\", key = \"plain.txt\" }", ""));
  CHECK_MESSAGE(
      e.find("listener[0].tls.key: \"" + d + "/plain.txt\" is not PEM") != std::string::npos, e);
  e = error_loading(cfg("tls = { cert = \"a.pem\" }", ""));
  CHECK_MESSAGE(e.find("listener[0].tls.key: missing required key") != std::string::npos, e);
  e = error_loading(
      cfg("tls = { cert = \"a.pem\", key = \"a.pem\", client_cert = \"optional\" }", ""));
  CHECK_MESSAGE(e.find("listener[0].tls.client_cert: needs `client_ca`") != std::string::npos, e);
  e = error_loading(cfg("tls = { cert = \"a.pem\", key = \"a.pem\", min_version = \"1.1\" }", ""));
  CHECK_MESSAGE(
      e.find("listener[0].tls.min_version: expected \"1.2\" or \"1.3\"") != std::string::npos, e);
  e = error_loading(cfg("", "tls = { ca = \"a.pem\", cert = \"a.pem\" }"));
  CHECK_MESSAGE(e.find("cluster[0].tls: a client certificate needs both `cert` and `key`") !=
                    std::string::npos,
                e);
  e = error_loading(cfg("", "tls = { ca = \"a.pem\", verfy = false }"));
  CHECK_MESSAGE(
      e.find("cluster[0].tls.verfy: unknown key, did you mean `verify`?") != std::string::npos, e);
  for (const char* f : {"a.pem", "plain.txt", "r.toml"}) std::remove((d + "/" + f).c_str());
  rmdir(dir);
}
