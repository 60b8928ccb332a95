#include "core/demo/client.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>

#include "core/demo/options.h"
#include "core/h2/connection.h"
#include "core/h2/host.h"
#include "core/io/net.h"
#include "core/io/timer.h"
#include "proto/grpc.h"

namespace ringlb::core::demo {
namespace {

constexpr int kInFlight = 32;
constexpr int64_t kSilenceNs = 10'000'000'000;  // a hung proxy must fail the demo, not hang it

// What outlives the connection object (the host frees it once its ops have completed).
struct Run {
  CallTally tally;
  int done = 0;
  bool finished = false;  // the connection is closed and every op has completed

  void error(std::string what) {
    if (tally.first_error.empty()) tally.first_error = std::move(what);
  }
};

class ClientHost final : public h2::Host {
 public:
  ClientHost() : h2::Host(0) {}
  bool attach(io::IoBackend backend, std::string& error) {
    std::unique_ptr<io::Reactor> r = io::make_reactor(backend, error);
    if (!r) return false;
    set_reactor(std::move(r));
    return true;
  }
};

class ClientConn final : public h2::H2Connection, io::TimerHandler {
 public:
  ClientConn(ClientHost& host, Run& run, int calls, uint16_t port);
  /// Opens the socket and the session and starts connecting; failures close the connection.
  void start();

 private:
  struct Call {
    std::string backend;
    std::string body;
    int http_status = 0;
    int grpc_status = -1;
    size_t sent = 0;  // of the request
  };

  void on_connected(int res) override;
  void after_input() override;
  void on_close(const char* why) override;
  void on_released() override;
  void on_timer(io::Timer&) override;
  void submit_more();
  bool submit();
  void finish_call(Call& call, uint32_t error_code);

  static int on_header(nghttp2_session* session, const nghttp2_frame* frame, const uint8_t* name,
                       size_t namelen, const uint8_t* value, size_t valuelen, uint8_t, void*);
  static int on_data_chunk(nghttp2_session* session, uint8_t, int32_t id, const uint8_t* data,
                           size_t len, void*);
  static int on_stream_close(nghttp2_session* session, int32_t id, uint32_t error_code, void* ud);
  static ssize_t read_request(nghttp2_session*, int32_t, uint8_t* buf, size_t length,
                              uint32_t* flags, nghttp2_data_source* source, void* ud);

  Run& run_;
  int calls_;
  int submitted_ = 0;
  bool ending_ = false;  // GOAWAY submitted
  sockaddr_in addr_{};
  std::string authority_;
  std::string request_;  // the framed request message, the same for every call
  Call slots_[kInFlight];
  std::vector<Call*> free_;
  io::Timer silence_;
};

std::string_view as_view(const uint8_t* p, size_t n) {
  return {reinterpret_cast<const char*>(p), n};
}

ClientConn::ClientConn(ClientHost& host, Run& run, int calls, uint16_t port)
    : h2::H2Connection(host),
      run_(run),
      calls_(calls),
      authority_("127.0.0.1:" + std::to_string(port)) {
  addr_.sin_family = AF_INET;
  addr_.sin_port = htons(port);
  addr_.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  // A protobuf `{string text = 1}` message, so a real gRPC service would parse it too.
  std::string_view text = "hello from ringlb demo";
  uint8_t prefix[proto::kFrameHeaderSize];
  proto::encode_frame_header({false, static_cast<uint32_t>(2 + text.size())}, prefix);
  request_.append(as_view(prefix, sizeof prefix));
  request_ += {'\x0a', static_cast<char>(text.size())};
  request_ += text;
  for (Call& slot : slots_) free_.push_back(&slot);
  silence_.handler = this;
}

void ClientConn::start() {
  static nghttp2_session_callbacks* const callbacks = [] {
    nghttp2_session_callbacks* cbs;
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    return cbs;
  }();
  fd_ = io::make_client_socket(AF_INET);
  if (fd_ < 0) {
    run_.error(std::string("socket: ") + strerror(-std::exchange(fd_, -1)));
    close("no socket");
    return;
  }
  if (nghttp2_session_client_new3(&session_, callbacks, this, nullptr,
                                  host_.session_heap().mem()) != 0) {
    close("nghttp2 session setup failed");
    return;
  }
  nghttp2_settings_entry settings[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0}};
  nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, settings, 1);
  host_.reactor().connect(fd_, reinterpret_cast<const sockaddr*>(&addr_), sizeof addr_,
                          connect_op_);
  host_.timers().arm(silence_, host_.now() + kSilenceNs);
}

void ClientConn::on_connected(int res) {
  if (res < 0) {
    run_.error("connect to " + authority_ + ": " + strerror(-res));
    close("connect failed");
    return;
  }
  start_io();
  submit_more();
}

