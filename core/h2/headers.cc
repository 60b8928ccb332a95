#include "core/h2/headers.h"

namespace ringlb::core::h2 {

void HeaderBlock::add(std::string_view name, std::string_view value, uint8_t flags) {
  Ref r{static_cast<uint32_t>(buf_.size()), static_cast<uint32_t>(name.size()),
        static_cast<uint32_t>(buf_.size() + name.size()), static_cast<uint32_t>(value.size()),
        flags};
  buf_.append(name);
  buf_.append(value);
  refs_.push_back(r);
  list_size_ += name.size() + value.size() + 32;
}

void HeaderBlock::clear() {
  buf_.clear();
  refs_.clear();
  list_size_ = 0;
}

void HeaderBlock::truncate(size_t count) {
  while (refs_.size() > count) {
    const Ref& r = refs_.back();
    list_size_ -= r.name_len + r.value_len + 32;
    buf_.resize(r.name_off);
    refs_.pop_back();
  }
}

std::string_view HeaderBlock::find(std::string_view name) const {
  for (const Ref& r : refs_) {
    if (std::string_view(buf_.data() + r.name_off, r.name_len) == name) {
      return std::string_view(buf_.data() + r.value_off, r.value_len);
    }
  }
  return {};
}

const nghttp2_nv* HeaderBlock::nva() {
  nv_.resize(refs_.size());
  auto* base = reinterpret_cast<uint8_t*>(buf_.data());
  for (size_t i = 0; i < refs_.size(); ++i) {
    const Ref& r = refs_[i];
    nv_[i] = nghttp2_nv{base + r.name_off, base + r.value_off, r.name_len, r.value_len, r.flags};
  }
  return nv_.data();
}

}  // namespace ringlb::core::h2
