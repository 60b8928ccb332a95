// Metrics: the shard's counters (calls, attempts, connections, listeners, methods) as real calls
// through the proxy core move them (ProxyRig, in memory), and the Prometheus text the control
// thread renders from shard snapshots (exact lines; `promtool check metrics` when installed).
#include "core/runtime/metrics.h"

#include <doctest/doctest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "core/proxy/stats.h"
#include "core/runtime/control.h"
#include "core/runtime/server.h"
#include "core/runtime/shard.h"
#include "core/runtime/shard_snapshot.h"
#include "discovery/answer.h"
#include "lb/eligibility.h"
#include "lb/endpoint.h"
#include "tests/unit/proxy/proxy_test.h"

using namespace ringlb;
using namespace ringlb::test;
using namespace ringlb::test::proxy_test;
using core::proxy::ClusterCounters;
using core::proxy::EndpointCounters;
using core::proxy::MethodCounters;
using core::proxy::MethodTable;

namespace {

constexpr size_t kOK = 0, kCancelled = 1, kNotFound = 5, kDeadline = 4, kUnimplemented = 12,
                 kUnavailable = 14, kNone = core::proxy::kNoStatus;

// Listener 0: default cluster "c" (127.0.0.1:1), route "/timed." (250 ms) to "c", route "/far."
// to "d" (127.0.0.1:2). Listener 1: no default cluster, route "/only." to "c".
std::string metrics_config(std::string_view extra = "") {
  std::string s = R"([proxy]
[[listener]]
address = "127.0.0.1:0"
cluster = "c"
routes = [{ prefix = "/timed.", cluster = "c", timeout = "250ms" },
          { prefix = "/far.", cluster = "d" }]
[[listener]]
address = "127.0.0.1:0"
routes = [{ prefix = "/only.", cluster = "c" }]
[[cluster]]
name = "c"
endpoints = ["127.0.0.1:1"]
retry = { attempts = 2, budget_percent = 100 }
[[cluster]]
name = "d"
endpoints = ["127.0.0.1:2"]
retry = { attempts = 1 }
)";
  s += extra;
  return s;
}

const MethodCounters* row(const MethodTable& t, std::string_view route, std::string_view method,
                          std::vector<core::proxy::MethodRow>& keep) {
  keep = t.rows();
  for (const auto& r : keep) {
    if (r.route == route && r.method == method) return &r.counters;
  }
  return nullptr;
}

int32_t one_call(ProxyRig& rig, size_t client, const Request& req) {
  int32_t id = rig.client(client).submit(req);
  REQUIRE(rig.pump());
  return id;
}

}  // namespace

TEST_CASE("metrics: grpc_code labels, latency buckets, the method table's bound") {
  CHECK(core::proxy::status_label(core::proxy::status_slot(0)) == "OK");
  CHECK(core::proxy::status_label(core::proxy::status_slot(4)) == "DEADLINE_EXCEEDED");
  CHECK(core::proxy::status_label(core::proxy::status_slot(16)) == "UNAUTHENTICATED");
  CHECK(core::proxy::status_label(core::proxy::status_slot(-1)) == "none");
  CHECK(core::proxy::status_slot(99) == 2);  // read as UNKNOWN, as gRPC clients do

  MethodTable t(2);
  t.at("default", "/a.S/M1").calls[0] += 1;
  t.at("default", "/a.S/M2").calls[0] += 1;
  t.at("default", "/a.S/M3").calls[0] += 1;  // past the bound: "other"
  t.at("default", "/a.S/M4").calls[0] += 1;
  t.at("/r.", "/a.S/M5").calls[0] += 1;  // another route's "other"
  t.at("default", "/a.S/M1").calls[0] += 1;
  CHECK(t.size() == 4);
  std::vector<core::proxy::MethodRow> keep;
  REQUIRE(row(t, "default", "/a.S/M1", keep) != nullptr);
  CHECK(row(t, "default", "/a.S/M1", keep)->calls[0] == 2);
  CHECK(row(t, "default", "/a.S/M2", keep)->calls[0] == 1);
  CHECK(row(t, "default", "other", keep)->calls[0] == 2);
  CHECK(row(t, "/r.", "other", keep)->calls[0] == 1);
  CHECK(row(t, "default", "/a.S/M3", keep) == nullptr);
  // Known pairs are found again (by string_view into any storage): nothing new is made.
  const std::string route = "default", path = "/a.S/M2";
  t.at(route, path).calls[0] += 1;
  CHECK(t.size() == 4);
  CHECK(row(t, "default", "/a.S/M2", keep)->calls[0] == 2);
}

