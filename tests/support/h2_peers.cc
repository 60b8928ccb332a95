#include "tests/support/h2_peers.h"

#include <algorithm>
#include <cstring>

namespace ringlb::test {
namespace {

int to_int(std::string_view v) {  // -1 unless a plain decimal number
  if (v.empty() || v.size() > 9) return -1;
  int n = 0;
  for (char ch : v) {
    if (ch < '0' || ch > '9') return -1;
    n = n * 10 + (ch - '0');
  }
  return n;
}

// Both peers hand windows back by hand (per stream), so a test can stall one stream.
nghttp2_option* manual_windows_option() {
  static nghttp2_option* opt = [] {
    nghttp2_option* o;
    nghttp2_option_new(&o);
    nghttp2_option_set_no_auto_window_update(o, 1);
    return o;
  }();
  return opt;
}

// Backends also answer PINGs by hand, so a test can make one that does not (Mode::ack_pings).
nghttp2_option* backend_option() {
  static nghttp2_option* opt = [] {
    nghttp2_option* o;
    nghttp2_option_new(&o);
    nghttp2_option_set_no_auto_window_update(o, 1);
    nghttp2_option_set_no_auto_ping_ack(o, 1);
    return o;
  }();
  return opt;
}

}  // namespace

std::string pattern(size_t n, uint32_t seed) {
  std::string s(n, '\0');
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < n; ++i) {
    x = x * 1103515245u + 12345u;
    s[i] = static_cast<char>(x >> 16);
  }
  return s;
}

// ---------------------------------------------------------------------------------------------
// H2Peer

H2Peer::~H2Peer() {
  if (session_ != nullptr) nghttp2_session_del(session_);
}

bool H2Peer::pull(std::vector<uint8_t>& out) {
  out.clear();
  for (;;) {
    const uint8_t* data = nullptr;
    ssize_t n = nghttp2_session_mem_send(session_, &data);
    if (n < 0) return fail("mem_send", n);
    if (n == 0) return true;
    out.insert(out.end(), data, data + n);
  }
}

bool H2Peer::push(const std::vector<uint8_t>& in) {
  if (in.empty()) return true;
  ssize_t n = nghttp2_session_mem_recv(session_, in.data(), in.size());
  return n < 0 ? fail("mem_recv", n) : true;
}

void H2Peer::goaway(int32_t last_id, uint32_t code, std::string_view debug) {
  nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE, last_id, code,
                        reinterpret_cast<const uint8_t*>(debug.data()), debug.size());
}

bool H2Peer::fail(const char* what, ssize_t rv) {
  if (error_.empty()) error_ = std::string(what) + ": " + nghttp2_strerror(static_cast<int>(rv));
  return false;
}

void H2Peer::on_data_recv(int32_t id, size_t len, bool reading) {
  // The connection window always comes back at once; the stream's only while it reads.
  nghttp2_session_consume_connection(session_, len);
  if (reading) nghttp2_session_consume_stream(session_, id, len);
}

// ---------------------------------------------------------------------------------------------
// Requests

Request grpc_request(std::string_view path, std::string body, std::string_view timeout) {
  Request r;
  r.headers.add(":method", "POST");
  r.headers.add(":scheme", "http");
  r.headers.add(":path", path);
  r.headers.add(":authority", "test");
  r.headers.add("content-type", "application/grpc");
  r.headers.add("te", "trailers");
  if (!timeout.empty()) r.headers.add("grpc-timeout", timeout);
  r.body = std::move(body);
  return r;
}

Request plain_request(std::string_view method, std::string_view path, std::string body) {
  Request r;
  r.headers.add(":method", method);
  r.headers.add(":scheme", "http");
  r.headers.add(":path", path);
  r.headers.add(":authority", "test");
  r.body = std::move(body);
  return r;
}

// ---------------------------------------------------------------------------------------------
// H2Client

std::string_view H2Client::Stream::header(std::string_view name) const {
  std::string_view v = headers.find(name);
  return v.empty() ? trailers.find(name) : v;
}

H2Client::H2Client(bool keep_bodies, uint32_t stream_window) : keep_bodies_(keep_bodies) {
  nghttp2_session_callbacks* cb;
  nghttp2_session_callbacks_new(&cb);
  nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
  nghttp2_session_client_new2(&session_, cb, this, manual_windows_option());
  nghttp2_session_callbacks_del(cb);
  if (stream_window == 65535) {
    nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, nullptr, 0);
  } else {
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, stream_window}};
    nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, iv, 1);
  }
}

