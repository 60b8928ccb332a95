#pragma once
// Endpoint and EndpointSet: the immutable view of a cluster's members that pickers work over.
// Built by the control thread (discovery/), read by shards. Never mutated after construction.
#include <sys/socket.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace ringlb::lb {

struct Endpoint {
  sockaddr_storage addr{};
  socklen_t addr_len = 0;
  uint32_t weight = 1;  // >= 1
  std::string name;     // "10.0.1.5:50051", for logs and grpc-message texts
};

/// An immutable snapshot of one cluster's endpoints. Shared between threads by shared_ptr to
/// const; the index of an endpoint is stable for the life of the snapshot.
struct EndpointSet {
  std::vector<Endpoint> endpoints;
  uint64_t version = 0;
  // Why the set is what it is when that matters to a caller, e.g. why it is empty ("DNS name
  // x.local: NXDOMAIN for 5m"). Shown to clients in grpc-message.
  std::string note;

  size_t size() const { return endpoints.size(); }
  bool empty() const { return endpoints.empty(); }
};

using EndpointSetPtr = std::shared_ptr<const EndpointSet>;

/// Key for pools: "same endpoint" across snapshots (address bytes + port).
std::string endpoint_key(const Endpoint& e);
/// The address an endpoint_key stands for, as text ("10.0.1.5:50051", "[fe80::1%2]:50051"), for
/// log lines where only the key is at hand; "?" for a key that is not an IP address's.
std::string endpoint_key_text(std::string_view key);

}  // namespace ringlb::lb
