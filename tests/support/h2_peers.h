#pragma once
// Test support: in-memory HTTP/2 peers (plain nghttp2 sessions, no sockets) that speak to ringlb
// through a MemoryReactor, or to each other: a client (H2Client) and a backend (H2Backend, one
// server connection). Shared by the proxy unit tests and the HTTP/2 path micro benchmark.
// Owner: the one thread that drives them.
//
// Both peers give flow-control credit back by hand, stream by stream, so a test can make one
// stream stop reading (its window closes) while the connection and the other streams go on.
// Per-stream state is pooled and kept until recycle(): a steady benchmark allocates nothing per
// call, and a test can still look at a stream after it closed.
#include <nghttp2/nghttp2.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/h2/headers.h"

namespace ringlb::test {

inline std::string_view sv(const uint8_t* p, size_t n) {
  return {reinterpret_cast<const char*>(p), n};
}
/// `n` bytes that differ at every offset (seeded), so a misplaced or lost byte shows.
std::string pattern(size_t n, uint32_t seed = 1);

/// One nghttp2 session in memory.
class H2Peer {
 public:
  H2Peer() = default;
  H2Peer(const H2Peer&) = delete;
  H2Peer& operator=(const H2Peer&) = delete;
  virtual ~H2Peer();

  /// Everything the session wants to send, into `out` (replacing it). False on a session error.
  bool pull(std::vector<uint8_t>& out);
  /// Feeds what the other side sent. False on a session error.
  bool push(const std::vector<uint8_t>& in);
  const std::string& error() const { return error_; }
  nghttp2_session* session() const { return session_; }
  /// Connection-level window the other side still grants us (what we may send).
  int32_t send_window() const { return nghttp2_session_get_remote_window_size(session_); }
  /// GOAWAY from the other side: its last stream id, or -1 if none came.
  int32_t goaway_last_id() const { return goaway_last_id_; }
  /// GOAWAY with `last_id` (and `code`, and `debug` as its debug data) to the other side.
  void goaway(int32_t last_id, uint32_t code = NGHTTP2_NO_ERROR, std::string_view debug = {});

 protected:
  bool fail(const char* what, ssize_t rv);
  /// Shared callback bodies.
  void on_data_recv(int32_t id, size_t len, bool reading);

  nghttp2_session* session_ = nullptr;
  int32_t goaway_last_id_ = -1;
  std::string error_;
};

/// A request as a client sends it.
struct Request {
  core::h2::HeaderBlock headers;
  std::string body;
  bool end = true;       // END_STREAM after the body; false: more comes (H2Client::send_more)
  size_t frame_max = 0;  // largest DATA payload per frame; 0 = what nghttp2 allows (16 KiB)
};

/// POST `path` with content-type application/grpc and te: trailers (plus `timeout` as
/// grpc-timeout unless empty). `body` is sent as is (no gRPC framing added).
Request grpc_request(std::string_view path, std::string body = {}, std::string_view timeout = {});
/// A plain HTTP/2 request (no gRPC content-type).
Request plain_request(std::string_view method, std::string_view path, std::string body = {});

/// The client side of one connection.
class H2Client final : public H2Peer {
 public:
  struct Stream {
    int32_t id = 0;
    Request req;
    size_t sent = 0;
    bool reading = true;    // give the stream's window back as DATA arrives
    size_t unconsumed = 0;  // received while not reading
    core::h2::HeaderBlock headers;
    core::h2::HeaderBlock trailers;
    int status = 0;        // :status
    int grpc_status = -1;  // from the headers (trailers-only) or the trailers
    std::string body;      // response DATA (if the client keeps bodies)
    size_t body_bytes = 0;
    bool end_stream = false;    // the response ended with END_STREAM
    bool rst_received = false;  // the other side sent RST_STREAM
    uint32_t rst_code = 0;
    bool closed = false;
    uint32_t close_code = 0;  // nghttp2's code for the close (0 = NO_ERROR)

    /// Header (or trailer) value, or empty.
    std::string_view header(std::string_view name) const;
  };

