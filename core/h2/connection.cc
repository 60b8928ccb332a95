#include "core/h2/connection.h"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "core/base/log.h"
#include "core/h2/host.h"

namespace ringlb::core::h2 {

H2Connection::H2Connection(Host& host)
    : host_(host), plain_(&host.chunks()), backlog_(&host.chunks()) {
  host_.connection_born();
  recv_op_.handler = send_op_.handler = connect_op_.handler = this;
  recv_op_.tag = kRecv;
  send_op_.tag = kSend;
  connect_op_.tag = kConnect;
}

H2Connection::~H2Connection() {
  if (session_ != nullptr) nghttp2_session_del(session_);
  host_.connection_died();
}

void H2Connection::start_io() {
  state_ = State::kOpen;
  host_.reactor().recv(fd_, recv_op_);
  mark_dirty();
}

void H2Connection::mark_dirty() {
  if (!dirty && state_ == State::kOpen) {
    dirty = true;
    host_.add_dirty(this);
  }
}

void H2Connection::on_complete(io::Op& op, const io::Completion& c) {
  switch (op.tag) {
    case kRecv:
      on_recv(c);
      break;
    case kSend:
      on_sent(c);
      break;
    case kConnect:
      if (!closing()) on_connected(c.res);
      break;
  }
  if (state_ == State::kClosing) maybe_release();
}

void H2Connection::on_recv(const io::Completion& c) {
  if (state_ != State::kOpen) return;  // late data after close: dropped
  const bool cancelled_by_us = recv_cancelled_;
  if (!c.more) recv_cancelled_ = false;  // the receive is over, however it ended
  if (c.res <= 0) {
    // Our own cancel (input paused, or going away) ends the receive: not the peer's doing.
    // If the backlog drained meanwhile, reading starts again here.
    if (c.res == -ECANCELED && cancelled_by_us) {
      if (!input_paused_) host_.reactor().recv(fd_, recv_op_);  // going away: drains input
      return;
    }
    close(c.res == 0 ? "peer closed the connection" : strerror(-c.res));
    return;
  }
  if (going_away_) {
    // Read and dropped: unread input at close() would make the kernel reset the connection
    // and throw away the GOAWAY still in its send queue. The peer's EOF ends it (or the
    // owner's linger timer).
    if (!c.more) host_.reactor().recv(fd_, recv_op_);
    return;
  }
  const uint8_t* data = c.data;
  size_t n = static_cast<size_t>(c.res);
  if (backlog_.empty()) {
    const size_t now = std::min(n, share_left());
    if (now > 0 && !feed(data, now)) return;
    data += now;
    n -= now;
  }
  if (n > 0) hold_input(data, n);
  if (state_ != State::kOpen) return;
  after_input();
  if (!c.more && state_ == State::kOpen && !input_paused_ && !going_away_) {
    host_.reactor().recv(fd_, recv_op_);
  }
  mark_dirty();
}

bool H2Connection::feed(const uint8_t* data, size_t n) {
  share_used_ += n;
  if (auto r = transport_->on_recv(data, n, *this); !r) {
    close(r.error().message.c_str());
    return false;
  }
  if (transport_->fatal() != nullptr) return transport_failed();
  return state_ == State::kOpen;
}

bool H2Connection::transport_failed() {
  if (state_ != State::kOpen) return false;
  if (!close_when_sent_) {
    close_when_sent_ = true;
    drop_input();
  }
  return false;
}

void H2Connection::drop_input() {
  going_away_ = true;
  if (input_paused_) {
    input_paused_ = false;
    host_.remove_backlog(this);
  }
  backlog_.clear();
  // Reading goes on (a paused receive is re-armed): input is dropped from now on.
  if (!recv_op_.active && !recv_cancelled_) host_.reactor().recv(fd_, recv_op_);
  mark_dirty();
}

size_t H2Connection::share_left() {
  if (share_turn_ != host_.turn_number()) {
    share_turn_ = host_.turn_number();
    share_used_ = 0;
  }
  const size_t limit = host_.turn_bytes();
  return share_used_ >= limit ? 0 : limit - share_used_;
}

void H2Connection::hold_input(const uint8_t* data, size_t n) {
  backlog_.append(data, n);
  if (input_paused_) return;
  input_paused_ = true;
  host_.add_backlog(this);
  cancel_recv();  // what is in flight still lands here
}

void H2Connection::drain_backlog() {
  if (state_ != State::kOpen || going_away_) return;
  size_t left = std::min(backlog_.size(), share_left());
  while (left > 0) {
    iovec iov[1];
    backlog_.peek_iovecs(iov, 1);
    const size_t n = std::min(left, iov[0].iov_len);
    // The bytes stay in the queue while the session reads them: feed() may close us, which
    // clears it, so consume only after, and only if still open.
    if (!feed(static_cast<const uint8_t*>(iov[0].iov_base), n)) return;
    if (going_away_) return;
    backlog_.consume(n);
    left -= n;
  }
  after_input();
  if (state_ != State::kOpen) return;
  if (backlog_.empty()) resume_input();
  mark_dirty();
}

void H2Connection::cancel_recv() {
  if (!recv_op_.active || recv_cancelled_) return;
  recv_cancelled_ = true;
  host_.reactor().cancel(recv_op_);
}

void H2Connection::resume_input() {
  if (input_paused_) {
    input_paused_ = false;
    host_.remove_backlog(this);
  }
  // A cancelled receive may still be completing: its final completion re-arms (on_recv).
  if (!recv_op_.active && state_ == State::kOpen && !going_away_) {
    host_.reactor().recv(fd_, recv_op_);
  }
}

bool H2Connection::on_plaintext(const uint8_t* data, size_t n) {
  if (state_ != State::kOpen || going_away_) return false;
  if (session_ == nullptr && !start_session()) {
    close("HTTP/2 session setup failed");
    return false;
  }
  ssize_t r = nghttp2_session_mem_recv(session_, data, n);
  if (r < 0) {
    // A limit of ours that tripped inside a callback stops the input this way (go_away()
    // was called): the GOAWAY goes out, then we close.
    if (going_away_) return false;
    // Fatal for this connection only (bad preface, flood, callback failure). Protocol errors
    // that nghttp2 answers with GOAWAY return >= 0 and end through want_read() in flush().
    LOG_DEBUG("host %u: closing connection: %s", host_.index(), nghttp2_strerror(int(r)));
    on_input_error(static_cast<int>(r));
    if (!going_away_) close(nghttp2_strerror(static_cast<int>(r)));
    return false;
  }
  return state_ == State::kOpen && !going_away_;
}

void H2Connection::go_away(uint32_t code, std::string_view debug, int32_t below_stream) {
  if (state_ != State::kOpen || going_away_) return;
  if (session_ == nullptr) {  // nothing was said yet: nothing to say goodbye in
    close("went away before the HTTP/2 session began");
    return;
  }
  int32_t last = nghttp2_session_get_last_proc_stream_id(session_);
  if (below_stream > 0 && last >= below_stream) last = std::max(0, below_stream - 2);
  nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE, last, code,
                        reinterpret_cast<const uint8_t*>(debug.data()), debug.size());
  drop_input();
}