TEST_CASE("metrics: count_call sums a record into its cluster and its route/method row") {
  ProxyRig rig(metrics_config());
  core::proxy::CallRecord r;
  r.listener = 0;
  r.route = 0;  // "/timed."
  r.cluster = 0;
  r.grpc = true;
  r.path = "/timed.Svc/Get";
  r.grpc_status = 14;
  r.start_ns = 1'000'000'000;
  r.end_ns = r.start_ns + 3'000'000;  // 3 ms: the 0.005 bucket
  r.retries_by = {2, 1, 0};
  r.hedges = 1;
  r.replays = 3;
  r.budget_refusals = 1;
  core::proxy::count_call(rig.ctx(), r);
  const ClusterCounters& c = rig.ctx().cluster(0).counters;
  CHECK(c.calls_ended[kUnavailable] == 1);
  CHECK(c.retries[0] == 2);
  CHECK(c.retries[1] == 1);
  CHECK(c.retries[2] == 0);
  CHECK(c.hedges == 1);
  CHECK(c.replays == 3);
  CHECK(c.budget_refusals == 1);
  std::vector<core::proxy::MethodRow> keep;
  const MethodCounters* m = row(rig.ctx().stats().methods, "/timed.", "/timed.Svc/Get", keep);
  REQUIRE(m != nullptr);
  CHECK(m->calls[kUnavailable] == 1);
  CHECK(m->latency[3] == 1);  // le 0.005
  CHECK(m->latency_sum_ns == 3'000'000);

  // Plain HTTP/2: one "non_grpc" method whatever the path; unrouted: route "none", "other".
  r.grpc = false;
  r.path = "/index.html";
  r.grpc_status = -1;
  core::proxy::count_call(rig.ctx(), r);
  r.grpc = true;
  r.route = -1;
  r.cluster = -1;
  r.path = "/x.Y/Z";
  r.grpc_status = 12;
  core::proxy::count_call(rig.ctx(), r);
  CHECK(row(rig.ctx().stats().methods, "/timed.", "non_grpc", keep)->calls[kNone] == 1);
  CHECK(row(rig.ctx().stats().methods, "none", "other", keep)->calls[kUnimplemented] == 1);
  // A path that is not printable ASCII takes no label value of its own.
  r.route = -1;
  r.cluster = 0;
  r.path = "/bad\x01path";
  core::proxy::count_call(rig.ctx(), r);
  CHECK(row(rig.ctx().stats().methods, "default", "other", keep) != nullptr);
}

