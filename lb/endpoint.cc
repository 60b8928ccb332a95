#include "lb/endpoint.h"

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

}  // namespace ringlb::lb
