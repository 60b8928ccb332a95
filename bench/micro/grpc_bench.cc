// gRPC wire helpers that run once or more per call: grpc-timeout in both directions, the 5-byte
// message header, and grpc-message percent-encoding (error paths only, but cheap to watch).
#include <benchmark/benchmark.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <string_view>

#include "proto/grpc.h"

namespace {

using namespace std::chrono_literals;

void BM_ParseGrpcTimeout(benchmark::State& state) {
  constexpr std::array<std::string_view, 6> kValues = {"100m",      "1S", "5000u",
                                                       "99999999n", "2M", "30S"};
  size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(ringlb::proto::parse_grpc_timeout(kValues[i]));
    i = i + 1 == kValues.size() ? 0 : i + 1;
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}

void BM_ParseGrpcTimeoutInvalid(benchmark::State& state) {
  std::string_view value = "123456789S";
  for (auto _ : state) {
    benchmark::DoNotOptimize(value);
    benchmark::DoNotOptimize(ringlb::proto::parse_grpc_timeout(value));
  }
}

void BM_FormatGrpcTimeout(benchmark::State& state) {
  // Deadlines as a proxy sees them: what is left of the client's budget, ns to minutes.
  constexpr std::array<std::chrono::nanoseconds, 6> kValues = {
      999ns, 42ms, 1'234'567'891ns, 30s, 5min, std::chrono::hours(50'000)};
  char out[16];
  size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(ringlb::proto::format_grpc_timeout(kValues[i], out));
    benchmark::ClobberMemory();
    i = i + 1 == kValues.size() ? 0 : i + 1;
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()));
}

void BM_EncodeFrameHeader(benchmark::State& state) {
  uint8_t out[ringlb::proto::kFrameHeaderSize];
  uint32_t length = 0x01020304;
  for (auto _ : state) {
    benchmark::DoNotOptimize(length);
    ringlb::proto::encode_frame_header({false, length}, out);
    benchmark::ClobberMemory();
  }
}

void BM_DecodeFrameHeader(benchmark::State& state) {
  const uint8_t in[] = {0, 0x01, 0x02, 0x03, 0x04, 0xAA};
  for (auto _ : state) {
    benchmark::DoNotOptimize(in);
    benchmark::DoNotOptimize(ringlb::proto::decode_frame_header(in));
  }
}

void BM_PercentEncode(benchmark::State& state) {
  std::string_view msg = "upstream 10.0.1.5:50051 reset the stream: 100% of retries used, \xC3\xA9";
  for (auto _ : state) {
    benchmark::DoNotOptimize(ringlb::proto::percent_encode(msg));
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * msg.size()));
}

void BM_IsGrpcContentType(benchmark::State& state) {
  std::string_view value = "application/grpc+proto";
  for (auto _ : state) {
    benchmark::DoNotOptimize(value);
    benchmark::DoNotOptimize(ringlb::proto::is_grpc_content_type(value));
  }
}

}  // namespace

BENCHMARK(BM_ParseGrpcTimeout);
BENCHMARK(BM_ParseGrpcTimeoutInvalid);
BENCHMARK(BM_FormatGrpcTimeout);
BENCHMARK(BM_EncodeFrameHeader);
BENCHMARK(BM_DecodeFrameHeader);
BENCHMARK(BM_PercentEncode);
BENCHMARK(BM_IsGrpcContentType);