TEST_CASE("metrics: real calls move the cluster, endpoint, listener and method counters") {
  ProxyRig rig(metrics_config());
  auto& ctx = rig.ctx();
  H2Backend::Mode& a = rig.mode(kA);
  auto status_of = [&](size_t client, int32_t id) {
    return rig.client(client).stream(id)->grpc_status;
  };

  // OK; a backend's NOT_FOUND; UNAVAILABLE then OK on the retry (route default, cluster "c").
  CHECK(status_of(0, one_call(rig, 0, grpc_request("/svc.Echo/Call", "x"))) == 0);
  a.action = Action::kTrailersOnly;
  a.grpc_status = 5;
  CHECK(status_of(0, one_call(rig, 0, grpc_request("/svc.Echo/Get", "x"))) == 5);
  int seen = 0;
  a.decide = [&](H2Backend&, H2Backend::Exchange&) {
    a.grpc_status = seen++ == 0 ? 14 : 0;
    return Action::kTrailersOnly;
  };
  int32_t id = one_call(rig, 0, grpc_request("/svc.Echo/Call", "x"));
  REQUIRE(rig.advance_ms(300));  // the retry's backoff
  CHECK(status_of(0, id) == 0);
  CHECK(rig.ended().back().rec.retries == 1);
  a.decide = nullptr;

  // The route's 250 ms deadline passes while the backend holds the call.
  a.action = Action::kHold;
  id = one_call(rig, 0, grpc_request("/timed.Svc/Wait", "x"));
  REQUIRE(rig.advance_ms(300));
  CHECK(status_of(0, id) == 4);

  // The backend resets a call (RST_STREAM): counted on the endpoint.
  id = one_call(rig, 0, grpc_request("/svc.Echo/Call", "x"));
  H2Backend* b = rig.backend(kA);
  REQUIRE(b != nullptr);
  b->reset(b->exchanges().back()->id, NGHTTP2_INTERNAL_ERROR);
  REQUIRE(rig.pump());
  const int reset_status = status_of(0, id);
  CHECK(reset_status > 0);

  // Plain HTTP/2: method "non_grpc".
  a.action = Action::kAnswer;
  a.grpc_status = 0;
  one_call(rig, 0, plain_request("GET", "/index.html"));
  const int plain_status = rig.ended().back().rec.grpc_status;

  // No route on listener 1 (no default cluster): UNIMPLEMENTED, route "none".
  const size_t c1 = rig.add_client(1);
  CHECK(status_of(c1, one_call(rig, c1, grpc_request("/nope.Svc/X", "x"))) == 12);

  // Cluster "d": every connect refused (replayed, then UNAVAILABLE); then no endpoints at all.
  rig.reactor().set_connect_result(kB, -ECONNREFUSED);
  CHECK(status_of(0, one_call(rig, 0, grpc_request("/far.Svc/Y", "x"))) == 14);
  const uint8_t far_attempts = rig.ended().back().rec.attempts;
  CHECK(far_attempts >= 2);
  ctx.apply_endpoints(1, std::make_shared<const lb::EndpointSet>());
  CHECK(status_of(0, one_call(rig, 0, grpc_request("/far.Svc/Y", "x"))) == 14);

  // Cluster "c".
  const ClusterCounters& c = ctx.cluster(0).counters;
  CHECK(c.calls == 6);
  CHECK(c.calls_ended[kOK] == 2 + (plain_status == 0 ? 1 : 0));
  CHECK(c.calls_ended[kNotFound] == 1);
  CHECK(c.calls_ended[kDeadline] == 1);
  CHECK(c.calls_ended[core::proxy::status_slot(reset_status)] >= 1);
  uint64_t ended = 0;
  for (uint64_t v : c.calls_ended) ended += v;
  CHECK(ended == 6);
  CHECK(c.no_endpoint == 0);
  // Endpoint kA: 7 attempts (the retried call made two), each ended with what it got.
  REQUIRE(ctx.cluster(0).endpoints.size() == 1);
  const EndpointCounters& ea = ctx.cluster(0).endpoints[0]->counters;
  CHECK(ea.attempts == 7);
  CHECK(ea.attempts_ended[kOK] == 2 + (plain_status == 0 ? 1 : 0));
  CHECK(ea.attempts_ended[kNotFound] == 1);
  CHECK(ea.attempts_ended[kUnavailable] == 1);
  CHECK(ea.attempts_ended[kCancelled] == 1);  // the deadline: ringlb let go of it
  CHECK(ea.attempts_ended[core::proxy::status_slot(reset_status)] >= 1);
  uint64_t attempts_ended = 0;
  for (uint64_t v : ea.attempts_ended) attempts_ended += v;
  CHECK(attempts_ended == 7);
  CHECK(ea.resets == 1);
  CHECK(ea.connects == 1);
  CHECK(ea.connect_failures == 0);

  // Cluster "d": its endpoint is gone from the set (the state may be forgotten); the cluster
  // still has its counts.
  const ClusterCounters& d = ctx.cluster(1).counters;
  CHECK(d.calls == 2);
  CHECK(d.calls_ended[kUnavailable] == 2);
  CHECK(d.no_endpoint == 1);

  // Listeners.
  const auto& ls = ctx.stats().listeners;
  REQUIRE(ls.size() == 2);
  CHECK(ls[0].accepted == 1);
  CHECK(ls[0].open == 1);
  CHECK(ls[1].accepted == 1);
  CHECK(ls[1].open == 1);

  // Methods.
  const MethodTable& t = ctx.stats().methods;
  std::vector<core::proxy::MethodRow> keep;
  const MethodCounters* m = row(t, "default", "/svc.Echo/Call", keep);
  REQUIRE(m != nullptr);
  CHECK(m->calls[kOK] == 2);
  CHECK(row(t, "default", "/svc.Echo/Get", keep)->calls[kNotFound] == 1);
  m = row(t, "/timed.", "/timed.Svc/Wait", keep);
  REQUIRE(m != nullptr);
  CHECK(m->calls[kDeadline] == 1);
  CHECK(m->latency[9] == 1);  // 250 ms: le 0.25 is bucket 8, it took a little more: le 0.5
  CHECK(m->latency_sum_ns >= 250'000'000);
  CHECK(row(t, "default", "non_grpc", keep) != nullptr);
  CHECK(row(t, "none", "other", keep)->calls[kUnimplemented] == 1);
  CHECK(row(t, "/far.", "/far.Svc/Y", keep)->calls[kUnavailable] == 2);
}

