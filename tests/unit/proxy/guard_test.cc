// Hostile-client guards (core/proxy/guard.h): the token bucket, what a connection counts of its
// peer's frames, the per-address table, and the [limits] config that drives them.
#include "core/proxy/guard.h"

#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <nghttp2/nghttp2.h>

#include <string>

#include "core/config/config.h"

using ringlb::core::config::ConfigError;
using ringlb::core::config::LimitsConfig;
using ringlb::core::config::parse_config;
using ringlb::core::proxy::AbuseReason;
using ringlb::core::proxy::AddressGuard;
using ringlb::core::proxy::AddressKey;
using ringlb::core::proxy::FrameGuard;
using ringlb::core::proxy::TokenBucket;

namespace {

constexpr int64_t kSec = 1'000'000'000;

AddressKey v4(const char* ip) {
  sockaddr_storage ss{};
  auto& sin = reinterpret_cast<sockaddr_in&>(ss);
  sin.sin_family = AF_INET;
  inet_pton(AF_INET, ip, &sin.sin_addr);
  return AddressKey::of(ss);
}

std::string limits_error(std::string_view lines) {
  std::string text = "[limits]\n" + std::string(lines) +
                     "\n[[listener]]\naddress = \"127.0.0.1:1\"\ncluster = \"a\"\n"
                     "[[cluster]]\nname = \"a\"\nendpoints = [\"10.0.0.1:1\"]\n";
  try {
    (void)parse_config(text, "t.toml");
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE("guard: a token bucket starts full, refills at its rate, never past its burst") {
  TokenBucket b;
  int taken = 0;
  while (b.take(0, 10, 50)) ++taken;
  CHECK(taken == 50);
  CHECK_FALSE(b.take(kSec / 20, 10, 50));  // half a token back after 50 ms
  CHECK(b.take(kSec / 10, 10, 50));        // one after 100 ms
  // An hour later: full again, but no more than the burst.
  taken = 0;
  while (b.take(3600 * kSec, 10, 50)) ++taken;
  CHECK(taken == 50);
  // A normally completed stream gives one back, up to the burst.
  b.refund(50);
  CHECK(b.take(3600 * kSec, 10, 50));
  CHECK_FALSE(b.take(3600 * kSec, 10, 50));
}

TEST_CASE("guard: empty frames in a row trip; one with a payload, or an ending DATA, does not") {
  LimitsConfig l;
  l.max_empty_frames = 3;
  FrameGuard g;
  for (int i = 0; i < 3; ++i) CHECK_FALSE(g.on_frame(l, 0, NGHTTP2_DATA, 0, 0));
  CHECK_FALSE(g.on_frame(l, 0, NGHTTP2_DATA, 0, 10));  // a payload ends the run
  CHECK_FALSE(g.on_frame(l, 0, NGHTTP2_DATA, NGHTTP2_FLAG_END_STREAM, 0));  // a half-close
  for (int i = 0; i < 3; ++i) CHECK_FALSE(g.on_frame(l, 0, NGHTTP2_CONTINUATION, 0, 0));
  auto r = g.on_frame(l, 0, NGHTTP2_HEADERS, 0, 0);
  REQUIRE(r.has_value());
  CHECK(*r == AbuseReason::kEmptyFrames);
}

TEST_CASE("guard: WINDOW_UPDATE and PRIORITY frames are bounded by what was sent and opened") {
  LimitsConfig l;
  l.window_updates_per_data_frame = 10;
  l.priority_per_stream = 2;
  FrameGuard g;
  for (int i = 0; i < 100; ++i) REQUIRE_FALSE(g.on_frame(l, 0, NGHTTP2_WINDOW_UPDATE, 0, 4));
  CHECK(g.on_frame(l, 0, NGHTTP2_WINDOW_UPDATE, 0, 4) == AbuseReason::kWindowUpdates);
  FrameGuard h;
  h.on_data_sent();  // ten more allowed
  for (int i = 0; i < 110; ++i) REQUIRE_FALSE(h.on_frame(l, 0, NGHTTP2_WINDOW_UPDATE, 0, 4));
  CHECK(h.on_frame(l, 0, NGHTTP2_WINDOW_UPDATE, 0, 4) == AbuseReason::kWindowUpdates);
  FrameGuard p;
  p.on_stream_opened();
  for (int i = 0; i < 102; ++i) REQUIRE_FALSE(p.on_frame(l, 0, NGHTTP2_PRIORITY, 0, 5));
  CHECK(p.on_frame(l, 0, NGHTTP2_PRIORITY, 0, 5) == AbuseReason::kPriority);
}

TEST_CASE("guard: PING and SETTINGS share a rate; their ACKs are not counted") {
  LimitsConfig l;
  l.control_rate = 10;
  l.control_burst = 20;
  FrameGuard g;
  for (int i = 0; i < 10; ++i) REQUIRE_FALSE(g.on_frame(l, 0, NGHTTP2_PING, 0, 8));
  for (int i = 0; i < 10; ++i) REQUIRE_FALSE(g.on_frame(l, 0, NGHTTP2_SETTINGS, 0, 6));
  for (int i = 0; i < 100; ++i) REQUIRE_FALSE(g.on_frame(l, 0, NGHTTP2_PING, NGHTTP2_FLAG_ACK, 8));
  CHECK(g.on_frame(l, 0, NGHTTP2_PING, 0, 8) == AbuseReason::kControlFrames);
  CHECK_FALSE(g.on_frame(l, kSec, NGHTTP2_PING, 0, 8));  // ten more a second later
}

TEST_CASE("guard: addresses: resets add up across connections; refusal lasts refuse_for") {
  LimitsConfig l;
  l.address_reset_rate = 5;
  l.address_reset_burst = 10;
  l.refuse_for = std::chrono::seconds(5);
  AddressGuard g;
  const AddressKey a = v4("192.0.2.1"), b = v4("192.0.2.2");
  for (int i = 0; i < 10; ++i) REQUIRE(g.on_reset(l, a, 0));
  CHECK_FALSE(g.on_reset(l, a, 0));
  CHECK(g.on_reset(l, b, 0));  // another address has its own bucket
  CHECK_FALSE(g.refused(a, 0));
  g.refuse(l, a, kSec);
  CHECK(g.refused(a, kSec));
  CHECK(g.refused(a, 6 * kSec - 1));
  CHECK_FALSE(g.refused(a, 6 * kSec));
  CHECK_FALSE(g.refused(b, kSec));
  // Off: rate 0 never trips, refuse_for 0 never refuses.
  l.address_reset_rate = 0;
  l.refuse_for = std::chrono::seconds(0);
  AddressGuard off;
  for (int i = 0; i < 100000; ++i) REQUIRE(off.on_reset(l, a, 0));
  off.refuse(l, a, 0);
  CHECK_FALSE(off.refused(a, 0));
  // An unknown address (a unix socket, a test fd) is never tracked.
  CHECK(g.on_reset(l, AddressKey{}, 0));
}

TEST_CASE("guard: the address table stays bounded; idle entries make room") {
  LimitsConfig l;
  AddressGuard g;
  char ip[32];
  for (size_t i = 0; i < AddressGuard::kMaxEntries + 100; ++i) {
    snprintf(ip, sizeof ip, "10.%zu.%zu.%zu", (i >> 16) & 255, (i >> 8) & 255, i & 255);
    g.on_reset(l, v4(ip), 0);
  }
  CHECK(g.size() == AddressGuard::kMaxEntries);
  g.on_reset(l, v4("192.0.2.9"), 60 * kSec);  // the others have idled: swept
  CHECK(g.size() == 1);
}

TEST_CASE("config: [limits] keys, ranges and errors name file:line:column") {
  CHECK(limits_error("reset_rate = 0") ==
        "t.toml:2:14: limits.reset_rate: must be between 1 and 1000000, got 0");
  CHECK(limits_error("reset_rate = 500\nreset_burst = 100")
            .starts_with("t.toml:3:15: limits.reset_burst: must be at least the matching rate"));
  CHECK(limits_error("turn_bytes = \"1KiB\"").starts_with("t.toml:2:14: limits.turn_bytes:"));
  CHECK(limits_error("refuse_forr = \"1s\"")
            .starts_with("t.toml:2:1: limits.refuse_forr: unknown key"));
  CHECK(limits_error("address_reset_rate = 0\nrefuse_for = \"0s\"\nturn_bytes = \"32KiB\"") ==
        "(no error)");
}
