#pragma once
// RetryBuffer: a call's request body, kept until the call commits so that another attempt can
// send it again from the start. Owner: the shard of its call.
//
// Bytes are held from `base()` to `end()` (absolute positions in the body). Each attempt reads
// at its own position. While the call may still be replayed nothing is dropped; once it commits
// (the response was accepted) or the body outgrows `limit` (the call is then "truncated": a byte
// some attempt sent is gone, so no other attempt can start over), bytes every reader has passed
// are dropped at once and the buffer is just the window between client and backend.
#include <cstddef>
#include <cstdint>

#include "core/mem/buffer.h"

namespace ringlb::core::proxy {

class RetryBuffer {
 public:
  void set_pool(mem::ChunkPool* pool) { q_.set_pool(pool); }
  /// Empties the buffer and starts a new body with `limit` bytes of replay room.
  void reset(size_t limit);

  void append(const uint8_t* p, size_t n);
  /// Absolute positions: [base, end) is held.
  uint64_t base() const { return base_; }
  uint64_t end() const { return base_ + q_.size(); }
  size_t held() const { return q_.size(); }
  /// Copies `n` bytes at absolute position `pos` (base <= pos, pos + n <= end) to `dst`.
  void copy_to(mem::ChunkQueue& dst, uint64_t pos, size_t n) const;

  /// True while every byte of the body so far is held (an attempt could start over).
  bool replayable() const { return !truncated_; }
  bool truncated() const { return truncated_; }
  /// The call committed: no attempt will start over. Bytes before `pos` may go.
  void commit(uint64_t pos);
  /// Readers have all passed `pos`; drops what is before it if nothing can replay any more.
  void release_before(uint64_t pos);

 private:
  mem::ChunkQueue q_;
  uint64_t base_ = 0;
  size_t limit_ = 0;
  bool truncated_ = false;
  bool committed_ = false;
};

}  // namespace ringlb::core::proxy
