#pragma once
// HeaderBlock: one header list (request, response or trailers) copied out of nghttp2's
// callbacks and handed back to nghttp2 on the other session. Owner: the shard of its stream.
// Capacity is kept across reuse (streams are pooled), so steady traffic allocates nothing.
#include <nghttp2/nghttp2.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ringlb::core::h2 {

class HeaderBlock {
 public:
  void add(std::string_view name, std::string_view value, uint8_t flags = NGHTTP2_NV_FLAG_NONE);
  void clear();
  /// Drops the fields after the first `count` (count <= count()).
  void truncate(size_t count);
  bool empty() const { return refs_.empty(); }
  size_t count() const { return refs_.size(); }
  /// RFC 9113 size: names + values + 32 per field.
  size_t list_size() const { return list_size_; }
  /// Value of the first field called `name`, or empty.
  std::string_view find(std::string_view name) const;
  /// Calls `f(name, value)` for each field, in order.
  template <class F>
  void for_each(F&& f) const {
    for (const Ref& r : refs_) {
      f(std::string_view(buf_.data() + r.name_off, r.name_len),
        std::string_view(buf_.data() + r.value_off, r.value_len));
    }
  }
  /// nghttp2's view of the fields; valid until the next add()/clear(). nghttp2 copies on submit.
  const nghttp2_nv* nva();

 private:
  struct Ref {
    uint32_t name_off, name_len, value_off, value_len;
    uint8_t flags;
  };
  std::string buf_;
  std::vector<Ref> refs_;
  std::vector<nghttp2_nv> nv_;
  size_t list_size_ = 0;
};

}  // namespace ringlb::core::h2
