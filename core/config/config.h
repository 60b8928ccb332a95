#pragma once
// Config: the one TOML file, parsed and validated at start-up (control thread). Immutable once
// loaded; shards get a const reference that outlives them.
#include <netinet/in.h>
#include <sys/socket.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "core/io/net.h"
#include "core/io/reactor.h"

namespace ringlb::core::config {

using Duration = std::chrono::nanoseconds;

enum class LbPolicy { kRoundRobin, kP2c };

struct ProxyConfig {
  unsigned workers = 0;  // 0 = "auto": CPUs this process may use (affinity, cgroup quota)
  io::IoBackend io_backend = io::IoBackend::kAuto;
  Duration drain_timeout = std::chrono::seconds(20);
  // Per shard: downstream connections beyond this are accepted and closed at once.
  uint32_t max_connections = 10000;
  // Advertised to clients as SETTINGS_MAX_CONCURRENT_STREAMS.
  uint32_t max_concurrent_streams = 1024;
  // Bytes buffered per stream per direction; also the HTTP/2 stream window ringlb advertises,
  // so a peer can never make ringlb hold more than this for one stream.
  uint32_t stream_buffer = 256 * 1024;
  // HTTP/2 connection-level receive window advertised on each connection.
  uint32_t connection_window = 8 * 1024 * 1024;
  // Advertised as SETTINGS_MAX_HEADER_LIST_SIZE and enforced on receive.
  uint32_t max_header_list_size = 64 * 1024;
  // Idle downstream connections (no open stream) get the two-phase GOAWAY after this; 0 = never.
  Duration idle_timeout = std::chrono::minutes(3);
  // Stage timeouts of a downstream connection (each 0 = none; each counted by stage):
  // accepted, and no HTTP/2 preface and SETTINGS yet (the TLS handshake too, when TLS lands);
  Duration handshake_timeout = std::chrono::seconds(5);
  // a request header block begun and not complete (HEADERS waiting for its CONTINUATION);
  Duration header_timeout = std::chrono::seconds(10);
  // a request body with no byte received while the client may send (its window is open);
  Duration body_timeout = std::chrono::seconds(30);
  // response bytes waiting on a client that does not read (its window closed, or the socket
  // not draining): the stream is reset, or the connection closed when the socket is stuck.
  Duration send_timeout = std::chrono::seconds(30);
  // Request body bytes kept per call so a call that never reached a backend can be replayed;
  // past it the call is "truncated" and is never replayed.
  uint32_t retry_buffer = 256 * 1024;
  // Bytes all shards together may hold in buffers (split evenly between shards). Past it new
  // calls get RESOURCE_EXHAUSTED and peers get no connection-level window back until the
  // buffers drain. Sized for a 512 MB task.
  uint64_t memory_limit = 256ull * 1024 * 1024;
};

/// Retries by policy (per cluster, overridable per route key by key). Transparent replay of
/// calls that never reached a backend is separate: it is always on and never counted here.
struct RetryPolicy {
  // gRPC status codes (bit 1 << code) that are retried when the response carried no message yet:
  // trailers-only, or headers held until the trailers came without DATA. Default: UNAVAILABLE.
  uint32_t on = 1u << 14;
  uint32_t attempts = 3;                // in all, the first included; 1 = no retries
  Duration per_try_timeout{0};          // 0 = none (unless per_try_share is set)
  uint16_t per_try_share_permille = 0;  // "40%": a share of the deadline left at each try
  Duration backoff = std::chrono::milliseconds(25);       // base of the jittered exponential
  Duration max_backoff = std::chrono::milliseconds(250);  // ... and its ceiling
  // The retry budget: retries in flight may be at most this share of the calls in flight,
  // plus a floor of retries per second so a quiet cluster can still retry.
  uint32_t budget_percent = 20;
  uint32_t budget_min_per_second = 10;