H2Client::Stream* H2Client::alloc() {
  Stream* s;
  if (free_.empty()) {
    all_.push_back(std::make_unique<Stream>());
    s = all_.back().get();
  } else {
    s = free_.back();
    free_.pop_back();
  }
  // Field by field, so the strings and header blocks keep their capacity.
  s->id = 0;
  s->sent = 0;
  s->reading = true;
  s->unconsumed = 0;
  s->headers.clear();
  s->trailers.clear();
  s->status = 0;
  s->grpc_status = -1;
  s->body.clear();
  s->body_bytes = 0;
  s->end_stream = s->rst_received = s->closed = false;
  s->rst_code = s->close_code = 0;
  return s;
}

int32_t H2Client::submit(const Request& r) {
  Stream* s = alloc();
  s->req.headers = r.headers;
  s->req.body.assign(r.body);
  s->req.end = r.end;
  s->req.frame_max = r.frame_max;
  nghttp2_data_provider prd;
  prd.source.ptr = s;
  prd.read_callback = read_body;
  const bool no_body = r.end && r.body.empty();
  int32_t id = nghttp2_submit_request(session_, nullptr, s->req.headers.nva(),
                                      s->req.headers.count(), no_body ? nullptr : &prd, s);
  if (id < 0) {
    free_.push_back(s);
    fail("submit_request", id);
    return id;
  }
  s->id = id;
  live_.push_back(s);
  return id;
}

H2Client::Stream* H2Client::stream(int32_t id) {
  for (Stream* s : live_) {
    if (s->id == id) return s;
  }
  return nullptr;
}

void H2Client::recycle() {
  size_t keep = 0;
  for (Stream* s : live_) {
    if (s->closed)
      free_.push_back(s);
    else
      live_[keep++] = s;
  }
  live_.resize(keep);
  closed_ = 0;
}

void H2Client::send_more(int32_t id, std::string_view bytes, bool end) {
  Stream* s = stream(id);
  if (s == nullptr) return;
  s->req.body.append(bytes);
  if (end) s->req.end = true;
  nghttp2_session_resume_data(session_, id);
}

void H2Client::set_reading(int32_t id, bool reading) {
  Stream* s = stream(id);
  if (s == nullptr) return;
  s->reading = reading;
  if (reading && s->unconsumed > 0 && !s->closed) {
    nghttp2_session_consume_stream(session_, id, s->unconsumed);
  }
  if (reading) s->unconsumed = 0;
}

void H2Client::reset(int32_t id, uint32_t code) {
  nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, id, code);
}

H2Client::Stream* H2Client::of(nghttp2_session* s, int32_t id) {
  return static_cast<Stream*>(nghttp2_session_get_stream_user_data(s, id));
}

ssize_t H2Client::read_body(nghttp2_session*, int32_t, uint8_t* buf, size_t len, uint32_t* flags,
                            nghttp2_data_source* src, void*) {
  auto* s = static_cast<Stream*>(src->ptr);
  size_t n = std::min(len, s->req.body.size() - s->sent);
  if (s->req.frame_max > 0) n = std::min(n, s->req.frame_max);
  std::memcpy(buf, s->req.body.data() + s->sent, n);
  s->sent += n;
  if (s->sent == s->req.body.size()) {
    if (s->req.end)
      *flags |= NGHTTP2_DATA_FLAG_EOF;
    else if (n == 0)
      return NGHTTP2_ERR_DEFERRED;
  }
  return static_cast<ssize_t>(n);
}

int H2Client::on_header(nghttp2_session* s, const nghttp2_frame* f, const uint8_t* name,
                        size_t namelen, const uint8_t* value, size_t valuelen, uint8_t, void*) {
  Stream* st = of(s, f->hd.stream_id);
  if (st == nullptr || f->hd.type != NGHTTP2_HEADERS) return 0;
  std::string_view n = sv(name, namelen);
  std::string_view v = sv(value, valuelen);
  // A second HEADERS frame on a stream that has its response headers is the trailers.
  const bool trailer = f->headers.cat == NGHTTP2_HCAT_HEADERS;
  (trailer ? st->trailers : st->headers).add(n, v);
  if (n == ":status")
    st->status = to_int(v);
  else if (n == "grpc-status")
    st->grpc_status = to_int(v);
  return 0;
}

