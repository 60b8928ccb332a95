#pragma once
// H2Connection: what downstream and upstream HTTP/2 connections share: the socket, its recv and
// send ops, the nghttp2 session and the output queue. Owner: the thread of its Host (a shard,
// or the control thread).
//
// Bytes pass through a Transport (plain or TLS) both ways. Output: nghttp2 frames are
// pulled into the transport's plaintext queue in the host's flush phase (once per loop turn) and
// go out as one gathered send; while a send is in flight new frames queue behind it. We stop
// pulling at a high-water mark, so a slow peer leaves data in the per-stream buffers, where
// HTTP/2 flow control bounds it, instead of in the output queue.
//
// Fair share: a connection has at most Host::turn_bytes() of input processed per loop turn.
// What arrives beyond that waits in its backlog, reading stops, and the host gives it another
// share at the start of each later turn, after which reading resumes. A peer that floods frames
// slows itself: its own input queues (in the kernel, then here), not its neighbours'.
#include <nghttp2/nghttp2.h>

#include <cstdint>
#include <string_view>

#include "core/base/list.h"
#include "core/h2/transport.h"
#include "core/io/reactor.h"
#include "core/mem/buffer.h"

namespace ringlb::core::h2 {

class Host;

class H2Connection : public io::IoHandler, private TransportSink {
 public:
  enum class State : uint8_t { kConnecting, kOpen, kClosing, kClosed };

  explicit H2Connection(Host& host);
  virtual ~H2Connection();
  H2Connection(const H2Connection&) = delete;
  H2Connection& operator=(const H2Connection&) = delete;

  /// Pulls frames from nghttp2 and starts a send if none is in flight. Shard flush phase only.
  void flush();
  /// Asks for a flush in this loop turn's flush phase.
  void mark_dirty();
  /// Tears the connection down now: streams are told, ops cancelled; the shard frees the object
  /// once every op has completed. Safe to call more than once and from inside callbacks.
  void close(const char* why);

  /// For nghttp2 send_data callbacks (NGHTTP2_DATA_FLAG_NO_COPY): queues one whole DATA frame,
  /// `framehd` (9 bytes), padding fields if any, and the payload that `payload(out)` appends
  /// (frame.hd.length minus padding bytes). The payload is copied once, from the call's buffer
  /// into the output, instead of twice (into nghttp2's frame buffer, then out of it).
  template <typename Payload>
  void append_data_frame(const nghttp2_frame& frame, const uint8_t* framehd, Payload&& payload) {
    begin_data_frame(frame, framehd);
    payload(transport_->plain_out());
    end_data_frame(frame);
  }

  /// Gives the peer back connection-level window for `n` bytes it sent: at once, unless the host
  /// is over its buffer limit; then when it is back under (Host::release_withheld). Stream-level
  /// windows stay coupled to the other side, so this is what keeps one stalled stream from
  /// stalling its whole connection while the host's memory stays bounded.
  void credit_connection(size_t n);
  /// Returns what credit_connection() held back. Host only.
  void release_withheld();

  /// Sends GOAWAY(`code`, with `debug` as its debug data) for the streams processed so far,
  /// processes no more input (it is read and dropped), and once the GOAWAY is written sends a
  /// FIN and closes at the peer's EOF. For a peer that broke a limit or the protocol; the owner
  /// bounds the wait (close()), for a peer that reads nothing or never hangs up.
  /// `below_stream` > 0: that stream was refused, not processed: the GOAWAY's last stream id
  /// stays below it (so the client knows it may retry it elsewhere).
  void go_away(uint32_t code, std::string_view debug, int32_t below_stream = 0);
  bool going_away() const { return going_away_; }
  /// Host only, once per turn: processes up to a turn's share of the input held back.
  void drain_backlog();
  /// How long a send has been in flight without the socket taking a byte (0: none waiting).
  int64_t send_stalled_ns(int64_t now_ns) const {
    return send_op_.active ? now_ns - send_progress_ns_ : 0;
  }

  bool open() const { return state_ == State::kOpen; }
  bool closing() const { return state_ == State::kClosing || state_ == State::kClosed; }
  nghttp2_session* session() const { return session_; }
  Host& host() const { return host_; }

  base::ListLink dirty_link;     // in the shard's dirty list
  base::ListLink conn_link;      // in the shard's downstream list or an endpoint pool
  base::ListLink withheld_link;  // in the host's list of connections with credit held back
  base::ListLink backlog_link;   // in the host's list of connections with input held back
  bool dirty = false;