  bool retries(int grpc_status) const {
    return grpc_status >= 0 && grpc_status < 32 && (on >> grpc_status & 1u) != 0;
  }

  bool operator==(const RetryPolicy&) const = default;  // reload: what changed
};

/// Hedging (opt-in): after `after` with no response, a second attempt goes to another endpoint;
/// the first response accepted wins and the other is reset. Only for idempotent methods.
struct HedgePolicy {
  bool enabled = false;
  Duration after{0};                 // 0 with enabled: the per-try timeout ("auto")
  std::vector<std::string> methods;  // exact :path values; empty = every call on the route

  bool operator==(const HedgePolicy&) const = default;  // reload: what changed
};

struct RouteConfig {
  std::string prefix;   // matched against :path
  std::string cluster;  // name of a [[cluster]]
  Duration timeout{0};  // 0 = none; otherwise caps the call's deadline
  // The cluster's policies with this route's keys laid over them (filled in at load).
  RetryPolicy retry;
  HedgePolicy hedge;

  bool operator==(const RouteConfig&) const = default;  // reload: what changed
};

/// A PEM file named in a `tls` table, read when the config is loaded (and so again on each
/// reload): a changed certificate is a changed config.
struct PemFile {
  std::string path;  // as resolved (relative to the config file's folder)
  std::string pem;
  std::string where;  // "FILE:LINE:COLUMN: listener[0].tls.cert", for errors found later
  bool operator==(const PemFile&) const = default;
};

/// `tls` on a listener: terminate TLS (ALPN h2) for its clients.
struct ListenerTlsConfig {
  bool enabled = false;
  std::string where;  // "FILE:LINE:COLUMN: listener[0].tls", for errors found past loading
  PemFile cert, key;
  std::vector<std::pair<PemFile, PemFile>> sni_certs;  // more cert/key pairs, chosen by SNI
  PemFile client_ca;                                   // empty path: no client certificates
  bool require_client_cert = true;
  bool tls13_only = false;  // min_version = "1.3"
  bool operator==(const ListenerTlsConfig&) const = default;
};

/// `tls` on a cluster: TLS (ALPN h2) to its backends.
struct ClusterTlsConfig {
  bool enabled = false;
  std::string where;
  std::string sni;    // sent, and the name verified; default: the dns name, else the endpoint IP
  PemFile ca;         // default: the system store
  PemFile cert, key;  // a client certificate (mutual TLS), or empty
  bool verify = true;
  bool operator==(const ClusterTlsConfig&) const = default;
};

struct ListenerConfig {
  io::SocketAddress address;
  std::string cluster;  // default cluster when no route matches; empty = none (UNIMPLEMENTED)
  std::vector<RouteConfig> routes;
  ListenerTlsConfig tls;
};

struct EndpointConfig {
  io::SocketAddress address;
  uint32_t weight = 1;  // 1..10000
};

enum class DnsRecord { kA, kAAAA, kSRV };

/// Endpoints from a DNS name (AWS Cloud Map), followed without a config change.
struct DnsConfig {
  std::string name;   // empty: the cluster uses static `endpoints`
  uint16_t port = 0;  // A/AAAA; SRV records carry their own
  DnsRecord record = DnsRecord::kA;
  Duration min_refresh = std::chrono::seconds(1);  // re-query at the TTL, within these bounds
  Duration max_refresh = std::chrono::seconds(30);
  // NXDOMAIN or empty answers keep the last good set this long; then the cluster empties.
  Duration stale_after = std::chrono::minutes(5);
  // An endpoint leaves after being absent from every answer this long (Route 53 answers at
  // most 8 records). Negative: derived, 3 x the refresh interval. 0: Envoy's STRICT_DNS.
  Duration hold{-1};