int H2Client::on_frame_recv(nghttp2_session* s, const nghttp2_frame* f, void* user) {
  auto* self = static_cast<H2Client*>(user);
  if (f->hd.type == NGHTTP2_GOAWAY) {
    self->goaway_last_id_ = f->goaway.last_stream_id;
    return 0;
  }
  Stream* st = of(s, f->hd.stream_id);
  if (st == nullptr) return 0;
  if (f->hd.type == NGHTTP2_RST_STREAM) {
    st->rst_received = true;
    st->rst_code = f->rst_stream.error_code;
  } else if ((f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) &&
             (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0) {
    st->end_stream = true;
  }
  return 0;
}

int H2Client::on_data_chunk(nghttp2_session* s, uint8_t, int32_t id, const uint8_t* data,
                            size_t len, void* user) {
  auto* self = static_cast<H2Client*>(user);
  Stream* st = of(s, id);
  bool reading = st == nullptr || st->reading;
  if (st != nullptr) {
    st->body_bytes += len;
    if (self->keep_bodies_) st->body.append(reinterpret_cast<const char*>(data), len);
    if (!reading) st->unconsumed += len;
  }
  self->on_data_recv(id, len, reading);
  return 0;
}

int H2Client::on_stream_close(nghttp2_session* s, int32_t id, uint32_t code, void* user) {
  if (Stream* st = of(s, id)) {
    st->closed = true;
    st->close_code = code;
    ++static_cast<H2Client*>(user)->closed_;
  }
  return 0;
}

// ---------------------------------------------------------------------------------------------
// H2Backend

H2Backend::H2Backend(std::shared_ptr<Mode> mode) : mode_(std::move(mode)) {
  nghttp2_session_callbacks* cb;
  nghttp2_session_callbacks_new(&cb);
  nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
  nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
  nghttp2_session_server_new2(&session_, cb, this, backend_option());
  nghttp2_session_callbacks_del(cb);
  nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, mode_->max_concurrent_streams},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, mode_->max_header_list_size}};
  nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, iv, mode_->max_header_list_size ? 2 : 1);
}

H2Backend::Exchange* H2Backend::alloc() {
  Exchange* e;
  if (free_.empty()) {
    all_.push_back(std::make_unique<Exchange>());
    e = all_.back().get();
  } else {
    e = free_.back();
    free_.pop_back();
  }
  e->id = 0;
  e->headers.clear();
  e->body.clear();
  e->body_bytes = 0;
  e->ended = e->rst_received = e->closed = e->answered = e->data_started = false;
  e->reading = true;
  e->unconsumed = 0;
  e->rst_code = e->close_code = 0;
  e->action = Action::kAnswer;
  e->out.clear();
  e->out_off = 0;
  e->out_end = false;
  e->out_trailers.clear();
  return e;
}

H2Backend::Exchange* H2Backend::exchange(int32_t id) {
  for (Exchange* e : live_) {
    if (e->id == id) return e;
  }
  return nullptr;
}

void H2Backend::recycle() {
  size_t keep = 0;
  for (Exchange* e : live_) {
    if (e->closed)
      free_.push_back(e);
    else
      live_[keep++] = e;
  }
  live_.resize(keep);
}

H2Backend::Exchange* H2Backend::of(nghttp2_session* s, int32_t id) {
  return static_cast<Exchange*>(nghttp2_session_get_stream_user_data(s, id));
}

void H2Backend::submit_headers(Exchange& e, const core::h2::HeaderBlock& h, bool end) {
  // nva() is not const: nghttp2 copies the fields on submit, so a scratch copy is fine.
  scratch_ = h;
  e.answered = true;
  if (end) {
    nghttp2_submit_response(session_, e.id, scratch_.nva(), scratch_.count(), nullptr);
    return;
  }
  nghttp2_data_provider prd;
  prd.source.ptr = &e;
  prd.read_callback = read_body;
  e.data_started = true;
  nghttp2_submit_response(session_, e.id, scratch_.nva(), scratch_.count(), &prd);
}

