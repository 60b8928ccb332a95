// SessionHeap: the nghttp2 allocator. Blocks keep their bytes through realloc, every block goes
// back (in_use returns to 0), free lists respect their cap, and real nghttp2 sessions run on it.
#include "core/mem/session_heap.h"

#include <doctest/doctest.h>
#include <nghttp2/nghttp2.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

using ringlb::core::mem::SessionHeap;

namespace {

void fill(void* p, size_t n, uint8_t seed) {
  auto* b = static_cast<uint8_t*>(p);
  for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>(seed + i * 31);
}

bool holds(const void* p, size_t n, uint8_t seed) {
  const auto* b = static_cast<const uint8_t*>(p);
  for (size_t i = 0; i < n; ++i) {
    if (b[i] != static_cast<uint8_t>(seed + i * 31)) return false;
  }
  return true;
}

}  // namespace

TEST_CASE("session heap: random malloc/calloc/realloc/free keep contents and return every block") {
  SessionHeap heap(64 * 1024);
  nghttp2_mem* m = heap.mem();
  struct Block {
    void* p;
    size_t n;
    uint8_t seed;
  };
  std::vector<Block> live;
  std::mt19937 rng(7);
  auto size_pick = [&]() -> size_t {
    switch (rng() % 3) {
      case 0:
        return rng() % 64;
      case 1:
        return rng() % 5000;  // across every class and past the largest
      default:
        return 40 + rng() % 16;  // a class boundary (48 usable bytes in 64)
    }
  };
  for (int step = 0; step < 20000; ++step) {
    CAPTURE(step);
    int op = static_cast<int>(rng() % 4);
    if (op == 0 || live.empty()) {
      size_t n = size_pick();
      auto seed = static_cast<uint8_t>(step);
      void* p = m->malloc(n, m->mem_user_data);
      REQUIRE(p != nullptr);
      REQUIRE(reinterpret_cast<uintptr_t>(p) % 16 == 0);
      fill(p, n, seed);
      live.push_back({p, n, seed});
    } else if (op == 1) {
      size_t n = rng() % 300;
      void* p = m->calloc(n, 3, m->mem_user_data);
      REQUIRE(p != nullptr);
      std::vector<uint8_t> zero(n * 3, 0);
      REQUIRE((n == 0 || std::memcmp(p, zero.data(), n * 3) == 0));
      auto seed = static_cast<uint8_t>(step);
      fill(p, n * 3, seed);
      live.push_back({p, n * 3, seed});
    } else if (op == 2) {
      Block& b = live[rng() % live.size()];
      size_t n = size_pick();
      void* q = m->realloc(b.p, n, m->mem_user_data);
      REQUIRE(q != nullptr);
      REQUIRE(holds(q, std::min(n, b.n), b.seed));
      b.p = q;
      b.n = n;
      fill(q, n, b.seed);
    } else {
      size_t i = rng() % live.size();
      REQUIRE(holds(live[i].p, live[i].n, live[i].seed));
      m->free(live[i].p, m->mem_user_data);
      live[i] = live.back();
      live.pop_back();
    }
    REQUIRE(heap.in_use() == live.size());
    // Each class keeps at most 64 KiB of free blocks.
    REQUIRE(heap.idle() <= 64 * 1024 / SessionHeap::kMinBlock * 2);
  }
  for (Block& b : live) m->free(b.p, m->mem_user_data);
  m->free(nullptr, m->mem_user_data);  // free(NULL) is allowed, as in libc
  CHECK(heap.in_use() == 0);
}

TEST_CASE("session heap: each request gets the smallest block that holds it and the header") {
  for (size_t n = 0; n <= SessionHeap::kMaxBlock + 100; ++n) {
    CAPTURE(n);
    size_t b = SessionHeap::block_for(n);
    size_t need = n + SessionHeap::kHeader;
    if (need > SessionHeap::kMaxBlock) {
      REQUIRE(b == 0);  // plain malloc
    } else {
      REQUIRE(b >= need);
      REQUIRE((b == SessionHeap::kMinBlock || b / 2 < need));
    }
  }
}

TEST_CASE("session heap: a request too large to add a header to fails cleanly") {
  SessionHeap heap;
  CHECK(SessionHeap::block_for(SIZE_MAX) == 0);
  CHECK(heap.allocate(SIZE_MAX) == nullptr);
  CHECK(heap.allocate(SIZE_MAX - 8) == nullptr);
  CHECK(heap.in_use() == 0);
}

TEST_CASE("session heap: a freed block is reused, and the idle cap returns the excess") {
  SessionHeap heap(SessionHeap::kMinBlock * 2);  // two 64-byte blocks idle at most
  void* a = heap.allocate(10);
  heap.release(a);
  CHECK(heap.idle() == 1);
  void* b = heap.allocate(20);  // same class: the same block comes back
  CHECK(b == a);
  CHECK(heap.idle() == 0);
  void* p[4];
  for (void*& x : p) x = heap.allocate(8);
  for (void* x : p) heap.release(x);
  heap.release(b);
  CHECK(heap.idle() == 2);
  CHECK(heap.in_use() == 0);
}

