#include "core/mem/session_heap.h"

#include <sys/mman.h>

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
constexpr uint32_t kMapped = 0xfffffffe;
// Blocks this large get pages of their own (mmap): nghttp2's 16 KiB outbound frame buffer, one
// per session, of which an idle connection has written only the first page. From malloc it
// would share pages with its neighbours, which touch them; mapped, the untouched pages cost no
// memory, and a closed connection's go back to the system at once.
constexpr size_t kMapAt = 8 * 1024;
constexpr size_t kPage = 4096;
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
  shrink(0);
}

void SessionHeap::shrink(size_t keep) {
  for (size_t c = 0; c < kClasses; ++c) {
    while (idle_[c] > keep && free_[c] != nullptr) {
      Free* f = free_[c];
      free_[c] = f->next;
      --idle_[c];
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
    if (n > SIZE_MAX - sizeof(Header) - kPage) return nullptr;
    if (n + sizeof(Header) >= kMapAt) {
      const size_t len = (n + sizeof(Header) + kPage - 1) / kPage * kPage;
      block = mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (block == MAP_FAILED) return nullptr;
      c = kMapped;
      usable = len - sizeof(Header);
    } else {
      block = std::malloc(n + sizeof(Header));
      usable = n;
    }
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
  in_use_bytes_ += usable + sizeof(Header);
  return h + 1;
}

void SessionHeap::release(void* p) {
  if (p == nullptr) return;
  Header* h = header_of(p);
  --in_use_;
  in_use_bytes_ -= h->usable + sizeof(Header);
  uint32_t c = h->cls;
  if (c == kMapped) {
    munmap(h, h->usable + sizeof(Header));
    return;
  }
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
  if (n <= h->usable && h->cls != kLarge) return p;  // still fits its block (or its pages)
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