  /// `keep_bodies`: store response bodies (tests); the bench only counts them. `stream_window`:
  /// the SETTINGS_INITIAL_WINDOW_SIZE advertised (how much ringlb may send per stream unread).
  explicit H2Client(bool keep_bodies = true, uint32_t stream_window = 65535);

  /// Submits a call: its headers now, its body as windows allow. The stream id, or < 0.
  int32_t submit(const Request& r);
  Stream* stream(int32_t id);
  /// Streams submitted since the last recycle(), in order.
  const std::vector<Stream*>& streams() const { return live_; }
  size_t closed_count() const { return closed_; }
  bool all_closed() const { return closed_ == live_.size(); }
  /// Returns every closed stream to the pool (they must not be looked at afterwards).
  void recycle();

  /// More request body for stream `id` (a Request with end = false); `end` ends the request.
  void send_more(int32_t id, std::string_view bytes, bool end);
  /// Stops or resumes giving stream `id`'s window back (resuming returns what was held).
  void set_reading(int32_t id, bool reading);
  /// RST_STREAM(`code`) on stream `id`.
  void reset(int32_t id, uint32_t code = NGHTTP2_CANCEL);

 private:
  Stream* alloc();
  static Stream* of(nghttp2_session* s, int32_t id);
  static ssize_t read_body(nghttp2_session* s, int32_t id, uint8_t* buf, size_t len,
                           uint32_t* flags, nghttp2_data_source* src, void* user);
  static int on_header(nghttp2_session* s, const nghttp2_frame* f, const uint8_t* name,
                       size_t namelen, const uint8_t* value, size_t valuelen, uint8_t flags,
                       void* user);
  static int on_frame_recv(nghttp2_session* s, const nghttp2_frame* f, void* user);
  static int on_data_chunk(nghttp2_session* s, uint8_t flags, int32_t id, const uint8_t* data,
                           size_t len, void* user);
  static int on_stream_close(nghttp2_session* s, int32_t id, uint32_t code, void* user);

  bool keep_bodies_;
  std::vector<std::unique_ptr<Stream>> all_;
  std::vector<Stream*> free_;
  std::vector<Stream*> live_;
  size_t closed_ = 0;
};

/// The backend side of one connection. What it does with each request is its Mode's choice
/// (shared by every connection to one address, so a test can change it mid-way), or the
/// test's, by hand (respond / send_data / send_trailers / reset / goaway).
class H2Backend final : public H2Peer {
 public:
  enum class Action : uint8_t {
    kAnswer,        // headers, body, trailers (grpc-status)
    kTrailersOnly,  // one HEADERS frame with END_STREAM carrying grpc-status
    kRefuse,        // RST_STREAM(REFUSED_STREAM) as soon as the request headers arrive
    kHold,          // nothing: the test answers by hand
  };

  struct Exchange {
    int32_t id = 0;
    core::h2::HeaderBlock headers;  // the request's
    std::string body;               // request DATA (if the mode keeps bodies)
    size_t body_bytes = 0;
    bool ended = false;  // the request ended (END_STREAM)
    bool reading = true;
    size_t unconsumed = 0;
    bool rst_received = false;  // the client (ringlb) sent RST_STREAM
    uint32_t rst_code = 0;
    bool closed = false;
    uint32_t close_code = 0;
    bool answered = false;            // response headers submitted (or refused)
    Action action = Action::kAnswer;  // what the mode decided when the headers arrived
    // The response body source.
    std::string out;
    size_t out_off = 0;
    bool out_end = false;
    core::h2::HeaderBlock out_trailers;  // sent after the body when out_end, if not empty
    bool data_started = false;

    std::string_view header(std::string_view name) const { return headers.find(name); }
  };

