#pragma once
// Transport: the one layer between a connection's socket and its nghttp2 session. The plain
// transport passes bytes through; TLS (tls.h) decrypts what arrives and encrypts what the
// session wrote before it goes on the wire.
//
// Zero-copy output: the session's frames (DATA payloads included) are written straight into
// plain_out(). For the plain transport that queue *is* the wire queue, so nothing is copied on
// the way out; a TLS transport encrypts from it into its own wire queue in seal().
// Owner: the connection that holds it (one thread).
#include <cstddef>
#include <cstdint>
#include <string>

#include "core/base/result.h"
#include "core/mem/buffer.h"

namespace ringlb::core::h2 {

/// Where a transport delivers the bytes it decoded.
class TransportSink {
 public:
  /// False: the session failed and the connection is closing; stop delivering.
  virtual bool on_plaintext(const uint8_t* data, size_t n) = 0;

 protected:
  ~TransportSink() = default;
};

class Transport {
 public:
  virtual ~Transport() = default;
  virtual const char* name() const = 0;
  /// Bytes read from the socket; what they decode to goes to `sink`.
  virtual base::Result<void> on_recv(const uint8_t* wire, size_t n, TransportSink& sink) = 0;
  /// Where the session's bytes go.
  virtual mem::ChunkQueue& plain_out() = 0;
  /// Moves what plain_out() holds to wire_out() (encrypting it, for TLS).
  virtual base::Result<void> seal() = 0;
  /// What the socket sends from; the connection consumes what was sent.
  virtual mem::ChunkQueue& wire_out() = 0;
  /// Drops everything queued (the connection is closing).
  virtual void clear() = 0;
  /// Why the transport can go no further (a failed TLS handshake), or null. What wire_out()
  /// still holds (its alert) is sent, then the connection closes with this reason.
  virtual const std::string* fatal() const { return nullptr; }
};

/// Cleartext HTTP/2 (h2c with prior knowledge): bytes pass through, one queue both ways out.
class PlainTransport final : public Transport {
 public:
  explicit PlainTransport(mem::ChunkPool* pool) : out_(pool) {}
  const char* name() const override { return "plain"; }
  base::Result<void> on_recv(const uint8_t* wire, size_t n, TransportSink& sink) override {
    sink.on_plaintext(wire, n);
    return {};
  }
  mem::ChunkQueue& plain_out() override { return out_; }
  base::Result<void> seal() override { return {}; }
  mem::ChunkQueue& wire_out() override { return out_; }
  void clear() override { out_.clear(); }

 private:
  mem::ChunkQueue out_;
};

}  // namespace ringlb::core::h2
