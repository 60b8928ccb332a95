// RetryBuffer: holds the whole body while a replay is possible, drops what every reader passed
// once the call commits or the body outgrows its limit (truncated), and copies out at absolute
// positions.
#include "core/proxy/retry_buffer.h"

#include <doctest/doctest.h>

#include <string>

#include "core/mem/buffer.h"
#include "tests/support/h2_peers.h"

using ringlb::core::mem::ChunkPool;
using ringlb::core::mem::ChunkQueue;
using ringlb::core::proxy::RetryBuffer;
using ringlb::test::pattern;

namespace {

void append(RetryBuffer& b, const std::string& s) {
  b.append(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

std::string copy(const RetryBuffer& b, ChunkPool& pool, uint64_t pos, size_t n) {
  ChunkQueue q(&pool);
  b.copy_to(q, pos, n);
  std::string out(q.size(), '\0');
  q.read(reinterpret_cast<uint8_t*>(out.data()), out.size());
  return out;
}

}  // namespace

TEST_CASE("retry buffer: holds everything until commit, copies at absolute positions") {
  ChunkPool pool;
  RetryBuffer b;
  b.set_pool(&pool);
  b.reset(64 * 1024);
  const std::string body = pattern(40 * 1024, 9);
  append(b, body.substr(0, 10000));
  append(b, body.substr(10000));
  CHECK(b.base() == 0);
  CHECK(b.end() == body.size());
  CHECK(b.held() == body.size());
  CHECK(b.replayable());
  // Readers passing bytes drop nothing while a replay is possible.
  b.release_before(30000);
  CHECK(b.base() == 0);
  CHECK(copy(b, pool, 0, body.size()) == body);
  CHECK(copy(b, pool, 16000, 9000) == body.substr(16000, 9000));

  b.commit(20000);
  CHECK(b.base() == 20000);
  CHECK(b.held() == body.size() - 20000);
  CHECK(copy(b, pool, 20000, 100) == body.substr(20000, 100));
  b.release_before(body.size() + 50);  // clamped to the end
  CHECK(b.base() == body.size());
  CHECK(b.held() == 0);
  // After commit, appends are not "truncation": the buffer is only the window now.
  append(b, pattern(100 * 1024, 1));
  CHECK_FALSE(b.truncated());
  CHECK(b.end() == body.size() + 100 * 1024);
}

TEST_CASE("retry buffer: past its limit the body is truncated and drops what readers passed") {
  ChunkPool pool;
  RetryBuffer b;
  b.set_pool(&pool);
  b.reset(4096);
  const std::string body = pattern(10000, 4);
  append(b, body.substr(0, 4096));
  CHECK_FALSE(b.truncated());  // exactly at the limit is still whole
  append(b, body.substr(4096, 1));
  CHECK(b.truncated());
  CHECK_FALSE(b.replayable());
  append(b, body.substr(4097));
  CHECK(b.held() == body.size());  // nothing dropped until a reader passes
  b.release_before(6000);
  CHECK(b.base() == 6000);
  CHECK(b.held() == body.size() - 6000);
  CHECK(copy(b, pool, 6000, 4000) == body.substr(6000));
  // reset starts a new body, whole again.
  b.reset(4096);
  CHECK(b.base() == 0);
  CHECK(b.end() == 0);
  CHECK_FALSE(b.truncated());
  CHECK(pool.in_use() == 0);
}

TEST_CASE("retry buffer: a zero limit truncates at the first byte") {
  ChunkPool pool;
  RetryBuffer b;
  b.set_pool(&pool);
  b.reset(0);
  CHECK(b.replayable());
  append(b, "x");
  CHECK(b.truncated());
  b.release_before(1);
  CHECK(b.held() == 0);
  CHECK(b.base() == 1);
}

TEST_CASE("retry buffer: release_before never moves backwards") {
  ChunkPool pool;
  RetryBuffer b;
  b.set_pool(&pool);
  b.reset(0);
  append(b, pattern(5000));
  b.release_before(3000);
  b.release_before(1000);
  CHECK(b.base() == 3000);
  b.commit(2000);
  CHECK(b.base() == 3000);
}
