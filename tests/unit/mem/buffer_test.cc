// ChunkPool / ChunkQueue: the byte FIFO behaves like a std::string under random appends, reads,
// peeks and consumes across chunk boundaries, and chunks always go back to the pool (an idle
// queue holds none, and the pool keeps at most max_idle of them).
#include "core/mem/buffer.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

using ringlb::core::mem::ChunkPool;
using ringlb::core::mem::ChunkQueue;

namespace {

constexpr size_t kChunk = ChunkPool::kChunkSize;

// Bytes that differ at every offset, so a misplaced copy shows.
std::string pattern(size_t n, uint32_t seed) {
  std::string s(n, '\0');
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < n; ++i) {
    x = x * 1103515245u + 12345u;
    s[i] = static_cast<char>(x >> 16);
  }
  return s;
}

void append(ChunkQueue& q, const std::string& s) {
  q.append(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

std::string read_all(ChunkQueue& q, size_t n) {
  std::string out(n, '\0');
  size_t got = q.read(reinterpret_cast<uint8_t*>(out.data()), n);
  out.resize(got);
  return out;
}

std::string peek_all(const ChunkQueue& q, int max_iov) {
  std::vector<iovec> iov(static_cast<size_t>(max_iov));
  int k = q.peek_iovecs(iov.data(), max_iov);
  std::string out;
  for (int i = 0; i < k; ++i) {
    out.append(static_cast<const char*>(iov[i].iov_base), iov[i].iov_len);
  }
  return out;
}

// Chunks a queue of `size` bytes may hold: the head may start mid-chunk, so at most one more
// than the bytes need.
size_t max_chunks_for(size_t size) {
  // +2: a partly read head chunk, and a small first chunk that a queue starting with a small
  // write gets before the full-size ones.
  return size == 0 ? 0 : (size + kChunk - 1) / kChunk + 2;
}

}  // namespace

TEST_CASE("chunk pool: get/put counts and the max_idle cap") {
  ChunkPool pool(2);
  CHECK(pool.in_use() == 0);
  CHECK(pool.idle() == 0);
  std::vector<ringlb::core::mem::Chunk*> got;
  for (int i = 0; i < 5; ++i) got.push_back(pool.get());
  CHECK(pool.in_use() == 5);
  CHECK(pool.idle() == 0);
  // The chunk memory is usable for its whole advertised size.
  std::memset(got[0]->data, 0xab, kChunk);
  for (auto* c : got) pool.put(c);
  CHECK(pool.in_use() == 0);
  CHECK(pool.idle() == 2);  // three went back to the allocator
  // Reuse comes from the free list first.
  auto* a = pool.get();
  CHECK(pool.idle() == 1);
  CHECK(a->next == nullptr);
  pool.put(a);
  CHECK(pool.idle() == 2);
}

TEST_CASE("chunk pool: max_idle of zero keeps nothing") {
  ChunkPool pool(0);
  auto* c = pool.get();
  pool.put(c);
  CHECK(pool.in_use() == 0);
  CHECK(pool.idle() == 0);
}

TEST_CASE("chunk queue: an empty queue holds no chunk") {
  ChunkPool pool;
  ChunkQueue q(&pool);
  CHECK(q.empty());
  CHECK(pool.in_use() == 0);

  q.append(nullptr, 0);
  CHECK(q.empty());
  CHECK(pool.in_use() == 0);

  SUBCASE("read drains it") {
    append(q, pattern(100, 1));
    CHECK(pool.in_use() == 1);
    CHECK(read_all(q, 100) == pattern(100, 1));
  }
  SUBCASE("consume drains it") {
    append(q, pattern(100, 1));
    q.consume(100);
  }
  SUBCASE("exactly one full chunk, read in two halves") {
    append(q, pattern(kChunk, 2));
    CHECK(pool.in_use() == 1);
    CHECK(read_all(q, kChunk / 2) == pattern(kChunk, 2).substr(0, kChunk / 2));
    CHECK(pool.in_use() == 1);
    CHECK(read_all(q, kChunk) == pattern(kChunk, 2).substr(kChunk / 2));
  }
  SUBCASE("three chunks consumed piecewise up to the end") {
    append(q, pattern(3 * kChunk + 7, 3));
    CHECK(pool.in_use() == 4);
    q.consume(kChunk);  // exactly the first chunk
    CHECK(pool.in_use() == 3);
    q.consume(1);
    q.consume(2 * kChunk + 6);
  }
  SUBCASE("clear") {
    append(q, pattern(5 * kChunk + 1, 4));
    CHECK(pool.in_use() == 6);
    q.clear();
  }
  CHECK(q.empty());
  CHECK(q.size() == 0);
  CHECK(pool.in_use() == 0);
  iovec iov[4];
  CHECK(q.peek_iovecs(iov, 4) == 0);
  uint8_t b[8];
  CHECK(q.read(b, sizeof b) == 0);

  // Still usable after being emptied.
  append(q, "again");
  CHECK(read_all(q, 99) == "again");
  CHECK(pool.in_use() == 0);
}

TEST_CASE("chunk queue: appends and reads across chunk boundaries match a string model") {
  ChunkPool pool(4);
  ChunkQueue q(&pool);
  std::string model;
  std::mt19937 rng(20240611);
  uint32_t seed = 0;
  auto size_pick = [&]() -> size_t {
    switch (rng() % 4) {
      case 0:
        return rng() % 16;  // tiny
      case 1:
        return rng() % 3000;  // small
      case 2:
        return kChunk - 8 + rng() % 16;  // around one chunk
      default:
        return rng() % (3 * kChunk + 100);  // several chunks
    }
  };
  for (int step = 0; step < 3000; ++step) {
    CAPTURE(step);
    int op = static_cast<int>(rng() % 10);
    if (op < 4 || model.size() < 10) {
      std::string s = pattern(size_pick(), ++seed);
      append(q, s);
      model += s;
    } else if (op < 7) {
      size_t n = size_pick();
      std::string got = read_all(q, n);
      size_t want = std::min(n, model.size());
      REQUIRE(got.size() == want);
      REQUIRE(got == model.substr(0, want));
      model.erase(0, want);
    } else if (op < 9) {
      int max_iov = 1 + static_cast<int>(rng() % 6);
      std::string peeked = peek_all(q, max_iov);
      REQUIRE(peeked.size() <= model.size());
      REQUIRE(peeked == model.substr(0, peeked.size()));
      if (!model.empty()) {
        REQUIRE(!peeked.empty());
        // Peeking with enough iovecs sees everything.
        if (model.size() < 60 * kChunk) REQUIRE(peek_all(q, 64) == model);
      }
      size_t n = peeked.empty() ? 0 : rng() % (peeked.size() + 1);
      q.consume(n);
      model.erase(0, n);
    } else {
      // Drain to exactly empty now and then: the boundary where chunks must be released.
      std::string got = read_all(q, model.size() + 10);
      REQUIRE(got == model);
      model.clear();
    }
    REQUIRE(q.size() == model.size());
    REQUIRE(q.empty() == model.empty());
    REQUIRE(pool.in_use() <= max_chunks_for(model.size()));
    if (model.empty()) REQUIRE(pool.in_use() == 0);
    REQUIRE(pool.idle() <= 8);  // max_idle applies to each of the two chunk sizes
  }
  q.clear();
  CHECK(pool.in_use() == 0);
}

TEST_CASE("chunk queue: peek_iovecs + consume, like a partial socket write") {
  ChunkPool pool;
  ChunkQueue q(&pool);
  const std::string data = pattern(4 * kChunk + 1234, 77);
  append(q, data.substr(0, 100));
  append(q, data.substr(100));
  std::string sent;
  std::mt19937 rng(7);
  while (!q.empty()) {
    iovec iov[3];
    int k = q.peek_iovecs(iov, 3);
    REQUIRE(k >= 1);
    REQUIRE(k <= 3);
    size_t avail = 0;
    for (int i = 0; i < k; ++i) {
      REQUIRE(iov[i].iov_len > 0);
      avail += iov[i].iov_len;
    }
    // Pretend the kernel took only part of it.
    size_t took = 1 + rng() % avail;
    size_t left = took;
    for (int i = 0; i < k && left > 0; ++i) {
      size_t n = std::min(left, iov[i].iov_len);
      sent.append(static_cast<const char*>(iov[i].iov_base), n);
      left -= n;
    }
    q.consume(took);
  }
  CHECK(sent == data);
  CHECK(pool.in_use() == 0);
}

TEST_CASE("chunk queue: peek_iovecs gives one iovec per chunk, starting at the read offset") {
  ChunkPool pool;
  ChunkQueue q(&pool);
  const std::string data = pattern(2 * kChunk + 10, 5);
  append(q, data);
  q.consume(3);
  iovec iov[8];
  int k = q.peek_iovecs(iov, 8);
  REQUIRE(k == 3);
  CHECK(iov[0].iov_len == kChunk - 3);
  CHECK(iov[1].iov_len == kChunk);
  CHECK(iov[2].iov_len == 10);
  CHECK(std::memcmp(iov[0].iov_base, data.data() + 3, 16) == 0);
  CHECK(q.peek_iovecs(iov, 1) == 1);
  CHECK(q.peek_iovecs(iov, 0) == 0);
  CHECK(q.size() == data.size() - 3);  // peeking consumed nothing
}

TEST_CASE("chunk queue: destructor and clear return every chunk; queues share a pool") {
  ChunkPool pool(1000);
  {
    ChunkQueue a(&pool);
    ChunkQueue b;
    b.set_pool(&pool);
    append(a, pattern(3 * kChunk, 1));
    append(b, pattern(kChunk + 1, 2));
    CHECK(pool.in_use() == 5);
    b.clear();
    CHECK(pool.in_use() == 3);
    CHECK(b.empty());
    append(b, "x");
    CHECK(pool.in_use() == 4);
  }
  CHECK(pool.in_use() == 0);
  CHECK(pool.idle() == 6);  // five full-size chunks, and the small one "x" went into
}

TEST_CASE("chunk queue: move_to carries bytes in order between two queues (DATA frame path)") {
  // The NO_COPY DATA path: a stream's body queue hands `n` bytes at a time to a connection's
  // output queue, which already holds frame headers; both must match a string model.
  ChunkPool pool(4);
  ChunkQueue body(&pool);
  ChunkQueue out(&pool);
  std::string body_model, out_model;
  std::mt19937 rng(20261124);
  uint32_t seed = 0;
  for (int step = 0; step < 2000; ++step) {
    CAPTURE(step);
    int op = static_cast<int>(rng() % 4);
    if (op == 0 || body_model.empty()) {
      std::string s = pattern(rng() % 2 ? rng() % 100 : rng() % (2 * kChunk + 50), ++seed);
      append(body, s);
      body_model += s;
    } else if (op == 1) {
      std::string hd = pattern(9, ++seed);  // a frame header
      append(out, hd);
      out_model += hd;
      size_t n = rng() % (std::min<size_t>(body_model.size(), 16384) + 1);
      body.move_to(out, n);
      out_model += body_model.substr(0, n);
      body_model.erase(0, n);
    } else if (op == 2) {
      size_t n = rng() % (out_model.size() + 1);
      REQUIRE(read_all(out, n) == out_model.substr(0, n));
      out_model.erase(0, n);
    } else {
      body.move_to(out, body_model.size());  // all of it: the body queue lets go of its chunks
      out_model += body_model;
      body_model.clear();
      REQUIRE(body.empty());
    }
    REQUIRE(body.size() == body_model.size());
    REQUIRE(out.size() == out_model.size());
    REQUIRE(pool.in_use() <= max_chunks_for(body_model.size()) + max_chunks_for(out_model.size()));
  }
  REQUIRE(read_all(out, out_model.size() + 1) == out_model);
  REQUIRE(read_all(body, body_model.size() + 1) == body_model);
  CHECK(pool.in_use() == 0);
}
