#pragma once
// Byte buffers for the data path. Owner: one shard; never shared across threads.
// ChunkPool hands out fixed-size chunks from a free list, so steady-state traffic allocates
// nothing. ChunkQueue is a FIFO of bytes over chunks, used for per-stream bodies (bounded by
// HTTP/2 flow control) and per-connection output (bounded by a high-water mark).
#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>

namespace ringlb::core::mem {

/// Prints why and aborts: out of memory is never an exception on shard threads (DESIGN.md).
[[noreturn]] void out_of_memory(size_t bytes);

struct Chunk {
  Chunk* next = nullptr;
  uint32_t capacity = 0;  // kChunkSize or kSmallChunkSize
  uint8_t data[1];        // `capacity` bytes follow
};

class ChunkPool {
 public:
  static constexpr size_t kHeader = offsetof(Chunk, data);
  static constexpr size_t kChunkSize = 16 * 1024 - kHeader;
  // A queue that starts empty with a small write (a unary gRPC message, a few frames) gets a
  // small chunk: 10,000 calls in flight must not pin 16 KiB each for 70-byte bodies.
  static constexpr size_t kSmallChunkSize = 1024 - kHeader;
  /// Keeps at most `max_idle` free chunks of each size; more are returned to the allocator so
  /// a burst does not pin memory for ever.
  explicit ChunkPool(size_t max_idle = 256) : max_idle_(max_idle) {}
  ~ChunkPool();
  ChunkPool(const ChunkPool&) = delete;
  ChunkPool& operator=(const ChunkPool&) = delete;

  Chunk* get(bool small = false);
  void put(Chunk* c);
  size_t in_use() const { return in_use_; }
  /// Payload bytes of the chunks handed out and not yet returned.
  size_t in_use_bytes() const { return in_use_bytes_; }
  size_t idle() const { return idle_ + idle_small_; }
  /// Payload bytes of the free chunks kept.
  size_t idle_bytes() const { return idle_ * kChunkSize + idle_small_ * kSmallChunkSize; }
  /// Frees idle chunks beyond `keep` of each size (after a burst: Host's trim).
  void shrink(size_t keep);

 private:
  Chunk* free_ = nullptr;
  Chunk* free_small_ = nullptr;
  size_t idle_ = 0;
  size_t idle_small_ = 0;
  size_t in_use_ = 0;
  size_t in_use_bytes_ = 0;
  size_t max_idle_;
};

class ChunkQueue {
 public:
  ChunkQueue() = default;
  explicit ChunkQueue(ChunkPool* pool) : pool_(pool) {}
  ~ChunkQueue() { clear(); }
  ChunkQueue(const ChunkQueue&) = delete;
  ChunkQueue& operator=(const ChunkQueue&) = delete;

  void set_pool(ChunkPool* pool) { pool_ = pool; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }

  void append(const uint8_t* p, size_t n);
  /// Copies up to `n` bytes out and drops them. Returns the count copied.
  size_t read(uint8_t* dst, size_t n);
  /// Fills up to `max` iovecs from the front without consuming. Returns how many were filled.
  int peek_iovecs(iovec* out, int max) const;
  /// Drops `n` bytes from the front (n <= size()).
  void consume(size_t n);
  /// Appends a copy of `n` bytes starting `offset` bytes from the front to `dst`, keeping them
  /// here (offset + n <= size()). Walks the chunks from the front: for bounded queues.
  void copy_to(ChunkQueue& dst, size_t offset, size_t n) const;
  /// Moves `n` bytes (n <= size()) from the front of this queue to the back of `dst`: one copy,
  /// chunk by chunk.
  void move_to(ChunkQueue& dst, size_t n);
  /// Drops everything.
  void clear();

 private:
  void pop_head();
  ChunkPool* pool_ = nullptr;
  Chunk* head_ = nullptr;
  Chunk* tail_ = nullptr;
  uint32_t head_off_ = 0;  // read position in head_
  uint32_t tail_len_ = 0;  // bytes written in tail_
  size_t size_ = 0;
};

}  // namespace ringlb::core::mem