  bool operator==(const DnsConfig&) const = default;  // reload: what changed
};

/// HTTP/2 PING on upstream connections: how a hung or cut-off backend is noticed.
struct KeepaliveConfig {
  bool enabled = true;
  // A connection with calls waiting that has received nothing for this long is pinged.
  Duration interval = std::chrono::milliseconds(250);
  // No ACK (nor any other frame) within this long: the connection is dead.
  Duration timeout = std::chrono::milliseconds(500);
  // A connection idle (no calls) this long is pinged when it is reused.
  Duration idle = std::chrono::seconds(30);

  bool operator==(const KeepaliveConfig&) const = default;  // reload: what changed
};

/// Active gRPC health checks (grpc.health.v1.Health/Check), run by the control thread.
struct HealthCheckConfig {
  bool enabled = false;
  Duration interval = std::chrono::seconds(2);
  Duration timeout = std::chrono::milliseconds(500);
  uint32_t unhealthy = 2;  // consecutive failures before the endpoint is taken out
  uint32_t healthy = 2;    // consecutive successes before it comes back
  std::string service;     // HealthCheckRequest.service; "" = the whole server

  bool operator==(const HealthCheckConfig&) const = default;  // reload: what changed
};

/// Passive outlier ejection from what shards see (eligibility, never membership).
struct OutlierConfig {
  bool enabled = true;
  // Consecutive local-origin failures (connect, reset, PING timeout, per-try timeout).
  uint32_t consecutive_failures = 3;
  uint32_t consecutive_unavailable = 3;              // consecutive UNAVAILABLE answers
  Duration base_ejection = std::chrono::seconds(5);  // doubles with each ejection in a row
  Duration max_ejection = std::chrono::seconds(60);
  uint32_t max_ejected_percent = 50;  // never eject more than this share of the cluster
  // Below this share of eligible endpoints, pick among all (the panic mode); 0 = only when none.
  uint32_t panic_threshold = 25;

  bool operator==(const OutlierConfig&) const = default;  // reload: what changed
};

struct ClusterConfig {
  std::string name;
  LbPolicy lb = LbPolicy::kRoundRobin;
  std::vector<EndpointConfig> endpoints;
  DnsConfig dns;
  ClusterTlsConfig tls;
  // One VPC: a connect that takes longer has failed; the call moves to another endpoint.
  Duration connect_timeout = std::chrono::milliseconds(250);
  KeepaliveConfig keepalive;
  HealthCheckConfig health_check;
  OutlierConfig outlier;
  RetryPolicy retry;
  HedgePolicy hedge;
  Duration slow_start{0};  // 0 = off; else a new or returning endpoint's weight ramps up over it

