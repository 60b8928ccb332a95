// ChunkQueue::copy_to: any window of a queue, at any offset across chunk boundaries (small and
// full-size chunks, a partly consumed head), copied out without disturbing the source.
#include <doctest/doctest.h>

#include <algorithm>
#include <string>

#include "core/mem/buffer.h"
#include "tests/support/h2_peers.h"

using ringlb::core::mem::ChunkPool;
using ringlb::core::mem::ChunkQueue;
using ringlb::test::pattern;

namespace {

constexpr size_t kChunk = ChunkPool::kChunkSize;
constexpr size_t kSmall = ChunkPool::kSmallChunkSize;

void append(ChunkQueue& q, const std::string& s) {
  q.append(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

std::string drain(ChunkQueue& q) {
  std::string out(q.size(), '\0');
  q.read(reinterpret_cast<uint8_t*>(out.data()), out.size());
  return out;
}

std::string copied(const ChunkQueue& q, ChunkPool& pool, size_t off, size_t n) {
  ChunkQueue dst(&pool);
  q.copy_to(dst, off, n);
  return drain(dst);
}

}  // namespace

TEST_CASE("chunk queue copy_to: offsets across chunk boundaries, the source untouched") {
  ChunkPool pool;
  ChunkQueue q(&pool);
  // A small first write gets a small chunk; then full-size chunks.
  const std::string body = pattern(3 * kChunk + 777, 11);
  append(q, body.substr(0, 10));
  append(q, body.substr(10, 5000));
  append(q, body.substr(5010));
  REQUIRE(q.size() == body.size());
  const size_t offsets[] = {0,
                            1,
                            9,
                            10,
                            kSmall - 1,
                            kSmall,
                            kSmall + 1,
                            kChunk - 1,
                            kChunk,
                            kChunk + kSmall,
                            2 * kChunk + 5,
                            body.size() - 1};
  const size_t lengths[] = {0, 1, 100, kSmall, kChunk, kChunk + 1, 2 * kChunk + 3};
  for (size_t off : offsets) {
    for (size_t n : lengths) {
      if (off + n > body.size()) continue;
      CAPTURE(off);
      CAPTURE(n);
      CHECK(copied(q, pool, off, n) == body.substr(off, n));
    }
  }
  CHECK(copied(q, pool, 0, body.size()) == body);
  CHECK(q.size() == body.size());
  CHECK(drain(q) == body);
}

TEST_CASE("chunk queue copy_to: from a queue whose head was partly consumed") {
  ChunkPool pool;
  ChunkQueue q(&pool);
  const std::string body = pattern(2 * kChunk + 100, 12);
  append(q, body);
  q.consume(kChunk - 3);  // the read position is 3 bytes before the first boundary
  const std::string rest = body.substr(kChunk - 3);
  for (size_t off : {size_t{0}, size_t{2}, size_t{3}, size_t{4}, kChunk, rest.size() - 1}) {
    CAPTURE(off);
    size_t n = std::min<size_t>(rest.size() - off, kChunk + 7);
    CHECK(copied(q, pool, off, n) == rest.substr(off, n));
  }
  CHECK(copied(q, pool, 0, rest.size()) == rest);
}

TEST_CASE("chunk queue copy_to: appends after what the destination holds; chunks go back") {
  ChunkPool pool;
  {
    ChunkQueue q(&pool);
    ChunkQueue dst(&pool);
    const std::string a = pattern(500, 1);
    const std::string body = pattern(kChunk + 50, 2);
    append(dst, a);
    append(q, body);
    q.copy_to(dst, 40, kChunk);
    CHECK(drain(dst) == a + body.substr(40, kChunk));
  }
  CHECK(pool.in_use() == 0);
}