void H2Connection::flush() {
  dirty = false;
  if (state_ != State::kOpen) return;
  before_flush();
  if (state_ != State::kOpen) return;
  if (dirty) {  // what before_flush() submitted goes out now, not in another round
    host_.remove_dirty(this);
    dirty = false;
  }
  mem::ChunkQueue& plain = transport_->plain_out();
  // Going away: the GOAWAY is among the next few frames (nghttp2 sends control frames before
  // DATA); nothing past them matters.
  int frames = session_ == nullptr || close_when_sent_ ? 0 : going_away_ ? 8 : INT32_MAX;
  // What waits for the socket counts too: TLS seals the plaintext into its own wire queue,
  // which a peer that does not read would otherwise let grow a high-water mark per flush.
  const mem::ChunkQueue& sealed = transport_->wire_out();
  const size_t unsent = &sealed == &plain ? 0 : sealed.size();
  while (plain.size() + unsent < kHighWater && frames-- > 0) {
    const uint8_t* data = nullptr;
    ssize_t n = nghttp2_session_mem_send(session_, &data);
    if (n < 0) {
      close(nghttp2_strerror(static_cast<int>(n)));
      return;
    }
    if (n == 0) break;
    plain.append(data, static_cast<size_t>(n));
  }
  if (state_ != State::kOpen) return;  // a data source callback may have closed us
  if (auto sealed = transport_->seal(); !sealed) {
    close(sealed.error().message.c_str());
    return;
  }
  if (transport_->fatal() != nullptr && !close_when_sent_) transport_failed();
  mem::ChunkQueue& wire = transport_->wire_out();
  if (!send_op_.active && !wire.empty()) {
    send_progress_ns_ = host_.now();
    send_op_.iov = iov_;
    send_op_.iovcnt = wire.peek_iovecs(iov_, kMaxIov);
    host_.reactor().send(fd_, send_op_);
    return;
  }
  if (close_when_sent_ && !send_op_.active && wire.empty()) {
    close(transport_->fatal()->c_str());
    return;
  }
  if (going_away_ && !send_op_.active && wire.empty()) {
    // The GOAWAY is in the kernel's hands: our FIN follows it, and the peer's EOF (on_recv)
    // or the owner's linger timer closes the connection.
    if (!write_shut_) ::shutdown(fd_, SHUT_WR);
    write_shut_ = true;
    return;
  }
  if (!send_op_.active && wire.empty() && plain.empty() && !hold_open() && session_ != nullptr &&
      nghttp2_session_want_read(session_) == 0 && nghttp2_session_want_write(session_) == 0) {
    close("session finished");
  }
}

