#pragma once
// grpc.health.v1 messages by hand (proto/health.proto): HealthCheckRequest is one string field
// and HealthCheckResponse one enum field, so the control thread's health checker encodes and
// decodes them here without the protobuf runtime. Pure functions; any thread. Never includes
// core/.
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace ringlb::proto {

/// HealthCheckResponse.ServingStatus. Values past 3 can arrive from newer servers: they are
/// kept as they are and read as "not SERVING".
enum class ServingStatus : int {
  kUnknown = 0,
  kServing = 1,
  kNotServing = 2,
  kServiceUnknown = 3,  // Watch only: the server does not know the service (yet)
};

/// "UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN", or "status N".
std::string serving_status_name(ServingStatus s);

/// The HealthCheckRequest message for `service` ("" = the server as a whole), unframed.
std::string encode_health_request(std::string_view service);

/// Decodes one HealthCheckResponse message (unframed). Unknown fields are skipped, a missing
/// status reads as UNKNOWN (proto3 default). nullopt if the bytes are not a valid message.
std::optional<ServingStatus> decode_health_response(std::span<const uint8_t> message);

}  // namespace ringlb::proto