TEST_CASE("metrics: connections: connects, failures, GOAWAY, lost; listener refusals") {
  std::string cfg = metrics_config();
  cfg.replace(cfg.find("[proxy]\n"), 8, "[proxy]\nmax_connections = 1\n");
  ProxyRig rig(cfg);
  auto& ctx = rig.ctx();
  rig.mode(kA).action = Action::kHold;
  int32_t id = one_call(rig, 0, grpc_request("/svc.Echo/Call", "x"));
  H2Backend* b = rig.backend(kA);
  REQUIRE(b != nullptr);
  b->goaway(b->exchanges().back()->id);
  REQUIRE(rig.pump());
  const EndpointCounters& ea = ctx.cluster(0).endpoints[0]->counters;
  CHECK(ea.goaways == 1);
  b->respond_trailers_only(b->exchanges().back()->id, 0);
  REQUIRE(rig.pump());
  CHECK(rig.client(0).stream(id)->grpc_status == 0);
  // A new connection (the old one said GOAWAY), which then dies with a call on it.
  id = one_call(rig, 0, grpc_request("/svc.Echo/Call", "x"));
  CHECK(ea.connects == 2);
  rig.hang_up(rig.backend(kA));
  REQUIRE(rig.pump());
  CHECK(ea.connections_lost == 1);
  CHECK(ea.connect_failures == 0);

  // Over max_connections (1 per shard): accepted, then closed at once.
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  CHECK_FALSE(ctx.adopt(0, fd));
  const auto& l = ctx.stats().listeners[0];
  CHECK(l.accepted == 2);
  CHECK(l.open == 1);
  CHECK(l.rejected[static_cast<size_t>(core::proxy::Rejection::kMaxConnections)] == 1);
}