 protected:
  void on_complete(io::Op& op, const io::Completion& c) override;
  /// The socket is connected (or was accepted): start reading and writing.
  void start_io();
  /// Before start_io(): bytes go through `t` (owned by the derived connection, alive until
  /// on_released()) instead of passing through.
  void set_transport(Transport* t) { transport_ = t; }
  Transport& transport() const { return *transport_; }
  /// Called once when the connection starts closing: detach every stream.
  virtual void on_close(const char* why) = 0;
  /// Connect completion (upstream only).
  virtual void on_connected(int res) { (void)res; }
  /// After input was processed: a chance to act on state nghttp2 changed (GOAWAY and so on).
  virtual void after_input() {}
  /// Whether credit_connection() holds back credit while the host is over its limit. A client
  /// connection does (what its uploads may add waits); a backend connection does not: each of
  /// its streams is bounded by a window coupled to its client's reading, and holding back the
  /// connection's credit would stall every call sharing it behind a few slow readers (whom
  /// the host's relief sheds instead).
  virtual bool withholds_credit() const { return true; }
  /// At the start of flush(), before frames are pulled: submit what was held back for it.
  virtual void before_flush() {}
  /// The first input arrived and there is no session yet (a server creates it only then, so a
  /// connection that never speaks costs no nghttp2 state): create it, or return false.
  virtual bool start_session() { return false; }
  /// True while the connection must stay open although nghttp2 wants neither to read nor to
  /// write (a drain waiting for its PING to come back before the final GOAWAY).
  virtual bool hold_open() const { return false; }
  /// Every op has completed; the fd is closed. The shard reclaims the object.
  virtual void on_released() = 0;
  /// nghttp2 failed the input with `err` (an nghttp2_error): a chance to count why and to go
  /// away politely (go_away()) instead of the close that follows otherwise.
  virtual void on_input_error(int err) { (void)err; }

  Host& host_;
  int fd_ = -1;
  nghttp2_session* session_ = nullptr;
  State state_ = State::kConnecting;
  io::Op recv_op_;
  io::Op send_op_;
  io::Op connect_op_;

 private:
  enum : uint8_t { kRecv = 1, kSend = 2, kConnect = 3 };
  void on_recv(const io::Completion& c);
  void on_sent(const io::Completion& c);
  void maybe_release();
  bool on_plaintext(const uint8_t* data, size_t n) override;
  /// Passes `n` input bytes to the transport (and so the session). False if it closed.
  bool feed(const uint8_t* data, size_t n);
  /// What this turn's share of input has left.
  size_t share_left();
  /// Input past the share waits in backlog_; reading stops until it is processed.
  void hold_input(const uint8_t* data, size_t n);
  void resume_input();
  void cancel_recv();
  void begin_data_frame(const nghttp2_frame& frame, const uint8_t* framehd);
  void end_data_frame(const nghttp2_frame& frame);
  /// The transport failed (fatal()): input is dropped, what it still has to send (an alert)
  /// goes out, then the connection closes. False: it closed already.
  bool transport_failed();
  /// From now on input is read and dropped (going_away_); the backlog goes.
  void drop_input();

  static constexpr int kMaxIov = 64;
  static constexpr size_t kHighWater = 256 * 1024;
  PlainTransport plain_;
  Transport* transport_ = &plain_;  // a TLS transport replaces it before start_io()
  iovec iov_[kMaxIov];
  bool released_ = false;
  bool going_away_ = false;       // go_away(): GOAWAY queued, input dropped, FIN once written
  bool close_when_sent_ = false;  // the transport failed: its last words out, then close
  bool write_shut_ = false;       // ... and the FIN went after it
  bool input_paused_ = false;     // input waits in backlog_: no recv until it is processed
  bool recv_cancelled_ = false;   // we cancelled the receive; its final completion is ours
  size_t withheld_ = 0;      // connection-level credit held back while the host is over its limit
  mem::ChunkQueue backlog_;  // input held back for later turns (fair share)
  uint64_t share_turn_ = 0;  // the host turn share_used_ counts for
  size_t share_used_ = 0;    // input processed in that turn
  int64_t send_progress_ns_ = 0;  // the last time the socket took bytes (or a send began)
};

}  // namespace ringlb::core::h2