void H2Connection::begin_data_frame(const nghttp2_frame& frame, const uint8_t* framehd) {
  mem::ChunkQueue& out = transport_->plain_out();
  out.append(framehd, 9);
  size_t padlen = frame.data.padlen;  // 0 unless a padding callback is set (we set none)
  if (padlen > 0) {
    auto pad_length = static_cast<uint8_t>(padlen - 1);
    out.append(&pad_length, 1);
  }
}

void H2Connection::end_data_frame(const nghttp2_frame& frame) {
  static constexpr uint8_t kZeros[256] = {};
  size_t padlen = frame.data.padlen;
  if (padlen > 1) transport_->plain_out().append(kZeros, padlen - 1);
}

void H2Connection::credit_connection(size_t n) {
  if (n == 0 || state_ != State::kOpen) return;
  if ((withholds_credit() && host_.over_buffer_limit()) || withheld_ > 0) {
    if (withheld_ == 0) host_.hold_credit(this);
    withheld_ += n;
    return;
  }
  nghttp2_session_consume_connection(session_, n);
  mark_dirty();
}

void H2Connection::release_withheld() {
  size_t n = withheld_;
  withheld_ = 0;
  if (n == 0 || state_ != State::kOpen) return;
  nghttp2_session_consume_connection(session_, n);
  mark_dirty();
}

void H2Connection::on_sent(const io::Completion& c) {
  if (state_ != State::kOpen) return;
  if (c.res < 0) {
    close(strerror(-c.res));
    return;
  }
  transport_->wire_out().consume(static_cast<size_t>(c.res));
  if (c.res > 0) send_progress_ns_ = host_.now();
  mark_dirty();  // the rest of the output, or more frames, or the end-of-session check
}

void H2Connection::close(const char* why) {
  if (state_ == State::kClosing || state_ == State::kClosed) return;
  bool was_connecting = state_ == State::kConnecting;
  state_ = State::kClosing;
  if (withheld_ > 0) host_.drop_credit(this);
  withheld_ = 0;
  if (input_paused_) host_.remove_backlog(this);
  input_paused_ = false;
  backlog_.clear();
  if (dirty) host_.remove_dirty(this);
  dirty = false;
  on_close(why);
  if (fd_ >= 0) {
    if (!was_connecting) ::shutdown(fd_, SHUT_RDWR);
    host_.reactor().cancel(recv_op_);
    host_.reactor().cancel(send_op_);
    host_.reactor().cancel(connect_op_);
  }
  maybe_release();
}

void H2Connection::maybe_release() {
  if (released_ || recv_op_.active || send_op_.active || connect_op_.active) return;
  released_ = true;
  state_ = State::kClosed;
  if (fd_ >= 0) host_.reactor().close(fd_);
  fd_ = -1;
  transport_->clear();
  on_released();
}

}  // namespace ringlb::core::h2
