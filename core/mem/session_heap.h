#pragma once
// SessionHeap: the allocator a shard hands nghttp2 (nghttp2_mem) for every session it owns.
// Owner: one shard; never shared across threads.
//
// nghttp2 allocates per call: the stream, the outbound items, copies of every header list it is
// given (submit_request/response/trailer). Here those come from per-size-class free lists, so a
// call in the steady state costs no malloc/free. Blocks larger than the biggest class go to
// malloc (from 8 KiB on, pages of their own: session_heap.cc); each class keeps at most
// `max_idle_bytes` of free blocks, the rest goes back, so a burst of 10,000 streams does not pin
// its memory for ever.
#include <nghttp2/nghttp2.h>

#include <cstddef>
#include <cstdint>

namespace ringlb::core::mem {

class SessionHeap {
 public:
  // Block sizes, header included: 64 B to 1 KiB in powers of two. Per-call allocations
  // (streams, outbound items, header list copies) are below it; the larger ones come once per
  // session (its struct, HPACK rings, stream map), where a power-of-two block would waste up to
  // half of each for as long as the connection lives: those get malloc's exact fit.
  static constexpr size_t kClasses = 5;
  static constexpr size_t kMinBlock = 64;
  static constexpr size_t kMaxBlock = kMinBlock << (kClasses - 1);
  static constexpr size_t kHeader = 16;  // keeps malloc's 16-byte alignment

  explicit SessionHeap(size_t max_idle_bytes = 256 * 1024);
  ~SessionHeap();
  SessionHeap(const SessionHeap&) = delete;
  SessionHeap& operator=(const SessionHeap&) = delete;

  /// The block size (header included) a request of `n` bytes gets, 0 for plain malloc.
  static size_t block_for(size_t n);

  /// For nghttp2_session_*_new3. Valid as long as this object.
  nghttp2_mem* mem() { return &mem_; }

  void* allocate(size_t n);
  void release(void* p);
  void* reallocate(void* p, size_t n);

  /// Blocks handed out and not yet released (all sizes), and free blocks kept.
  size_t in_use() const { return in_use_; }
  /// Bytes of the blocks handed out (headers and whole pages of mapped blocks included).
  size_t in_use_bytes() const { return in_use_bytes_; }
  size_t idle() const;
  /// Frees idle blocks beyond `keep` of each class (after a burst: Host's trim).
  void shrink(size_t keep);

 private:
  struct Free {
    Free* next;
  };
  static void* mem_malloc(size_t n, void* self);
  static void mem_free(void* p, void* self);
  static void* mem_calloc(size_t n, size_t size, void* self);
  static void* mem_realloc(void* p, size_t n, void* self);

  nghttp2_mem mem_;
  Free* free_[kClasses] = {};
  size_t idle_[kClasses] = {};
  size_t max_idle_[kClasses] = {};
  size_t in_use_ = 0;
  size_t in_use_bytes_ = 0;
};

}  // namespace ringlb::core::mem
