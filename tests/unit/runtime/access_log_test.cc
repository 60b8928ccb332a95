// The access log: each field of the JSON line, escaping and truncation, sampling, a full ring
// counting its drops, and the writer draining the rings to a pipe.
#include "core/runtime/access_log.h"

#include <doctest/doctest.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <string>
#include <string_view>

#include "core/base/clock.h"

using ringlb::core::config::Config;
using ringlb::core::proxy::CallRecord;
using ringlb::core::runtime::AccessLog;
using ringlb::core::runtime::format_access_line;
using ringlb::core::runtime::kAccessLineMax;
using ringlb::core::runtime::WallSecondCache;
namespace proxy = ringlb::core::proxy;

namespace {

Config test_config() {
  return ringlb::core::config::parse_config(R"(
[[listener]]
address = "127.0.0.1:8080"
cluster = "orders"

[[cluster]]
name = "orders"
endpoints = ["10.0.1.5:50051", "10.0.1.6:50051"]
)",
                                            "test");
}

// 2026-11-29T22:19:00.123Z
constexpr int64_t kWall = 1795990740LL * 1'000'000'000 + 123'456'789;

std::string line_of(const CallRecord& r, const Config& c) {
  char buf[kAccessLineMax];
  WallSecondCache cache;
  size_t n = format_access_line(r, c, kWall, cache, buf);
  REQUIRE(n <= kAccessLineMax);
  REQUIRE(n > 2);
  CHECK(buf[n - 1] == '\n');
  return std::string(buf, n - 1);
}

