#pragma once
// What `ringlb demo` and `ringlb backend` share: argument parsing, the reactor choice and the
// nghttp2 header helper. Parsing runs on the main thread; make_nv on any.
#include <nghttp2/nghttp2.h>

#include <charconv>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <optional>
#include <string_view>

#include "core/io/reactor.h"

namespace ringlb::core::demo {

/// gRPC's default receive limit; a bigger request gets RESOURCE_EXHAUSTED instead of our RAM.
constexpr uint32_t kMaxMessage = 4 * 1024 * 1024;

/// Parses the whole of `s` as a decimal number; false on anything else or on overflow.
template <class T>
bool parse_number(std::string_view s, T& out) {
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && end == s.data() + s.size();
}

using OptionHandler = std::function<bool(std::string_view key, std::string_view value)>;

/// Walks "--key value", "--key=value" and bare "--flag" arguments (a key listed in `flags` takes
/// no value), calling on_option(key, value). Prints why and the usage, and returns false, on the
/// first argument it or on_option rejects.
bool parse_options(int argc, char** argv, std::initializer_list<std::string_view> flags,
                   const char* usage, const OptionHandler& on_option);

/// "auto", "io_uring" or "epoll", as in the proxy's `io_backend` setting. False on anything else.
bool parse_io_backend(std::string_view text, io::IoBackend& out);

/// Probes the reactor once (main thread, before any loop starts). Logs why on failure.
std::optional<io::IoBackend> pick_reactor(io::IoBackend want);

/// A header field whose name and value outlive the frame (literals, or strings owned by the loop
/// or the client), so nghttp2 need not copy them.
inline nghttp2_nv make_nv(std::string_view name, std::string_view value) {
  return {reinterpret_cast<uint8_t*>(const_cast<char*>(name.data())),
          reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())), name.size(), value.size(),
          NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE};
}

}  // namespace ringlb::core::demo
