#include "core/proxy/call_record.h"

#include <cstring>

namespace ringlb::core::proxy {

size_t call_flag_names(uint16_t flags, char* out) {
  static constexpr const char* kNames[] = {"NR", "UH", "UF", "UT", "DT", "URX", "DC",
                                           "UR", "UC", "UO", "RB", "SD", "IR"};
  size_t n = 0;
  for (size_t i = 0; i < sizeof kNames / sizeof kNames[0]; ++i) {
    if ((flags >> i & 1u) == 0) continue;
    if (n > 0) out[n++] = ',';
    size_t len = std::strlen(kNames[i]);
    std::memcpy(out + n, kNames[i], len);
    n += len;
  }
  if (n == 0) out[n++] = '-';
  out[n] = '\0';
  return n;
}

}  // namespace ringlb::core::proxy
