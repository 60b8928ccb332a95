// libFuzzer target: the admin listener's HTTP/1.1 request parser (core/runtime/http1) on
// arbitrary bytes, with the admin's limits. A crash, UB or a leak is a bug, and so is a broken
// promise: a whole request names a path starting with '/', its consumed length is within the
// input, parsing exactly that much gives the same request, and every shorter prefix of it asks
// for more bytes (so a request that arrives in pieces is never rejected on the way).
// Built and run by tests/fuzz/run.sh.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "core/runtime/http1.h"

namespace {

namespace http1 = ringlb::core::runtime::http1;
constexpr size_t kHead = 8192;
constexpr size_t kBody = 65536;

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "http1_fuzz: %s\n", what);
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  http1::ParseResult r = http1::parse_request(in, kHead, kBody);
  if (r.status != http1::ParseStatus::kDone) {
    if (r.status != http1::ParseStatus::kIncomplete && r.error.empty()) die("error without text");
    return 0;
  }
  if (r.consumed == 0 || r.consumed > size) die("consumed out of range");
  if (r.request.path.empty() || r.request.path.front() != '/') die("path without '/'");
  if (r.request.body.size() > kBody) die("body over the limit");
  http1::ParseResult exact = http1::parse_request(in.substr(0, r.consumed), kHead, kBody);
  if (exact.status != http1::ParseStatus::kDone || exact.consumed != r.consumed ||
      exact.request.target != r.request.target || exact.request.body != r.request.body) {
    die("the request alone parses differently");
  }
  for (size_t n : {r.consumed - 1, r.consumed / 2}) {
    if (http1::parse_request(in.substr(0, n), kHead, kBody).status !=
        http1::ParseStatus::kIncomplete) {
      die("a prefix of a whole request was not incomplete");
    }
  }
  return 0;
}