void H2Backend::respond(int32_t id, int status,
                        const std::vector<std::pair<std::string, std::string>>& extra, bool end) {
  Exchange* e = exchange(id);
  if (e == nullptr) return;
  core::h2::HeaderBlock h;
  h.add(":status", std::to_string(status));
  if (!mode_->content_type.empty()) h.add("content-type", mode_->content_type);
  for (const auto& [n, v] : mode_->extra_headers) h.add(n, v);
  for (const auto& [n, v] : extra) h.add(n, v);
  submit_headers(*e, h, end);
}

void H2Backend::respond_trailers_only(int32_t id, int grpc_status, std::string_view message) {
  Exchange* e = exchange(id);
  if (e == nullptr) return;
  core::h2::HeaderBlock h;
  h.add(":status", "200");
  h.add("content-type", "application/grpc");
  h.add("grpc-status", std::to_string(grpc_status));
  if (!message.empty()) h.add("grpc-message", message);
  submit_headers(*e, h, true);
}

void H2Backend::send_data(int32_t id, std::string_view bytes, bool end) {
  Exchange* e = exchange(id);
  if (e == nullptr) return;
  e->out.append(bytes);
  if (end) e->out_end = true;
  nghttp2_session_resume_data(session_, id);
}

void H2Backend::send_trailers(int32_t id, int grpc_status,
                              const std::vector<std::pair<std::string, std::string>>& extra) {
  Exchange* e = exchange(id);
  if (e == nullptr) return;
  e->out_trailers.clear();
  e->out_trailers.add("grpc-status", std::to_string(grpc_status));
  for (const auto& [n, v] : extra) e->out_trailers.add(n, v);
  e->out_end = true;
  nghttp2_session_resume_data(session_, id);
}

void H2Backend::answer(int32_t id) {
  if (Exchange* e = exchange(id)) answer(*e);
}

void H2Backend::answer(Exchange& x) {
  Exchange* e = &x;
  if (e->answered) return;
  const Mode& m = *mode_;
  int status = m.grpc_status;
  if ((!m.expect_path.empty() && e->header(":path") != m.expect_path) ||
      (m.expect_body != SIZE_MAX && e->body_bytes != m.expect_body)) {
    status = 3;  // INVALID_ARGUMENT: not the request the client sent
  }
  static const char* const kCodes[] = {"0", "1",  "2",  "3",  "4",  "5",  "6",  "7", "8",
                                       "9", "10", "11", "12", "13", "14", "15", "16"};
  e->out.assign(m.response_body);
  e->out_off = 0;
  e->out_end = true;
  e->out_trailers.clear();
  e->out_trailers.add("grpc-status", status >= 0 && status <= 16 ? kCodes[status] : "2");
  if (!m.grpc_message.empty()) e->out_trailers.add("grpc-message", m.grpc_message);
  if (m.extra_headers.empty() && m.content_type == "application/grpc") {
    // The common case, allocation-free: the bench runs this per call.
    static const core::h2::HeaderBlock kOk = [] {
      core::h2::HeaderBlock h;
      h.add(":status", "200");
      h.add("content-type", "application/grpc");
      return h;
    }();
    submit_headers(*e, kOk, false);
    return;
  }
  respond(e->id, 200, {}, false);
}

void H2Backend::reset(int32_t id, uint32_t code) {
  nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, id, code);
}

void H2Backend::set_reading(int32_t id, bool reading) {
  Exchange* e = exchange(id);
  if (e == nullptr) return;
  e->reading = reading;
  if (reading && e->unconsumed > 0 && !e->closed) {
    nghttp2_session_consume_stream(session_, id, e->unconsumed);
  }
  if (reading) e->unconsumed = 0;
}

void H2Backend::act(Exchange& e, Action a) {
  switch (a) {
    case Action::kAnswer:
      answer(e);
      break;
    case Action::kTrailersOnly:
      respond_trailers_only(e.id, mode_->grpc_status, mode_->grpc_message);
      break;
    case Action::kRefuse:
      reset(e.id, NGHTTP2_REFUSED_STREAM);
      break;
    case Action::kHold:
      break;
  }
}

void H2Backend::on_request_headers(Exchange& e) {
  e.reading = mode_->read;
  Action a = mode_->decide ? mode_->decide(*this, e) : mode_->action;
  e.action = a;
  if (a == Action::kRefuse || a == Action::kHold) {
    act(e, a);
    if (a == Action::kRefuse) e.answered = true;
    return;
  }
  if (mode_->answer_on_headers || e.ended) act(e, a);
}

