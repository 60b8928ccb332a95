#include "core/mem/session_heap.h"

#include <bit>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>

namespace ringlb::core::mem {
namespace {

// The header in front of every block: which class it came from (kLarge: plain malloc) and, for
// realloc, how many bytes the caller may use.
constexpr uint32_t kLarge = 0xffffffff;
struct Header {
  uint32_t cls;
  uint32_t pad;
  size_t usable;
};
static_assert(sizeof(Header) == SessionHeap::kHeader);

Header* header_of(void* p) {
  return reinterpret_cast<Header*>(static_cast<char*>(p) - sizeof(Header));
}

// Smallest class whose block holds n bytes plus the header, or kLarge.
uint32_t class_for(size_t n) {
  if (n > SessionHeap::kMaxBlock) return kLarge;  // before the addition below can wrap
  size_t need = n + sizeof(Header);
  if (need > SessionHeap::kMaxBlock) return kLarge;
  if (need <= SessionHeap::kMinBlock) return 0;
  // log2 of the block size, rounded up, less log2(kMinBlock).
  return static_cast<uint32_t>(std::bit_width(need - 1)) -
         static_cast<uint32_t>(std::bit_width(SessionHeap::kMinBlock - 1));
}

}  // namespace

size_t SessionHeap::block_for(size_t n) {
  uint32_t c = class_for(n);
  return c == kLarge ? 0 : kMinBlock << c;
}

SessionHeap::SessionHeap(size_t max_idle_bytes) {
  mem_ = nghttp2_mem{this, mem_malloc, mem_free, mem_calloc, mem_realloc};
  for (size_t c = 0; c < kClasses; ++c) max_idle_[c] = max_idle_bytes / (kMinBlock << c);
}

SessionHeap::~SessionHeap() {
  for (Free*& list : free_) {
    while (list != nullptr) {
      Free* f = list;
      list = f->next;
      std::free(f);
    }
  }
}

size_t SessionHeap::idle() const {
  size_t n = 0;
  for (size_t v : idle_) n += v;
  return n;
}

void* SessionHeap::allocate(size_t n) {
  uint32_t c = class_for(n);
  void* block;
  size_t usable;
  if (c == kLarge) {
    if (n > SIZE_MAX - sizeof(Header)) return nullptr;
    block = std::malloc(n + sizeof(Header));
    usable = n;
  } else {
    usable = (kMinBlock << c) - sizeof(Header);
    if (free_[c] != nullptr) {
      block = free_[c];
      free_[c] = free_[c]->next;
      --idle_[c];
    } else {
      block = std::malloc(kMinBlock << c);
    }
  }
  if (block == nullptr) return nullptr;  // nghttp2 turns this into NGHTTP2_ERR_NOMEM
  auto* h = static_cast<Header*>(block);
  h->cls = c;
  h->usable = usable;
  ++in_use_;
  return h + 1;
}

void SessionHeap::release(void* p) {
  if (p == nullptr) return;
  Header* h = header_of(p);
  --in_use_;
  uint32_t c = h->cls;
  if (c == kLarge || idle_[c] >= max_idle_[c]) {
    std::free(h);
    return;
  }
  auto* f = reinterpret_cast<Free*>(h);
  f->next = free_[c];
  free_[c] = f;
  ++idle_[c];
}

void* SessionHeap::reallocate(void* p, size_t n) {
  if (p == nullptr) return allocate(n);
  Header* h = header_of(p);
  if (n <= h->usable && h->cls != kLarge) return p;  // still fits its block
  void* q = allocate(n);
  if (q == nullptr) return nullptr;  // p stays valid, as realloc promises
  std::memcpy(q, p, h->usable < n ? h->usable : n);
  release(p);
  return q;
}

void* SessionHeap::mem_malloc(size_t n, void* self) {
  return static_cast<SessionHeap*>(self)->allocate(n);
}

void SessionHeap::mem_free(void* p, void* self) {
  static_cast<SessionHeap*>(self)->release(p);
}

void* SessionHeap::mem_calloc(size_t n, size_t size, void* self) {
  if (size != 0 && n > SIZE_MAX / size) return nullptr;
  void* p = static_cast<SessionHeap*>(self)->allocate(n * size);
  if (p != nullptr) std::memset(p, 0, n * size);
  return p;
}

void* SessionHeap::mem_realloc(void* p, size_t n, void* self) {
  return static_cast<SessionHeap*>(self)->reallocate(p, n);
}

}  // namespace ringlb::core::mem