// A strict little JSON checker (RFC 8259 structure, escapes, UTF-8 validity): the line must be
// one valid object.
struct Json {
  std::string_view s;
  size_t i = 0;
  bool ws() {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) ++i;
    return true;
  }
  bool lit(std::string_view w) {
    if (s.substr(i, w.size()) != w) return false;
    i += w.size();
    return true;
  }
  bool string() {
    if (i >= s.size() || s[i] != '"') return false;
    ++i;
    while (i < s.size()) {
      auto c = static_cast<unsigned char>(s[i]);
      if (c == '"') {
        ++i;
        return true;
      }
      if (c < 0x20) return false;
      if (c == '\\') {
        if (++i >= s.size()) return false;
        char e = s[i];
        if (e == 'u') {
          for (int k = 1; k <= 4; ++k) {
            if (i + k >= s.size() || !isxdigit(static_cast<unsigned char>(s[i + k]))) return false;
          }
          i += 5;
          continue;
        }
        if (std::string_view("\"\\/bfnrt").find(e) == std::string_view::npos) return false;
        ++i;
        continue;
      }
      if (c >= 0x80) {  // UTF-8: lead byte + continuations
        int len = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 ? 2 : 0;
        if (len == 0 || c > 0xF4) return false;
        for (int k = 1; k < len; ++k) {
          if (i + k >= s.size() || (static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80)
            return false;
        }
        i += len;
        continue;
      }
      ++i;
    }
    return false;
  }
  bool number() {
    size_t start = i;
    if (i < s.size() && s[i] == '-') ++i;
    while (i < s.size() && (isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.')) ++i;
    return i > start;
  }
  bool value() {
    ws();
    if (i >= s.size()) return false;
    switch (s[i]) {
      case '"':
        return string();
      case '{':
        return object();
      case '[': {
        ++i;
        ws();
        if (i < s.size() && s[i] == ']') return ++i, true;
        for (;;) {
          if (!value()) return false;
          ws();
          if (i < s.size() && s[i] == ',') {
            ++i;
            continue;
          }
          return i < s.size() && s[i++] == ']';
        }
      }
      case 't':
        return lit("true");
      case 'f':
        return lit("false");
      case 'n':
        return lit("null");
      default:
        return number();
    }
  }
  bool object() {
    if (s[i] != '{') return false;
    ++i;
    ws();
    if (i < s.size() && s[i] == '}') return ++i, true;
    for (;;) {
      ws();
      if (!string()) return false;
      ws();
      if (i >= s.size() || s[i++] != ':') return false;
      if (!value()) return false;
      ws();
      if (i < s.size() && s[i] == ',') {
        ++i;
        continue;
      }
      return i < s.size() && s[i++] == '}';
    }
  }
  bool whole() { return i < s.size() && s[i] == '{' && object() && i == s.size(); }
};

bool valid_json(std::string_view s) {
  return Json{s}.whole();
}

CallRecord ok_call() {
  CallRecord r;
  r.listener = 0;
  r.cluster = 0;
  r.grpc = true;
  r.path = "/pkg.Orders/Get";
  r.authority = "orders.internal:8080";
  r.peer = "10.9.8.7:40000";
  r.user_agent = "grpc-go/1.60";
  r.request_id = "abc-123";
  r.http_status = 200;
  r.grpc_status = 0;
  r.attempts = 1;
  r.tried[0] = "10.0.1.5:50051";
  r.start_ns = 1'000'000'000;
  r.end_ns = 1'012'345'678;  // 12.345 ms
  r.upstream_ns = 11'000'999;
  r.request_bytes = 17;
  r.response_bytes = 4096;
  return r;
}

}  // namespace

TEST_CASE("access log: a successful gRPC call, every field") {
  Config c = test_config();
  std::string l = line_of(ok_call(), c);
  CHECK(l ==
        "{\"time\":\"2026-11-29T22:19:00.123Z\",\"listener\":\"127.0.0.1:8080\","
        "\"peer\":\"10.9.8.7:40000\",\"authority\":\"orders.internal:8080\","
        "\"service\":\"pkg.Orders\",\"method\":\"Get\",\"http_status\":200,\"grpc_status\":0,"
        "\"grpc_message\":null,\"flags\":\"-\",\"cluster\":\"orders\","
        "\"endpoints\":[\"10.0.1.5:50051\"],\"attempts\":1,\"retries\":0,\"hedges\":0,"
        "\"replays\":0,\"duration_ms\":12.345,\"upstream_ms\":11.000,\"request_bytes\":17,"
        "\"response_bytes\":4096,\"user_agent\":\"grpc-go/1.60\",\"request_id\":\"abc-123\"}");
  CHECK(valid_json(l));
}

TEST_CASE("access log: failures, flags, retries, no route, plain HTTP/2") {
  Config c = test_config();
  CallRecord r = ok_call();
  r.grpc_status = 14;
  r.grpc_message = "ringlb: upstream 10.0.1.6:50051: connection refused";
  r.flags = proxy::kFlagConnectFailure | proxy::kFlagRetryLimit;
  r.attempts = 6;  // only four are named
  for (size_t i = 0; i < CallRecord::kMaxTried; ++i) r.tried[i] = "10.0.1." + std::to_string(i);
  r.retries = 2;
  r.replays = 3;
  std::string l = line_of(r, c);
  CHECK(l.find("\"grpc_status\":14,\"grpc_message\":\"ringlb: upstream 10.0.1.6:50051: "
               "connection refused\",\"flags\":\"UF,URX\"") != std::string::npos);
  CHECK(l.find("\"endpoints\":[\"10.0.1.0\",\"10.0.1.1\",\"10.0.1.2\",\"10.0.1.3\"],"
               "\"attempts\":6,\"retries\":2,\"hedges\":0,\"replays\":3") != std::string::npos);
  CHECK(valid_json(l));

  CallRecord nr;
  nr.cluster = -1;
  nr.grpc = true;
  nr.path = "/nope.Svc/X";
  nr.flags = proxy::kFlagNoRoute;
  nr.grpc_status = 12;
  l = line_of(nr, c);
  CHECK(l.find("\"peer\":null,\"authority\":null,\"service\":\"nope.Svc\",\"method\":\"X\","
               "\"http_status\":0,\"grpc_status\":12") != std::string::npos);
  CHECK(l.find("\"flags\":\"NR\",\"cluster\":null,\"endpoints\":[],\"attempts\":0") !=
        std::string::npos);
  CHECK(l.find("\"user_agent\":null,\"request_id\":null}") != std::string::npos);
  CHECK(valid_json(l));

  CallRecord plain = ok_call();
  plain.grpc = false;
  plain.grpc_status = -1;
  plain.path = "/index.html?q=1";
  plain.http_status = 503;
  l = line_of(plain, c);
  CHECK(l.find("\"path\":\"/index.html?q=1\",\"http_status\":503,\"grpc_status\":null") !=
        std::string::npos);
  CHECK(l.find("\"service\"") == std::string::npos);
  CHECK(valid_json(l));

  // A gRPC path that is not /service/method is logged as a path.
  CallRecord odd = ok_call();
  odd.path = "/nomethod";
  CHECK(line_of(odd, c).find("\"path\":\"/nomethod\"") != std::string::npos);
}

TEST_CASE("access log: escaping and invalid UTF-8") {
  Config c = test_config();
  CallRecord r = ok_call();
  r.user_agent = std::string_view("a\"b\\c\nd\te\x01\x1f\x7f", 12);
  std::string bad = "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80 x\xFFy \xC3 \xED\xA0\x80 \xC0\xAF";
  r.request_id = bad;
  std::string l = line_of(r, c);
  CHECK(l.find("\"user_agent\":\"a\\\"b\\\\c\\nd\\te\\u0001\\u001f\x7f\"") != std::string::npos);
  // Valid sequences are kept; each invalid byte becomes U+FFFD (surrogates and overlongs too).
  CHECK(l.find("\"request_id\":\"caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80 x\xEF\xBF\xBDy "
               "\xEF\xBF\xBD \xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD \xEF\xBF\xBD\xEF\xBF\xBD\"") !=
        std::string::npos);
  CHECK(valid_json(l));
}

TEST_CASE("access log: long values are truncated; the line stays valid and bounded") {
  Config c = test_config();
  CallRecord r = ok_call();
  std::string huge(5000, 'x');
  std::string quotes(3000, '"');
  std::string ctl(3000, '\x01');
  r.path = huge;
  r.authority = quotes;
  r.user_agent = ctl;
  r.request_id = huge;
  r.peer = huge;
  r.grpc_message = huge;
  r.grpc_status = 13;
  r.flags = 0x1fff;  // every flag
  r.attempts = 255;
  r.retries = r.hedges = r.replays = 255;
  for (auto& t : r.tried) t = huge;
  r.request_bytes = r.response_bytes = UINT64_MAX;
  r.start_ns = 1;
  r.end_ns = INT64_MAX;
  r.upstream_ns = INT64_MAX;
  std::string l = line_of(r, c);
  CHECK(l.size() + 1 <= kAccessLineMax);
  CHECK(valid_json(l));
  CHECK(l.find("\"grpc_message\":\"" + std::string(256, 'x') +
               "\",\"grpc_message_truncated\":true") != std::string::npos);
  CHECK(l.find("\"flags\":\"NR,UH,UF,UT,DT,URX,DC,UR,UC,UO,RB,SD,IR\"") != std::string::npos);
  // An escape is never cut in half: 128 bytes hold 42 \u0001 escapes.
  CHECK(l.find("\"user_agent\":\"" + [] {
    std::string s;
    for (int i = 0; i < 21; ++i) s += "\\u0001";
    return s;
  }()) != std::string::npos);

  // A short message is not marked.
  r.grpc_message = "short";
  CHECK(line_of(r, c).find("grpc_message_truncated") == std::string::npos);
}

TEST_CASE("access log: the time prefix is cached per second") {
  Config c = test_config();
  char buf[kAccessLineMax];
  WallSecondCache cache;
  format_access_line(ok_call(), c, kWall, cache, buf);
  CHECK(std::string_view(buf, 33) == "{\"time\":\"2026-11-29T22:19:00.123Z");
  format_access_line(ok_call(), c, kWall + 877'000'000, cache, buf);  // 22:19:01.000
  CHECK(std::string_view(buf, 33) == "{\"time\":\"2026-11-29T22:19:01.000Z");
  format_access_line(ok_call(), c, kWall + 3600LL * 1'000'000'000, cache, buf);
  CHECK(std::string_view(buf, 33) == "{\"time\":\"2026-11-29T23:19:00.123Z");
}

namespace {

// Reads what is in the pipe now (non-blocking).
std::string read_some(int fd) {
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

size_t count_lines(const std::string& s) {
  size_t n = 0;
  for (char ch : s) n += ch == '\n';
  return n;
}

}  // namespace

TEST_CASE("access log: the writer drains every shard's ring to a pipe; a full ring drops") {
  Config c = test_config();
  int p[2];
  REQUIRE(pipe2(p, O_CLOEXEC) == 0);
  fcntl(p[0], F_SETFL, O_NONBLOCK);
  {
    AccessLog log(p[1], true, "", 2, 16, 1.0);
    CHECK(log.shard(0)->capacity() == 16);
    // Before the writer runs, the rings fill: 16 fit, the rest are dropped and counted.
    for (int i = 0; i < 20; ++i) log.shard(0)->log(ok_call(), c);
    for (int i = 0; i < 5; ++i) log.shard(1)->log(ok_call(), c);
    CHECK(log.shard(0)->lines() == 16);
    CHECK(log.shard(0)->dropped() == 4);
    CHECK(log.shard(1)->lines() == 5);
    CHECK(log.shard(1)->dropped() == 0);
    std::string error;
    REQUIRE(log.start(error));
    // The writer wakes (an eventfd write from the shard side) and empties the rings.
    std::string got;
    for (int i = 0; i < 2000 && count_lines(got) < 21; ++i) {
      pollfd pf{p[0], POLLIN, 0};
      ::poll(&pf, 1, 10);
      got += read_some(p[0]);
    }
    CHECK(count_lines(got) == 21);
    // Later lines go out too (the writer had gone back to sleep).
    for (int i = 0; i < 3; ++i) log.shard(1)->log(ok_call(), c);
    for (int i = 0; i < 2000 && count_lines(got) < 24; ++i) {
      pollfd pf{p[0], POLLIN, 0};
      ::poll(&pf, 1, 10);
      got += read_some(p[0]);
    }
    CHECK(count_lines(got) == 24);
    log.stop();
    CHECK(log.written() == 24);
    CHECK(log.dropped_reported() == 4);
    size_t start = 0;
    while (start < got.size()) {
      size_t end = got.find('\n', start);
      CHECK(valid_json(std::string_view(got).substr(start, end - start)));
      start = end + 1;
    }
  }
  ::close(p[0]);
}

TEST_CASE("access log: lines that cross the ring's end come out whole and in order") {
  Config c = test_config();
  int p[2];
  REQUIRE(pipe2(p, O_CLOEXEC) == 0);
  fcntl(p[0], F_SETFL, O_NONBLOCK);
  fcntl(p[1], F_SETPIPE_SZ, 1 << 20);
  std::vector<std::string> ids;
  {
    AccessLog log(p[1], true, "", 1, 16, 1.0);
    REQUIRE(log.shard(0)->bytes() == 8192);
    std::string error;
    REQUIRE(log.start(error));
    // 400 lines of varying length through an 8 KiB ring: it goes round ~20 times, and lines
    // land across its end at many offsets. Never more than 8 waiting, so none is dropped.
    for (int i = 0; i < 400; ++i) {
      CallRecord r = ok_call();
      ids.push_back("id-" + std::to_string(i) + std::string(static_cast<size_t>(i % 83), 'x'));
      r.request_id = ids.back();
      log.shard(0)->log(r, c);
      for (int k = 0; k < 2000 && log.shard(0)->lines() - log.written() >= 8; ++k) usleep(500);
    }
    log.stop();
    CHECK(log.shard(0)->dropped() == 0);
    CHECK(log.written() == 400);
  }
  const std::string got = read_some(p[0]);
  ::close(p[0]);
  REQUIRE(count_lines(got) == 400);
  size_t start = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    const size_t end = got.find('\n', start);
    const std::string_view line = std::string_view(got).substr(start, end - start);
    CHECK(valid_json(line));
    CHECK(line.find("\"request_id\":\"" + ids[i] + "\"") != std::string_view::npos);
    start = end + 1;
  }
}

TEST_CASE("access log: stop writes every queued line") {
  Config c = test_config();
  int p[2];
  REQUIRE(pipe2(p, O_CLOEXEC) == 0);
  fcntl(p[0], F_SETFL, O_NONBLOCK);
  fcntl(p[1], F_SETPIPE_SZ, 1 << 20);
  AccessLog log(p[1], true, "", 1, 1024, 1.0);
  std::string error;
  REQUIRE(log.start(error));
  for (int i = 0; i < 1000; ++i) log.shard(0)->log(ok_call(), c);
  log.stop();
  CHECK(log.written() == 1000 - log.shard(0)->dropped());
  CHECK(count_lines(read_some(p[0])) == log.written());
  ::close(p[0]);
}

TEST_CASE("access log: sampling keeps every failure and a share of successes") {
  Config c = test_config();
  AccessLog none(-1, false, "", 1, 4096, 0.0);
  CallRecord ok = ok_call();
  CallRecord bad = ok_call();
  bad.grpc_status = 14;
  CallRecord flagged = ok_call();
  flagged.flags = proxy::kFlagConnectFailure;  // OK in the end, after a connect failure
  CallRecord plain_ok = ok_call();
  plain_ok.grpc = false;
  plain_ok.http_status = 204;
  CallRecord plain_bad = plain_ok;
  plain_bad.http_status = 404;
  CHECK(ringlb::core::runtime::access_log_success(ok));
  CHECK(!ringlb::core::runtime::access_log_success(bad));
  CHECK(!ringlb::core::runtime::access_log_success(flagged));
  CHECK(ringlb::core::runtime::access_log_success(plain_ok));
  CHECK(!ringlb::core::runtime::access_log_success(plain_bad));
  for (int i = 0; i < 100; ++i) none.shard(0)->log(ok, c);
  CHECK(none.shard(0)->lines() == 0);
  none.shard(0)->log(bad, c);
  none.shard(0)->log(flagged, c);
  none.shard(0)->log(plain_bad, c);
  none.shard(0)->log(plain_ok, c);
  CHECK(none.shard(0)->lines() == 3);

  AccessLog tenth(-1, false, "", 1, 4096, 0.1);
  for (int i = 0; i < 2000; ++i) tenth.shard(0)->log(ok, c);
  const uint64_t kept = tenth.shard(0)->lines();
  CHECK(kept > 100);  // 200 expected; a fixed seed makes this exact from run to run
  CHECK(kept < 300);
  for (int i = 0; i < 10; ++i) tenth.shard(0)->log(bad, c);
  CHECK(tenth.shard(0)->lines() == kept + 10);
  CHECK(tenth.shard(0)->dropped() == 0);
}

TEST_CASE("access log: reopen() moves to a new file at the same path (log rotation)") {
  Config c = test_config();
  char dir_template[] = "/tmp/ringlb-access-XXXXXX";
  REQUIRE(mkdtemp(dir_template) != nullptr);
  const std::string dir = dir_template;
  const std::string path = dir + "/access.log";
  ringlb::core::config::LogConfig lc;
  lc.access = ringlb::core::config::AccessLogTarget::kFile;
  lc.access_path = path;
  lc.access_buffer = 64;
  std::string error;
  auto log = AccessLog::create(lc, 1, error);
  REQUIRE(log != nullptr);
  REQUIRE(log->start(error));
  for (int i = 0; i < 3; ++i) log->shard(0)->log(ok_call(), c);
  for (int i = 0; i < 500 && log->written() < 3; ++i) usleep(10'000);
  REQUIRE(log->written() == 3);
  REQUIRE(::rename(path.c_str(), (path + ".1").c_str()) == 0);
  REQUIRE(log->reopen(error));
  for (int i = 0; i < 2; ++i) log->shard(0)->log(ok_call(), c);
  log->stop();
  auto lines_in = [](const std::string& p) {
    std::string text;
    if (FILE* f = fopen(p.c_str(), "r")) {
      char buf[4096];
      size_t n;
      while ((n = fread(buf, 1, sizeof buf, f)) > 0) text.append(buf, n);
      fclose(f);
    }
    return count_lines(text);
  };
  CHECK(lines_in(path + ".1") == 3);
  CHECK(lines_in(path) == 2);
  ::unlink((path + ".1").c_str());
  ::unlink(path.c_str());
  ::rmdir(dir.c_str());

  // A path that cannot be opened is an error at start-up, not a silent loss.
  lc.access_path = dir + "/no/such/dir/access.log";
  CHECK(AccessLog::create(lc, 1, error) == nullptr);
  CHECK(error.find("cannot open") != std::string::npos);
  lc.access = ringlb::core::config::AccessLogTarget::kOff;
  CHECK(AccessLog::create(lc, 1, error) == nullptr);  // off: nothing at all
}

TEST_CASE("access log: word-at-a-time escaping matches a byte-by-byte reference") {
  // Strings of plain bytes with specials at every offset: the 8-byte fast path must stop at
  // exactly the first byte that needs a look, whatever its position in the word.
  Config c = test_config();
  const std::string_view alphabet[] = {"a",  "Z",  "0",    " ",    "\"",
                                       "\\", "\n", "\x01", "\x7f", "\xC3\xA9"};
  auto reference = [](std::string_view s) {
    std::string out;
    for (size_t i = 0; i < s.size(); ++i) {
      auto ch = static_cast<unsigned char>(s[i]);
      if (ch == '"')
        out += "\\\"";
      else if (ch == '\\')
        out += "\\\\";
      else if (ch == '\n')
        out += "\\n";
      else if (ch < 0x20) {
        char b[8];
        snprintf(b, sizeof b, "\\u%04x", ch);
        out += b;
      } else
        out += static_cast<char>(ch);
    }
    return out;
  };
  uint64_t seed = 42;
  for (int round = 0; round < 2000; ++round) {
    std::string s;
    const int len = static_cast<int>(seed % 40);
    for (int k = 0; k < len; ++k) {
      seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
      s += alphabet[(seed >> 33) % (sizeof alphabet / sizeof alphabet[0])];
    }
    seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
    CallRecord r = ok_call();
    r.request_id = s;
    std::string l = line_of(r, c);
    REQUIRE(valid_json(l));
    if (s.empty()) {
      CHECK(l.ends_with("\"request_id\":null}"));
      continue;
    }
    const size_t at = l.rfind("\"request_id\":\"");
    REQUIRE(at != std::string::npos);
    REQUIRE(l.ends_with("\"}"));
    const std::string got = l.substr(at + 14, l.size() - at - 14 - 2);
    const std::string want = reference(s);
    if (want.size() <= 96) {  // the request_id budget
      CHECK(got == want);
    } else {  // cut, never inside an escape or a character
      CHECK(got.size() <= 96);
      CHECK(got.size() > 96 - 6);
      CHECK(want.starts_with(got));
    }
  }
}

TEST_CASE("access log: a TLS listener's call names its version and the client's identity") {
  Config c = test_config();
  CallRecord r = ok_call();
  r.tls = "TLSv1.3";
  r.peer_identity = "spiffe://prod/orders-client";
  std::string l = line_of(r, c);
  CHECK(l.find("\"peer\":\"10.9.8.7:40000\",\"tls\":\"TLSv1.3\","
               "\"peer_identity\":\"spiffe://prod/orders-client\",\"authority\":") !=
        std::string::npos);
  CHECK(valid_json(l));
  r.peer_identity = {};  // no client certificate
  l = line_of(r, c);
  CHECK(l.find("\"tls\":\"TLSv1.3\",\"peer_identity\":null,") != std::string::npos);
}