  struct Mode {
    Action action = Action::kAnswer;
    /// Decides per request (after its headers); null: `action`.
    std::function<Action(H2Backend&, Exchange&)> decide;  // may set e.reading
    bool answer_on_headers = false;  // answer when the headers arrive, not the request's end
    bool read = true;                // give request windows back as DATA arrives
    bool keep_bodies = true;
    std::string content_type = "application/grpc";
    std::string response_body;  // kAnswer's body
    int grpc_status = 0;
    std::string grpc_message;
    std::vector<std::pair<std::string, std::string>> extra_headers;  // on every response
    // When set, a request whose :path differs, or whose body is not `expect_body` bytes, is
    // answered grpc-status 3 (INVALID_ARGUMENT): the bench's check that ringlb forwarded it.
    std::string expect_path;
    size_t expect_body = SIZE_MAX;
    uint32_t max_concurrent_streams = 1024;
    // Liveness (ProxyRig): a stopped backend (SIGSTOP) takes in nothing and sends nothing, its
    // kernel keeps the bytes; a mute one reads but sends nothing (not even its SETTINGS).
    bool stopped = false;
    bool mute = false;
    bool ack_pings = true;                    // answer PINGs (with ACK)
    std::function<void(H2Backend&)> on_ping;  // each PING received, before any ACK
    uint32_t max_header_list_size = 0;        // SETTINGS_MAX_HEADER_LIST_SIZE; 0: not advertised
  };

  explicit H2Backend(std::shared_ptr<Mode> mode);

  Mode& mode() { return *mode_; }
  /// PINGs received (ACKs not counted).
  size_t pings() const { return pings_; }
  Exchange* exchange(int32_t id);
  /// Requests since the last recycle(), in arrival order.
  const std::vector<Exchange*>& exchanges() const { return live_; }
  void recycle();

  /// Response headers: `status`, content-type per the mode, `extra`; END_STREAM if `end`.
  /// Without `end` the body follows from send_data / send_trailers.
  void respond(int32_t id, int status = 200,
               const std::vector<std::pair<std::string, std::string>>& extra = {},
               bool end = false);
  /// Trailers-only answer: :status 200, content-type, grpc-status (and grpc-message).
  void respond_trailers_only(int32_t id, int grpc_status, std::string_view message = {});
  /// Response DATA (after respond); `end` ends the stream (with no trailers).
  void send_data(int32_t id, std::string_view bytes, bool end = false);
  /// Trailers after what send_data queued: grpc-status and any extra fields.
  void send_trailers(int32_t id, int grpc_status,
                     const std::vector<std::pair<std::string, std::string>>& extra = {});
  /// The whole normal answer per the mode (headers, body, trailers).
  void answer(int32_t id);
  void answer(Exchange& e);
  /// RST_STREAM(`code`) on stream `id`.
  void reset(int32_t id, uint32_t code);
  void set_reading(int32_t id, bool reading);

 private:
  Exchange* alloc();
  static Exchange* of(nghttp2_session* s, int32_t id);
  void on_request_headers(Exchange& e);
  void on_request_end(Exchange& e);
  void act(Exchange& e, Action a);
  void submit_headers(Exchange& e, const core::h2::HeaderBlock& h, bool end);
  static ssize_t read_body(nghttp2_session* s, int32_t id, uint8_t* buf, size_t len,
                           uint32_t* flags, nghttp2_data_source* src, void* user);
  static int on_begin_headers(nghttp2_session* s, const nghttp2_frame* f, void* user);
  static int on_header(nghttp2_session* s, const nghttp2_frame* f, const uint8_t* name,
                       size_t namelen, const uint8_t* value, size_t valuelen, uint8_t flags,
                       void* user);
  static int on_frame_recv(nghttp2_session* s, const nghttp2_frame* f, void* user);
  static int on_data_chunk(nghttp2_session* s, uint8_t flags, int32_t id, const uint8_t* data,
                           size_t len, void* user);
  static int on_stream_close(nghttp2_session* s, int32_t id, uint32_t code, void* user);

  std::shared_ptr<Mode> mode_;
  size_t pings_ = 0;
  std::vector<std::unique_ptr<Exchange>> all_;
  std::vector<Exchange*> free_;
  std::vector<Exchange*> live_;
  core::h2::HeaderBlock scratch_;
};

}  // namespace ringlb::test