  bool uses_dns() const { return !dns.name.empty(); }
};

/// The admin listener (control thread, HTTP/1.1): /metrics /ready /live /endpoints /config and
/// POST /reload. Bound with SO_REUSEPORT so a ringlb taking over from another (restart) can bind
/// the same address; each process answers for itself.
struct AdminConfig {
  bool enabled = true;            // address = "off" disables it
  io::SocketAddress address;      // default 127.0.0.1:9901 (filled in at load)
  uint32_t max_connections = 16;  // more are accepted and closed at once
  // A request (headers and body) must arrive whole within this, or its connection is closed (a
  // slow client cannot hold a slot); also the idle limit between keep-alive requests.
  Duration request_timeout = std::chrono::seconds(5);
};

enum class AccessLogTarget { kOff, kStdout, kFile };

struct LogConfig {
  // The process log (stderr). --log-level on the command line wins over this.
  enum class Level { kDebug, kInfo, kWarn, kError } level = Level::kInfo;
  bool level_set = false;  // `level` was in the file (a reload applies it only then)
  AccessLogTarget access = AccessLogTarget::kStdout;
  std::string access_path;  // kFile: opened for append
  // Share of successful calls (grpc-status 0; plain HTTP/2: status < 400) that are logged;
  // every other call is always logged. 1 = all.
  double access_sample = 1.0;
  // Lines each shard may have waiting for the writer; past it lines are dropped and counted
  // (ringlb_access_log_dropped_total). A shard never waits for the log.
  uint32_t access_buffer = 1024;
};

struct MetricsConfig {
  // Distinct gRPC methods (":path" values) given their own label value, over all routes; calls
  // to methods seen after the cap is reached are counted under method="other".
  uint32_t max_methods = 200;
};

struct DiscoveryConfig {
  std::vector<io::SocketAddress> resolvers;  // empty: the system's /etc/resolv.conf
  Duration query_timeout = std::chrono::seconds(2);
};

/// Abuse limits, per downstream connection unless said; each one that trips ends the connection
/// with GOAWAY(ENHANCE_YOUR_CALM) and a counted reason (DESIGN: one peer's abuse costs only it).
struct LimitsConfig {
  // Input bytes one connection may have processed per loop turn; the rest waits for the next
  // turn, after every other connection has had its share.
  uint32_t turn_bytes = 64 * 1024;
  // Streams the client resets, or that ringlb refuses, per second (token bucket).
  uint32_t reset_rate = 200;
  uint32_t reset_burst = 1000;
  // The same, per client IP address across its connections (per shard); rate 0 = off.
  uint32_t address_reset_rate = 400;
  uint32_t address_reset_burst = 2000;
  // After an abuse GOAWAY, new connections from that address are closed at once for this long;
  // 0 = never (behind a balancer that hides client addresses).
  Duration refuse_for = std::chrono::seconds(5);
  // Consecutive frames with an empty payload (DATA without END_STREAM, HEADERS, CONTINUATION).
  uint32_t max_empty_frames = 16;
  // WINDOW_UPDATE frames received <= 100 + this x DATA frames sent.
  uint32_t window_updates_per_data_frame = 10;
  // PRIORITY frames received <= 100 + this x streams opened.
  uint32_t priority_per_stream = 100;
  // PING and SETTINGS frames received per second (token bucket).
  uint32_t control_rate = 100;
  uint32_t control_burst = 500;
  // Control frames (PING/SETTINGS ACKs, RST_STREAM) queued for a client that does not read.
  uint32_t max_outbound_control_frames = 1000;
};

struct Config {
  std::string source;   // file path, "env:NAME" (--config-env), or "<embedded>"
  std::string env_var;  // --config-env: the environment variable the text came from, else ""
  ProxyConfig proxy;
  LimitsConfig limits;
  std::vector<ListenerConfig> listeners;
  std::vector<ClusterConfig> clusters;
  DiscoveryConfig discovery;
  AdminConfig admin;
  LogConfig log;
  MetricsConfig metrics;

  const ClusterConfig* find_cluster(std::string_view name) const;
};

/// Thrown by load_config/parse_config. what() is "FILE:LINE:COLUMN: KEY: problem".
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Parses TOML text. `source_name` is used in error messages.
Config parse_config(std::string_view toml_text, std::string_view source_name);
/// A whole file of at most `max_bytes`, or nullopt with errno set (EFBIG: larger).
std::optional<std::string> read_small_file(const std::string& path, size_t max_bytes);
/// Reads and parses a file. A missing or unreadable file is a ConfigError naming it.
Config load_config(const std::string& path);
/// Parses the text of environment variable `name` (--config-env: ECS task definitions set
/// environment variables, also from SSM parameters and secrets, where no file can be mounted).
/// Errors name "env:NAME:LINE:COLUMN"; an unset or empty variable is a ConfigError saying so.
Config load_config_env(const std::string& name);

/// "250ms", "1.5s", "2m", "1h", "0s", "100us": the duration units accepted in config.
std::optional<Duration> parse_duration(std::string_view text);
/// "65536", "256KiB", "8MiB", "1GiB", "64k", "16M", "512B": whole numbers, 1024-based units
/// (B, KiB, MiB, GiB, and the shorthands k/K, M, G). Decimal KB/MB are rejected as ambiguous.
std::optional<uint64_t> parse_size(std::string_view text);

}  // namespace ringlb::core::config