namespace {

struct Peer {
  std::string got;  // response DATA the client received
  int closed = 0;
};

int on_data(nghttp2_session*, uint8_t, int32_t, const uint8_t* data, size_t len, void* user) {
  static_cast<Peer*>(user)->got.append(reinterpret_cast<const char*>(data), len);
  return 0;
}

int on_close(nghttp2_session*, int32_t, uint32_t, void* user) {
  ++static_cast<Peer*>(user)->closed;
  return 0;
}

ssize_t read_body(nghttp2_session*, int32_t, uint8_t* buf, size_t len, uint32_t* flags,
                  nghttp2_data_source*, void*) {
  static const char kBody[] = "hello from the server side";
  size_t n = std::min(len, sizeof kBody - 1);
  std::memcpy(buf, kBody, n);
  *flags |= NGHTTP2_DATA_FLAG_EOF;
  return static_cast<ssize_t>(n);
}

int server_on_frame(nghttp2_session* s, const nghttp2_frame* f, void*) {
  if (f->hd.type == NGHTTP2_HEADERS && (f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
    nghttp2_nv nv[] = {{(uint8_t*)":status", (uint8_t*)"200", 7, 3, 0}};
    nghttp2_data_provider prd;
    prd.source.ptr = nullptr;
    prd.read_callback = read_body;
    nghttp2_submit_response(s, f->hd.stream_id, nv, 1, &prd);
  }
  return 0;
}

void pump(nghttp2_session* from, nghttp2_session* to) {
  for (;;) {
    const uint8_t* d = nullptr;
    ssize_t n = nghttp2_session_mem_send(from, &d);
    REQUIRE(n >= 0);
    if (n == 0) break;
    REQUIRE(nghttp2_session_mem_recv(to, d, static_cast<size_t>(n)) == n);
  }
}

}  // namespace

TEST_CASE("session heap: nghttp2 client and server sessions run on it and give everything back") {
  SessionHeap heap;
  Peer client_peer;
  nghttp2_session_callbacks* ccb = nullptr;
  nghttp2_session_callbacks_new(&ccb);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(ccb, on_data);
  nghttp2_session_callbacks_set_on_stream_close_callback(ccb, on_close);
  nghttp2_session_callbacks* scb = nullptr;
  nghttp2_session_callbacks_new(&scb);
  nghttp2_session_callbacks_set_on_frame_recv_callback(scb, server_on_frame);
  nghttp2_session* client = nullptr;
  nghttp2_session* server = nullptr;
  // As ringlb's sessions do: closed streams are not kept around for the RFC 7540 priority tree.
  nghttp2_option* opt = nullptr;
  nghttp2_option_new(&opt);
  nghttp2_option_set_no_closed_streams(opt, 1);
  REQUIRE(nghttp2_session_client_new3(&client, ccb, &client_peer, opt, heap.mem()) == 0);
  REQUIRE(nghttp2_session_server_new3(&server, scb, nullptr, opt, heap.mem()) == 0);
  nghttp2_option_del(opt);
  nghttp2_submit_settings(client, NGHTTP2_FLAG_NONE, nullptr, 0);
  nghttp2_submit_settings(server, NGHTTP2_FLAG_NONE, nullptr, 0);
  size_t before = 0;
  for (int call = 0; call < 200; ++call) {
    nghttp2_nv nv[] = {{(uint8_t*)":method", (uint8_t*)"GET", 7, 3, 0},
                       {(uint8_t*)":scheme", (uint8_t*)"http", 7, 4, 0},
                       {(uint8_t*)":authority", (uint8_t*)"x", 10, 1, 0},
                       {(uint8_t*)":path", (uint8_t*)"/heap", 5, 5, 0}};
    REQUIRE(nghttp2_submit_request(client, nullptr, nv, 4, nullptr, nullptr) > 0);
    pump(client, server);
    pump(server, client);
    pump(client, server);
    if (call == 10) before = heap.in_use();
  }
  CHECK(client_peer.closed == 200);
  CHECK(client_peer.got.size() == 200 * std::strlen("hello from the server side"));
  // Steady state: finished calls leave nothing behind in the sessions.
  CHECK(heap.in_use() == before);
  CHECK(heap.idle() > 0);  // and their blocks wait on the free lists for the next call
  nghttp2_session_del(client);
  nghttp2_session_del(server);
  nghttp2_session_callbacks_del(ccb);
  nghttp2_session_callbacks_del(scb);
  CHECK(heap.in_use() == 0);
}
