// GET /config: the running config as JSON. Exact text for a small config (so every field's
// rendering is pinned), duration round-trips through the config parser, and redaction.
#include "core/config/config_json.h"

#include <doctest/doctest.h>

#include <string>

#include "core/base/json.h"

using ringlb::core::config::config_to_json;
using ringlb::core::config::duration_text;
using ringlb::core::config::is_secret_key;
using ringlb::core::config::parse_config;
using ringlb::core::config::parse_duration;
using namespace std::chrono_literals;
using Dur = ringlb::core::config::Duration;

TEST_CASE("config_json: durations render in the config's own syntax and parse back") {
  CHECK(duration_text(0s) == "0s");
  CHECK(duration_text(250ms) == "250ms");
  CHECK(duration_text(20s) == "20s");
  CHECK(duration_text(10min) == "10m");
  CHECK(duration_text(2h) == "2h");
  CHECK(duration_text(1500us) == "1500us");
  CHECK(duration_text(90s) == "90s");
  for (ringlb::core::config::Duration d :
       {Dur(0ns), Dur(1ns), Dur(7us), Dur(250ms), Dur(1500ms), Dur(90s), Dur(10min), Dur(3h)}) {
    CAPTURE(d.count());
    CHECK(parse_duration(duration_text(d)) == d);
  }
}

TEST_CASE("config_json: secret keys") {
  CHECK(is_secret_key("key"));
  CHECK(is_secret_key("private_key"));
  CHECK(is_secret_key("client_key"));
  CHECK(is_secret_key("password"));
  CHECK(is_secret_key("secret"));
  CHECK_FALSE(is_secret_key("keepalive"));
  CHECK_FALSE(is_secret_key("cert"));
  CHECK_FALSE(is_secret_key("address"));
}

TEST_CASE("config_json: a small config, exactly") {
  auto cfg = parse_config(
      "[proxy]\nworkers = 2\nio_backend = \"epoll\"\n"
      "[admin]\naddress = \"127.0.0.1:0\"\nrequest_timeout = \"1s\"\n"
      "[[listener]]\naddress = \"127.0.0.1:8080\"\ncluster = \"c\"\n"
      "routes = [ { prefix = \"/p.\", cluster = \"c\", timeout = \"2s\" } ]\n"
      "[[cluster]]\nname = \"c\"\nlb = \"p2c\"\n"
      "endpoints = [\"10.0.0.1:1\", { address = \"10.0.0.2:1\", weight = 3 }]\n",
      "small.toml");
  std::string json = config_to_json(cfg);
  const std::string retry =
      R"("retry":{"on":["unavailable"],"attempts":3,"per_try_timeout":"off","backoff":"25ms",)"
      R"("max_backoff":"250ms","budget_percent":20,"budget_min_per_second":10},)"
      R"("hedge":{"enabled":false,"after":"auto","methods":[]})";
  const std::string expected =
      R"({"source":"small.toml","proxy":{"workers":2,"io_backend":"epoll","drain_timeout":"20s",)"
      R"("max_connections":10000,"max_concurrent_streams":1024,"stream_buffer":262144,)"
      R"("connection_window":8388608,"max_header_list_size":65536,"idle_timeout":"3m",)"
      R"("handshake_timeout":"5s","header_timeout":"10s","body_timeout":"30s",)"
      R"("send_timeout":"30s","retry_buffer":262144,"memory_limit":268435456},)"
      R"("limits":{"turn_bytes":65536,"reset_rate":200,"reset_burst":1000,)"
      R"("address_reset_rate":400,"address_reset_burst":2000,"refuse_for":"5s",)"
      R"("max_empty_frames":16,"window_updates_per_data_frame":10,"priority_per_stream":100,)"
      R"("control_rate":100,"control_burst":500,"max_outbound_control_frames":1000},)"
      R"("listeners":[{"address":"127.0.0.1:8080","cluster":"c","routes":[{"prefix":"/p.",)"
      R"("cluster":"c","timeout":"2s",)" +
      retry +
      R"(}]}],"clusters":[{"name":"c","lb":"p2c","endpoints":[{"address":"10.0.0.1:1",)"
      R"("weight":1},{"address":"10.0.0.2:1","weight":3}],"connect_timeout":"250ms",)"
      R"("keepalive":{"enabled":true,"interval":"250ms","timeout":"500ms","idle":"30s"},)"
      R"("health_check":{"enabled":false,"interval":"2s","timeout":"500ms","unhealthy":2,)"
      R"("healthy":2,"service":""},"outlier":{"enabled":true,"consecutive_failures":3,)"
      R"("consecutive_unavailable":3,"base_ejection":"5s","max_ejection":"1m",)"
      R"("max_ejected_percent":50,"panic_threshold":25},)" +
      retry +
      R"(,"slow_start":"0s"}],"discovery":{"resolvers":[],"query_timeout":"2s"},)"
      R"("admin":{"address":"127.0.0.1:0","max_connections":16,"request_timeout":"1s"},)"
      R"("log":{"level":"info","access":"stdout","access_sample":1,"access_buffer":1024},)"
      R"("metrics":{"max_methods":200}})";
  CHECK(json == expected);
}

TEST_CASE("json: strings are escaped so the text always parses") {
  std::string out;
  ringlb::core::base::append_json_string(out, std::string("a\"b\\c\n\x01\xff\xc3\xa9", 10));
  CHECK(out == "\"a\\\"b\\\\c\\n\\u0001\\ufffd\xc3\xa9\"");
  ringlb::core::base::JsonWriter w;
  w.begin_object().key("a").begin_array().value(1).value("x").null().end_array();
  w.key("b").value(true).key("c").value(0.5).end_object();
  CHECK(w.text() == R"({"a":[1,"x",null],"b":true,"c":0.5})");
}