namespace {

std::unique_ptr<core::runtime::ShardSnapshot> snapshot(unsigned shard) {
  using core::runtime::ClusterView;
  using core::runtime::EndpointView;
  auto s = std::make_unique<core::runtime::ShardSnapshot>();
  s->shard = shard;
  s->listeners.resize(1);
  s->listeners[0].accepted = 3;
  s->listeners[0].open = 1;
  s->listeners[0].rejected[0] = shard;
  s->access_log_lines = 10;
  s->access_log_dropped = shard;
  ClusterView& c = s->clusters.emplace_back();
  c.name = "c";
  c.counters.calls = 5;
  c.counters.calls_ended[kOK] = 4;
  c.counters.calls_ended[kUnavailable] = 1;
  c.counters.retries[0] = 1;
  c.counters.panic_picks = 2;
  EndpointView& e = c.endpoints.emplace_back();
  e.name = "127.0.0.1:1";
  e.outstanding = shard + 1;
  e.connections = 1;
  e.weight_permille = shard == 0 ? 1000 : 500;  // ramping on shard 1
  e.counters.attempts = 6;
  e.counters.attempts_ended[kOK] = 4;
  e.counters.attempts_ended[kUnavailable] = 2;
  e.counters.connects = 1;
  EndpointView& gone = c.endpoints.emplace_back();
  gone.name = "127.0.0.1:9";
  gone.removed = true;
  s->clusters.emplace_back().name = "d";
  auto method = [&](std::string route, std::string name, uint64_t calls) {
    core::proxy::MethodRow r{std::move(route), std::move(name), {}};
    r.counters.calls[kOK] = calls;
    r.counters.latency[0] = calls;  // le 0.0005
    r.counters.latency_sum_ns = calls * 100'000;
    s->methods.push_back(std::move(r));
  };
  method("default", "/svc.A/Get", 3);
  method("default", "/svc.A/Put", 2);
  if (shard == 0) method("/r.", "/quote\"back\\slash", 2);
  if (shard == 1) method("default", "/svc.A/Del", 1);
  return s;
}

bool has_line(const std::string& text, const std::string& line) {
  return text.find("\n" + line + "\n") != std::string::npos;
}

// Every sample's family has one # HELP and one # TYPE, before its first sample.
std::string check_families(const std::string& text) {
  std::map<std::string, int> help, type;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) return "no newline at the end";
    std::string line = text.substr(pos, end - pos);
    pos = end + 1;
    if (line.rfind("# HELP ", 0) == 0) {
      ++help[line.substr(7, line.find(' ', 7) - 7)];
      continue;
    }
    if (line.rfind("# TYPE ", 0) == 0) {
      ++type[line.substr(7, line.find(' ', 7) - 7)];
      continue;
    }
    std::string name = line.substr(0, line.find_first_of("{ "));
    if (!type.count(name)) {
      for (const char* suffix : {"_bucket", "_sum", "_count"}) {
        const std::string sfx = suffix;
        if (name.size() > sfx.size() && name.ends_with(sfx)) {
          name.resize(name.size() - sfx.size());
          break;
        }
      }
    }
    if (!type.count(name) || !help.count(name)) return "no # TYPE/# HELP before: " + line;
  }
  for (const auto& [name, n] : type) {
    if (n != 1 || help[name] != 1) return "family listed more than once: " + name;
  }
  return "";
}

}  // namespace

