#include "core/proxy/retry_buffer.h"

#include <cassert>

namespace ringlb::core::proxy {

void RetryBuffer::reset(size_t limit) {
  q_.clear();
  base_ = 0;
  limit_ = limit;
  truncated_ = false;
  committed_ = false;
}

void RetryBuffer::append(const uint8_t* p, size_t n) {
  q_.append(p, n);
  // Past the limit the body can no longer be replayed from the start: from now on bytes go
  // once every reader has passed them. Until some are dropped nothing is lost, but a call
  // that has passed its limit stays truncated so its memory stays bounded.
  if (!committed_ && end() > limit_) truncated_ = true;
}

void RetryBuffer::copy_to(mem::ChunkQueue& dst, uint64_t pos, size_t n) const {
  assert(pos >= base_ && pos + n <= end());
  q_.copy_to(dst, static_cast<size_t>(pos - base_), n);
}

void RetryBuffer::commit(uint64_t pos) {
  committed_ = true;
  release_before(pos);
}

void RetryBuffer::release_before(uint64_t pos) {
  if (!committed_ && !truncated_) return;
  if (pos > end()) pos = end();
  if (pos > base_) {
    q_.consume(static_cast<size_t>(pos - base_));
    base_ = pos;
  }
}

}  // namespace ringlb::core::proxy
