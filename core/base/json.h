#pragma once
// JsonWriter: builds one JSON text into a string (the admin's /endpoints and /config). Commas
// and string escapes are its business, so callers cannot produce invalid JSON by forgetting one.
// Owner: whoever builds the text; any thread.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ringlb::core::base {

/// Appends `s` as a JSON string literal (quotes, escapes, control characters as \u00XX; bytes
/// that are not valid UTF-8 become U+FFFD so the result always parses).
void append_json_string(std::string& out, std::string_view s);

class JsonWriter {
 public:
  JsonWriter& begin_object();
  JsonWriter& end_object();
  JsonWriter& begin_array();
  JsonWriter& end_array();
  /// Inside an object: the next value's name.
  JsonWriter& key(std::string_view k);
  JsonWriter& value(std::string_view s);
  JsonWriter& value(const char* s) { return value(std::string_view(s)); }
  JsonWriter& value(const std::string& s) { return value(std::string_view(s)); }
  JsonWriter& value(bool b);
  JsonWriter& value(int64_t v);
  JsonWriter& value(uint64_t v);
  JsonWriter& value(int v) { return value(static_cast<int64_t>(v)); }
  JsonWriter& value(unsigned v) { return value(static_cast<uint64_t>(v)); }
  /// Finite numbers with up to 6 significant decimals; NaN and infinities become null.
  JsonWriter& value(double v);
  JsonWriter& null();
  /// The text so far (complete once every begin has its end).
  const std::string& text() const { return out_; }
  std::string take() { return std::move(out_); }

 private:
  void before_value();
  std::string out_;
  std::vector<bool> first_;  // per open container: nothing written in it yet
  bool after_key_ = false;
};

}  // namespace ringlb::core::base