TEST_CASE(
    "metrics: render_metrics sums shards, escapes labels, caps methods, lists families once") {
  const auto cfg = core::config::parse_config(R"([proxy]
[metrics]
max_methods = 3
[[listener]]
address = "127.0.0.1:0"
cluster = "c"
routes = [{ prefix = "/r.", cluster = "d" }]
[[cluster]]
name = "c"
endpoints = ["127.0.0.1:1"]
[[cluster]]
name = "d"
dns = "svc.test.local"
port = 50051
)",
                                              "<metrics test>");
  core::runtime::Controller ctl(std::make_shared<const core::config::Config>(cfg),
                                {nullptr, nullptr, nullptr});  // 3 workers, never started
  ctl.set_io_backend(core::io::IoBackend::kEpoll);
  std::vector<std::unique_ptr<core::runtime::ShardSnapshot>> shards;
  shards.push_back(snapshot(0));
  shards.push_back(snapshot(1));
  const std::string text = core::runtime::render_metrics(ctl, shards);
  CAPTURE(text);
  CHECK(check_families(text) == "");
  CHECK(has_line(text, "ringlb_workers 3"));
  CHECK(has_line(text, "ringlb_io_backend{backend=\"epoll\"} 1"));
  CHECK(has_line(text, "ringlb_shards_answered 2"));
  CHECK(has_line(text, "ringlb_shards_missing 1"));
  CHECK(has_line(text, "ringlb_listener_connections_accepted_total{listener=\"127.0.0.1:0\"} 6"));
  CHECK(has_line(text, "ringlb_listener_connections_open{listener=\"127.0.0.1:0\"} 2"));
  CHECK(has_line(text,
                 "ringlb_listener_connections_rejected_total{listener=\"127.0.0.1:0\","
                 "reason=\"max_connections\"} 1"));
  CHECK(has_line(text, "ringlb_cluster_calls_started_total{cluster=\"c\"} 10"));
  CHECK(has_line(text, "ringlb_cluster_calls_started_total{cluster=\"d\"} 0"));
  CHECK(has_line(text, "ringlb_cluster_calls_total{cluster=\"c\",grpc_code=\"OK\"} 8"));
  CHECK(has_line(text, "ringlb_cluster_calls_total{cluster=\"c\",grpc_code=\"UNAVAILABLE\"} 2"));
  CHECK(text.find("ringlb_cluster_calls_total{cluster=\"c\",grpc_code=\"NOT_FOUND\"}") ==
        std::string::npos);  // only codes seen
  CHECK(has_line(text, "ringlb_cluster_retries_total{cluster=\"c\",reason=\"status\"} 2"));
  CHECK(has_line(text, "ringlb_cluster_panic_picks_total{cluster=\"c\"} 4"));
  CHECK(has_line(text, "ringlb_cluster_endpoints{cluster=\"c\"} 1"));
  CHECK(has_line(text, "ringlb_dns_refreshes_total{cluster=\"d\",result=\"nxdomain\"} 0"));
  CHECK(text.find("ringlb_dns_refreshes_total{cluster=\"c\"") == std::string::npos);
  CHECK(has_line(text,
                 "ringlb_endpoint_attempts_total{cluster=\"c\",endpoint=\"127.0.0.1:1\","
                 "grpc_code=\"UNAVAILABLE\"} 4"));
  CHECK(
      has_line(text, "ringlb_endpoint_calls_in_flight{cluster=\"c\",endpoint=\"127.0.0.1:1\"} 3"));
  CHECK(has_line(text,
                 "ringlb_endpoint_state{cluster=\"c\",endpoint=\"127.0.0.1:1\",state=\"healthy\"} "
                 "1"));
  CHECK(has_line(text,
                 "ringlb_endpoint_state{cluster=\"c\",endpoint=\"127.0.0.1:1\","
                 "state=\"slow_start\"} 1"));
  CHECK(has_line(text,
                 "ringlb_endpoint_state{cluster=\"c\",endpoint=\"127.0.0.1:9\",state=\"draining\"} "
                 "1"));
  CHECK(has_line(text,
                 "ringlb_endpoint_state{cluster=\"c\",endpoint=\"127.0.0.1:9\",state=\"healthy\"} "
                 "0"));
  // Methods: summed, the least busy past max_methods (3) folded into its route's "other".
  CHECK(has_line(text,
                 "ringlb_calls_total{route=\"default\",method=\"/svc.A/Get\",grpc_code=\"OK\"} 6"));
  CHECK(
      has_line(text, "ringlb_calls_total{route=\"default\",method=\"other\",grpc_code=\"OK\"} 1"));
  CHECK(text.find("/svc.A/Del") == std::string::npos);
  CHECK(has_line(text,
                 "ringlb_calls_total{route=\"/r.\",method=\"/quote\\\"back\\\\slash\","
                 "grpc_code=\"OK\"} 2"));
  CHECK(has_line(text,
                 "ringlb_call_duration_seconds_bucket{route=\"default\",method=\"/svc.A/Get\","
                 "le=\"0.0005\"} 6"));
  CHECK(has_line(text,
                 "ringlb_call_duration_seconds_bucket{route=\"default\",method=\"/svc.A/Get\","
                 "le=\"+Inf\"} 6"));
  CHECK(has_line(text,
                 "ringlb_call_duration_seconds_count{route=\"default\",method=\"/svc.A/Get\"} 6"));
  CHECK(has_line(
      text, "ringlb_call_duration_seconds_sum{route=\"default\",method=\"/svc.A/Get\"} 0.0006"));
  CHECK(has_line(text, "ringlb_access_log_lines_total 20"));
  CHECK(has_line(text, "ringlb_access_log_dropped_total 1"));
  CHECK(text.find("\nprocess_resident_memory_bytes ") != std::string::npos);
  CHECK(text.find("\nprocess_open_fds ") != std::string::npos);
  CHECK(text.rfind("# HELP ringlb_build_info ", 0) == 0);

  // promtool (Debian's prometheus package) must find nothing wrong.
  if (access("/usr/bin/promtool", X_OK) != 0) {
    WARN_MESSAGE(false, "promtool not installed (apt-get install prometheus): not checked here");
    return;
  }
  char path[] = "/tmp/ringlb-metrics-XXXXXX";
  int fd = mkstemp(path);
  REQUIRE(fd >= 0);
  REQUIRE(write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()));
  close(fd);
  const std::string cmd = std::string("/usr/bin/promtool check metrics < ") + path + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  std::string out;
  char buf[512];
  while (size_t n = fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  const int rc = pclose(p);
  unlink(path);
  CAPTURE(out);
  CHECK(rc == 0);
  CHECK(out == "");
}

