#include "core/h2/connection.h"

#include <sys/socket.h>

#include <cstring>

#include "core/base/log.h"
#include "core/h2/host.h"

namespace ringlb::core::h2 {

H2Connection::H2Connection(Host& host) : host_(host), plain_(&host.chunks()) {
  recv_op_.handler = send_op_.handler = connect_op_.handler = this;
  recv_op_.tag = kRecv;
  send_op_.tag = kSend;
  connect_op_.tag = kConnect;
}

H2Connection::~H2Connection() {
  if (session_ != nullptr) nghttp2_session_del(session_);
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
  if (c.res <= 0) {
    close(c.res == 0 ? "peer closed the connection" : strerror(-c.res));
    return;
  }
  if (auto r = transport_->on_recv(c.data, static_cast<size_t>(c.res), *this); !r) {
    close(r.error().message.c_str());
    return;
  }
  if (state_ != State::kOpen) return;
  after_input();
  if (!c.more && state_ == State::kOpen) host_.reactor().recv(fd_, recv_op_);
  mark_dirty();
}

bool H2Connection::on_plaintext(const uint8_t* data, size_t n) {
  if (state_ != State::kOpen) return false;
  ssize_t r = nghttp2_session_mem_recv(session_, data, n);
  if (r < 0) {
    // Fatal for this connection only (bad preface, flood, callback failure). Protocol errors
    // that nghttp2 answers with GOAWAY return >= 0 and end through want_read() in flush().
    LOG_DEBUG("host %u: closing connection: %s", host_.index(), nghttp2_strerror(int(r)));
    close(nghttp2_strerror(static_cast<int>(r)));
    return false;
  }
  return state_ == State::kOpen;
}

void H2Connection::flush() {
  dirty = false;
  if (state_ != State::kOpen) return;
  mem::ChunkQueue& plain = transport_->plain_out();
  while (plain.size() < kHighWater) {
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
  mem::ChunkQueue& wire = transport_->wire_out();
  if (!send_op_.active && !wire.empty()) {
    send_op_.iov = iov_;
    send_op_.iovcnt = wire.peek_iovecs(iov_, kMaxIov);
    host_.reactor().send(fd_, send_op_);
    return;
  }
  if (!send_op_.active && wire.empty() && plain.empty() && !hold_open() &&
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
  if (host_.over_buffer_limit() || withheld_ > 0) {
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
  mark_dirty();  // the rest of the output, or more frames, or the end-of-session check
}

void H2Connection::close(const char* why) {
  if (state_ == State::kClosing || state_ == State::kClosed) return;
  bool was_connecting = state_ == State::kConnecting;
  state_ = State::kClosing;
  if (withheld_ > 0) host_.drop_credit(this);
  withheld_ = 0;
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