void H2Backend::on_request_end(Exchange& e) {
  if (e.answered || mode_->answer_on_headers) return;
  act(e, e.action);
}

ssize_t H2Backend::read_body(nghttp2_session* s, int32_t id, uint8_t* buf, size_t len,
                             uint32_t* flags, nghttp2_data_source* src, void* user) {
  auto* e = static_cast<Exchange*>(src->ptr);
  size_t n = std::min(len, e->out.size() - e->out_off);
  std::memcpy(buf, e->out.data() + e->out_off, n);
  e->out_off += n;
  if (e->out_off == e->out.size()) {
    if (!e->out_end) return n == 0 ? NGHTTP2_ERR_DEFERRED : static_cast<ssize_t>(n);
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    if (!e->out_trailers.empty()) {
      *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
      auto* self = static_cast<H2Backend*>(user);
      self->scratch_ = e->out_trailers;
      nghttp2_submit_trailer(s, id, self->scratch_.nva(), self->scratch_.count());
    }
  }
  return static_cast<ssize_t>(n);
}

int H2Backend::on_begin_headers(nghttp2_session* s, const nghttp2_frame* f, void* user) {
  if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST) {
    auto* self = static_cast<H2Backend*>(user);
    Exchange* e = self->alloc();
    e->id = f->hd.stream_id;
    self->live_.push_back(e);
    nghttp2_session_set_stream_user_data(s, f->hd.stream_id, e);
  }
  return 0;
}

int H2Backend::on_header(nghttp2_session* s, const nghttp2_frame* f, const uint8_t* name,
                         size_t namelen, const uint8_t* value, size_t valuelen, uint8_t, void*) {
  if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  if (Exchange* e = of(s, f->hd.stream_id)) e->headers.add(sv(name, namelen), sv(value, valuelen));
  return 0;
}

int H2Backend::on_frame_recv(nghttp2_session* s, const nghttp2_frame* f, void* user) {
  auto* self = static_cast<H2Backend*>(user);
  if (f->hd.type == NGHTTP2_GOAWAY) {
    self->goaway_last_id_ = f->goaway.last_stream_id;
    return 0;
  }
  if (f->hd.type == NGHTTP2_PING && (f->hd.flags & NGHTTP2_FLAG_ACK) == 0) {
    ++self->pings_;
    if (self->mode_->on_ping) self->mode_->on_ping(*self);
    if (self->mode_->ack_pings) nghttp2_submit_ping(s, NGHTTP2_FLAG_ACK, f->ping.opaque_data);
    return 0;
  }
  Exchange* e = of(s, f->hd.stream_id);
  if (e == nullptr) return 0;
  const bool end = (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
  switch (f->hd.type) {
    case NGHTTP2_RST_STREAM:
      e->rst_received = true;
      e->rst_code = f->rst_stream.error_code;
      break;
    case NGHTTP2_HEADERS:
      if (end) e->ended = true;
      if (f->headers.cat == NGHTTP2_HCAT_REQUEST)
        self->on_request_headers(*e);
      else if (end)
        self->on_request_end(*e);
      break;
    case NGHTTP2_DATA:
      if (end) {
        e->ended = true;
        self->on_request_end(*e);
      }
      break;
    default:
      break;
  }
  return 0;
}

int H2Backend::on_data_chunk(nghttp2_session* s, uint8_t, int32_t id, const uint8_t* data,
                             size_t len, void* user) {
  auto* self = static_cast<H2Backend*>(user);
  Exchange* e = of(s, id);
  bool reading = e == nullptr || e->reading;
  if (e != nullptr) {
    e->body_bytes += len;
    if (self->mode_->keep_bodies) e->body.append(reinterpret_cast<const char*>(data), len);
    if (!reading) e->unconsumed += len;
  }
  self->on_data_recv(id, len, reading);
  return 0;
}

int H2Backend::on_stream_close(nghttp2_session* s, int32_t id, uint32_t code, void*) {
  if (Exchange* e = of(s, id)) {
    e->closed = true;
    e->close_code = code;
  }
  return 0;
}

}  // namespace ringlb::test