TEST_CASE("metrics: the control thread's eligibility and DNS results") {
  const auto cfg = core::config::parse_config(R"([proxy]
[[listener]]
address = "127.0.0.1:0"
cluster = "c"
[[cluster]]
name = "c"
endpoints = ["127.0.0.1:1", "127.0.0.1:2"]
)",
                                              "<metrics test>");
  core::runtime::Controller ctl(std::make_shared<const core::config::Config>(cfg), {});
  const auto sets = core::runtime::initial_endpoint_sets(cfg);
  ctl.set_health(0, sets[0]->endpoints[1], false);  // no shard has heard: the control thread says
  std::vector<std::unique_ptr<core::runtime::ShardSnapshot>> none;
  const std::string text = core::runtime::render_metrics(ctl, none);
  CHECK(
      has_line(text,
               "ringlb_endpoint_state{cluster=\"c\",endpoint=\"127.0.0.1:2\",state=\"unhealthy\"} "
               "1"));
  CHECK(has_line(text,
                 "ringlb_endpoint_state{cluster=\"c\",endpoint=\"127.0.0.1:2\",state=\"healthy\"} "
                 "0"));
  CHECK(has_line(text, "ringlb_shards_answered 0"));

  using core::runtime::DnsResult;
  discovery::LookupResult r;
  r.outcome = discovery::QueryOutcome::kOk;
  CHECK(core::runtime::dns_result_of(r) == DnsResult::kOk);
  r.outcome = discovery::QueryOutcome::kEmpty;
  r.detail = "NXDOMAIN";
  CHECK(core::runtime::dns_result_of(r) == DnsResult::kNxdomain);
  r.detail = "no records";
  CHECK(core::runtime::dns_result_of(r) == DnsResult::kEmpty);
  r.outcome = discovery::QueryOutcome::kFailure;
  r.detail = "Timeout while contacting DNS servers";
  CHECK(core::runtime::dns_result_of(r) == DnsResult::kTimeout);
  r.detail = "Server failure";
  CHECK(core::runtime::dns_result_of(r) == DnsResult::kError);
}

TEST_CASE("metrics: a shard counts at the end of each call and copies its counters out") {
  auto cfg = std::make_shared<const core::config::Config>(
      core::config::parse_config(metrics_config(), "<metrics test>"));
  core::runtime::ShardSetup setup;
  setup.endpoint_sets = core::runtime::initial_endpoint_sets(*cfg);
  core::runtime::Shard shard(cfg, std::move(setup));  // not run: no reactor, no thread
  core::proxy::CallRecord r;
  r.cluster = 1;  // "d", by route "/far."
  r.route = 1;
  r.grpc = true;
  r.path = "/far.Svc/Get";
  r.grpc_status = 0;
  r.start_ns = 1;
  r.end_ns = 2;
  shard.on_call_end(r);
  shard.on_call_end(r);
  ++shard.cluster(1).endpoints[0]->counters.connects;
  ++shard.stats().listeners[1].accepted;

  core::runtime::ShardSnapshot s;
  shard.fill_snapshot(s);
  REQUIRE(s.clusters.size() == 2);
  CHECK(s.clusters[1].name == "d");
  CHECK(s.clusters[1].counters.calls_ended[kOK] == 2);
  REQUIRE(s.clusters[1].endpoints.size() == 1);
  CHECK(s.clusters[1].endpoints[0].counters.connects == 1);
  REQUIRE(s.listeners.size() == 2);
  CHECK(s.listeners[1].accepted == 1);
  REQUIRE(s.methods.size() == 1);
  CHECK(s.methods[0].route == "/far.");
  CHECK(s.methods[0].method == "/far.Svc/Get");
  CHECK(s.methods[0].counters.calls[kOK] == 2);
  CHECK(s.methods[0].counters.latency[0] == 2);
}
