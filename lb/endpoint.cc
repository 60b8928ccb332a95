#include "lb/endpoint.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstring>

namespace ringlb::lb {

namespace {

void append_bytes(std::string& out, const void* p, size_t n) {
  out.append(static_cast<const char*>(p), n);
}

}  // namespace

// The key is binary, not text: it only has to compare equal for the same address across
// snapshots, and packing the raw bytes avoids inet_ntop and locale work on the control thread.
// The family leads so a v4 and a v6 address can never collide. Weight and name are left out on
// purpose: a reweighted or renamed endpoint is still the same peer and keeps its pooled
// connections.
std::string endpoint_key(const Endpoint& e) {
  std::string key;
  const sa_family_t family = e.addr.ss_family;
  append_bytes(key, &family, sizeof(family));
  switch (family) {
    case AF_INET: {
      sockaddr_in sin;
      std::memcpy(&sin, &e.addr, sizeof(sin));
      append_bytes(key, &sin.sin_addr, sizeof(sin.sin_addr));
      append_bytes(key, &sin.sin_port, sizeof(sin.sin_port));
      break;
    }
    case AF_INET6: {
      sockaddr_in6 sin6;
      std::memcpy(&sin6, &e.addr, sizeof(sin6));
      append_bytes(key, &sin6.sin6_addr, sizeof(sin6.sin6_addr));
      append_bytes(key, &sin6.sin6_port, sizeof(sin6.sin6_port));
      // fe80::1%eth0 and fe80::1%eth1 are different peers.
      append_bytes(key, &sin6.sin6_scope_id, sizeof(sin6.sin6_scope_id));
      break;
    }
    default: {
      // AF_UNIX and anything else: the meaningful bytes are exactly addr_len of them.
      size_t len = e.addr_len;
      if (len > sizeof(e.addr)) len = sizeof(e.addr);
      if (len > sizeof(sa_family_t)) {
        append_bytes(key, reinterpret_cast<const char*>(&e.addr) + sizeof(sa_family_t),
                     len - sizeof(sa_family_t));
      }
      break;
    }
  }
  return key;
}

std::string endpoint_key_text(std::string_view key) {
  sa_family_t family;
  if (key.size() < sizeof(family)) return "?";
  std::memcpy(&family, key.data(), sizeof(family));
  const char* p = key.data() + sizeof(family);
  char ip[INET6_ADDRSTRLEN];
  uint16_t port;
  if (family == AF_INET && key.size() == sizeof(family) + 4 + 2) {
    std::memcpy(&port, p + 4, 2);
    if (inet_ntop(AF_INET, p, ip, sizeof ip) == nullptr) return "?";
    return std::string(ip) + ":" + std::to_string(ntohs(port));
  }
  if (family == AF_INET6 && key.size() == sizeof(family) + 16 + 2 + 4) {
    uint32_t scope;
    std::memcpy(&port, p + 16, 2);
    std::memcpy(&scope, p + 18, 4);
    if (inet_ntop(AF_INET6, p, ip, sizeof ip) == nullptr) return "?";
    std::string text = "[" + std::string(ip);
    if (scope != 0) text += "%" + std::to_string(scope);
    return text + "]:" + std::to_string(ntohs(port));
  }
  return "?";
}

}  // namespace ringlb::lb