// After each read: more calls fit in, or all are done and the session can end (GOAWAY; the
// connection then closes once nghttp2 wants neither to read nor to write).
void ClientConn::after_input() {
  host_.timers().arm(silence_, host_.now() + kSilenceNs);
  if (run_.done < calls_) {
    submit_more();
  } else if (!ending_) {
    ending_ = true;
    nghttp2_session_terminate_session(session_, NGHTTP2_NO_ERROR);
  }
}

void ClientConn::on_close(const char* why) {
  host_.timers().cancel(silence_);
  if (run_.done < calls_) run_.error(std::string("connection closed: ") + why);
}

void ClientConn::on_released() {
  run_.finished = true;
  host_.retire(this);
}

void ClientConn::on_timer(io::Timer&) {
  run_.error("no answer within 10 s");
  close("no answer within 10 s");
}

void ClientConn::submit_more() {
  while (!free_.empty() && submitted_ < calls_ && submit()) {
  }
  mark_dirty();
}

bool ClientConn::submit() {
  Call* call = free_.back();
  call->backend.clear();  // clear() keeps the capacity: the slots are reused
  call->body.clear();
  call->http_status = 0;
  call->grpc_status = -1;
  call->sent = 0;
  nghttp2_nv nva[] = {make_nv(":method", "POST"),
                      make_nv(":scheme", "http"),
                      make_nv(":path", "/demo.Echo/Say"),
                      make_nv(":authority", authority_),
                      make_nv("content-type", "application/grpc"),
                      make_nv("te", "trailers")};
  nghttp2_data_provider body{{.ptr = call}, read_request};
  if (nghttp2_submit_request(session_, nullptr, nva, std::size(nva), &body, call) < 0) {
    return false;
  }
  free_.pop_back();
  ++submitted_;
  return true;
}

void ClientConn::finish_call(Call& call, uint32_t error_code) {
  ++run_.done;
  free_.push_back(&call);
  if (error_code != NGHTTP2_NO_ERROR) {
    run_.error(std::string("stream reset: ") + nghttp2_http2_strerror(error_code));
  } else if (call.http_status != 200) {
    run_.error("HTTP status " + std::to_string(call.http_status));
  } else if (call.grpc_status != 0) {
    run_.error("grpc-status " + std::to_string(call.grpc_status));
  } else if (call.body != request_) {
    run_.error("the reply did not echo the request");
  } else {
    ++run_.tally.by_backend[call.backend.empty() ? "(no x-backend)" : call.backend];
    return;
  }
  ++run_.tally.failed;
}

int ClientConn::on_header(nghttp2_session* session, const nghttp2_frame* frame, const uint8_t* name,
                          size_t namelen, const uint8_t* value, size_t valuelen, uint8_t, void*) {
  auto* call =
      static_cast<Call*>(nghttp2_session_get_stream_user_data(session, frame->hd.stream_id));
  std::string_view n = as_view(name, namelen), v = as_view(value, valuelen);
  if (call == nullptr) return 0;
  if (n == ":status") parse_number(v, call->http_status);
  if (n == "x-backend") call->backend.assign(v);
  if (n == "grpc-status") parse_number(v, call->grpc_status);
  return 0;
}

int ClientConn::on_data_chunk(nghttp2_session* session, uint8_t, int32_t id, const uint8_t* data,
                              size_t len, void*) {
  auto* call = static_cast<Call*>(nghttp2_session_get_stream_user_data(session, id));
  if (call != nullptr && call->body.size() < kMaxMessage) call->body.append(as_view(data, len));
  return 0;
}

int ClientConn::on_stream_close(nghttp2_session* session, int32_t id, uint32_t error_code,
                                void* ud) {
  auto* call = static_cast<Call*>(nghttp2_session_get_stream_user_data(session, id));
  if (call != nullptr) static_cast<ClientConn*>(ud)->finish_call(*call, error_code);
  return 0;
}

ssize_t ClientConn::read_request(nghttp2_session*, int32_t, uint8_t* buf, size_t length,
                                 uint32_t* flags, nghttp2_data_source* source, void* ud) {
  const std::string& request = static_cast<ClientConn*>(ud)->request_;
  auto* call = static_cast<Call*>(source->ptr);
  size_t n = std::min(length, request.size() - call->sent);
  memcpy(buf, request.data() + call->sent, n);
  call->sent += n;
  if (call->sent == request.size()) *flags |= NGHTTP2_DATA_FLAG_EOF;
  return static_cast<ssize_t>(n);
}

}  // namespace

CallTally make_demo_calls(int calls, uint16_t port, io::IoBackend backend) {
  Run run;
  ClientHost host;
  std::string error;
  if (!host.attach(backend, error)) {
    run.error(error);
  } else {
    (new ClientConn(host, run, calls, port))->start();  // the host frees it once released
    while (!run.finished) host.turn(-1);
  }
  run.tally.failed += calls - run.done;  // never answered
  return std::move(run.tally);
}

}  // namespace ringlb::core::demo
