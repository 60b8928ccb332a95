#include "core/mem/buffer.h"

#include <sys/mman.h>

#include <cassert>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <utility>

namespace ringlb::core::mem {

void out_of_memory(size_t n) {
  // DESIGN.md: out of memory aborts, loudly, and never unwinds through nghttp2 or c-ares.
  fprintf(stderr, "ringlb: out of memory (allocating %zu bytes)\n", n);
  std::abort();
}

namespace {

// Full-size chunks (16 KiB with their header: four pages) are mapped one by one instead of
// coming from malloc: they are what a burst of buffered data is made of, and from malloc they
// would leave the heap fragmented around the small objects that outlive the burst, so that
// malloc_trim could not give the pages back. A mapped chunk goes back whole when it is freed.
// Steady traffic reuses pooled chunks and makes no system call.
void* map_chunk(size_t bytes) {
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) out_of_memory(bytes);  // no exception through nghttp2 frames
  return p;
}

void free_chunk(Chunk* c) {
  if (c->capacity == ChunkPool::kSmallChunkSize) {
    std::free(c);
  } else {
    munmap(c, ChunkPool::kHeader + ChunkPool::kChunkSize);
  }
}

}  // namespace

ChunkPool::~ChunkPool() {
  shrink(0);
}

void ChunkPool::shrink(size_t keep) {
  for (auto [list, idle] : {std::pair{&free_, &idle_}, std::pair{&free_small_, &idle_small_}}) {
    while (*idle > keep && *list != nullptr) {
      Chunk* c = *list;
      *list = c->next;
      --*idle;
      free_chunk(c);
    }
  }
}

Chunk* ChunkPool::get(bool small) {
  Chunk*& list = small ? free_small_ : free_;
  size_t& idle = small ? idle_small_ : idle_;
  Chunk* c = list;
  if (c != nullptr) {
    list = c->next;
    --idle;
  } else {
    const size_t cap = small ? kSmallChunkSize : kChunkSize;
    c = static_cast<Chunk*>(small ? std::malloc(kHeader + cap) : map_chunk(kHeader + cap));
    if (c == nullptr) out_of_memory(kHeader + cap);  // no exception through nghttp2 frames
    c->capacity = static_cast<uint32_t>(cap);
  }
  c->next = nullptr;
  ++in_use_;
  in_use_bytes_ += c->capacity;
  return c;
}

void ChunkPool::put(Chunk* c) {
  --in_use_;
  in_use_bytes_ -= c->capacity;
  const bool small = c->capacity == kSmallChunkSize;
  Chunk*& list = small ? free_small_ : free_;
  size_t& idle = small ? idle_small_ : idle_;
  if (idle >= max_idle_) {
    free_chunk(c);
    return;
  }
  c->next = list;
  list = c;
  ++idle;
}

void ChunkQueue::append(const uint8_t* p, size_t n) {
  size_ += n;
  while (n > 0) {
    if (tail_ == nullptr || tail_len_ == tail_->capacity) {
      Chunk* c = pool_->get(tail_ == nullptr && n <= ChunkPool::kSmallChunkSize);
      if (tail_ == nullptr) {
        head_ = tail_ = c;
        head_off_ = 0;
      } else {
        tail_->next = c;
        tail_ = c;
      }
      tail_len_ = 0;
    }
    size_t k = tail_->capacity - tail_len_;
    if (k > n) k = n;
    std::memcpy(tail_->data + tail_len_, p, k);
    tail_len_ += static_cast<uint32_t>(k);
    p += k;
    n -= k;
  }
}

size_t ChunkQueue::read(uint8_t* dst, size_t n) {
  size_t done = 0;
  while (done < n && size_ > 0) {
    size_t end = head_ == tail_ ? tail_len_ : head_->capacity;
    size_t k = end - head_off_;
    if (k > n - done) k = n - done;
    std::memcpy(dst + done, head_->data + head_off_, k);
    done += k;
    consume(k);
  }
  return done;
}

void ChunkQueue::copy_to(ChunkQueue& dst, size_t offset, size_t n) const {
  assert(offset + n <= size_);
  if (n == 0) return;
  const Chunk* c = head_;
  size_t off = head_off_ + offset;  // offset within c
  for (;;) {
    size_t end = c == tail_ ? tail_len_ : c->capacity;
    if (off < end) break;
    off -= end;
    c = c->next;
  }
  while (n > 0) {
    size_t end = c == tail_ ? tail_len_ : c->capacity;
    size_t k = end - off;
    if (k > n) k = n;
    dst.append(c->data + off, k);
    n -= k;
    c = c->next;
    off = 0;
  }
}

void ChunkQueue::move_to(ChunkQueue& dst, size_t n) {
  assert(n <= size_);
  while (n > 0) {
    size_t end = head_ == tail_ ? tail_len_ : head_->capacity;
    size_t k = end - head_off_;
    if (k > n) k = n;
    dst.append(head_->data + head_off_, k);
    consume(k);
    n -= k;
  }
}

int ChunkQueue::peek_iovecs(iovec* out, int max) const {
  int i = 0;
  uint32_t off = head_off_;
  for (Chunk* c = head_; c != nullptr && i < max; c = c->next) {
    size_t end = c == tail_ ? tail_len_ : c->capacity;
    if (end > off) {
      out[i].iov_base = c->data + off;
      out[i].iov_len = end - off;
      ++i;
    }
    off = 0;
  }
  return i;
}

void ChunkQueue::consume(size_t n) {
  assert(n <= size_);
  size_ -= n;
  while (n > 0) {
    size_t end = head_ == tail_ ? tail_len_ : head_->capacity;
    size_t k = end - head_off_;
    if (k > n) {
      head_off_ += static_cast<uint32_t>(n);
      break;
    }
    n -= k;
    head_off_ += static_cast<uint32_t>(k);
    if (head_ == tail_) break;
    pop_head();
  }
  if (size_ == 0 && head_ != nullptr) {
    // Empty: keep nothing, so an idle stream or connection holds no chunk.
    pop_head();
  }
}

void ChunkQueue::pop_head() {
  Chunk* c = head_;
  head_ = c->next;
  if (head_ == nullptr) {
    tail_ = nullptr;
    tail_len_ = 0;
  }
  head_off_ = 0;
  pool_->put(c);
}

void ChunkQueue::clear() {
  while (head_ != nullptr) pop_head();
  size_ = 0;
}

}  // namespace ringlb::core::mem
