#pragma once
// TLS (BoringSSL) as a Transport: the handshake and the records run over memory, never over
// the socket, so TLS works the same on io_uring and epoll and never blocks a shard.
//
// Copies per direction (DATA payloads):
// - in: the socket's receive buffer -> BoringSSL's record buffer (one copy, through the read
//   BIO, which hands BoringSSL the receive buffer itself), decrypted in place there, then
//   SSL_read copies the plaintext out for nghttp2 (a second copy). BoringSSL's public API has
//   no way to decrypt into the caller's memory, so two is the floor without its internals.
// - out: nghttp2 and the call write frames into plain_out() as for cleartext; seal() encrypts
//   them (BoringSSL's record buffer: the cipher's own pass), and the write BIO appends the
//   records to wire_out() (one copy). Small frames are gathered into one record first (one
//   more copy of those few bytes, far cheaper than a record and an AEAD call each).
//
// TlsContext: one SSL_CTX per listener or cluster per config generation, built by the control
// thread (or the first shard that needs it) and shared by every shard: BoringSSL's SSL_CTX is
// safe to share once configured, and one context means one set of session-ticket keys (which
// BoringSSL rotates in memory), so a client resumes on any shard.
// Owner of a TlsTransport: the connection that holds it (one thread).
#include <openssl/ssl.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "core/base/result.h"
#include "core/h2/transport.h"

namespace ringlb::core::h2 {

/// Why a handshake failed, for metrics (the log line carries the words).
enum class TlsFailure : uint8_t {
  kNone,
  kNoAlpnH2,
  kTimeout,
  kNoClientCert,
  kUnknownCa,
  kExpired,
  kNameMismatch,
  kBadCertificate,
  kAlert,
  kProtocol,
  kCount
};
const char* tls_failure_label(TlsFailure f);

struct TlsCertKey {
  std::string cert_pem;  // leaf first, then its chain
  std::string key_pem;
  std::string cert_path;  // for messages
  std::string key_path;
};

struct TlsServerSettings {
  std::vector<TlsCertKey> certs;  // the first is the default; the others are chosen by SNI
  std::string client_ca_pem;      // empty: no client certificates asked for
  bool require_client_cert = true;
  bool tls13_only = false;
};

struct TlsClientSettings {
  std::string ca_pem;  // the bundle to verify backends against
  TlsCertKey client;   // empty cert_pem: no client certificate
  bool verify = true;
};

class TlsContext {
 public:
  ~TlsContext();
  SSL_CTX* ctx() const { return ctx_; }
  bool server() const { return server_; }
  /// What the default certificate is (subject and serial), for the log.
  const std::string& summary() const { return summary_; }

 private:
  friend base::Result<std::shared_ptr<TlsContext>> make_tls_server(const TlsServerSettings&);
  friend base::Result<std::shared_ptr<TlsContext>> make_tls_client(const TlsClientSettings&);
  friend int select_sni(SSL* ssl, int* alert, void* arg);
  struct Named {
    SSL_CTX* ctx;
    std::vector<std::string> names;  // DNS SANs, else the CN; "*.x" matches one label
  };
  SSL_CTX* ctx_ = nullptr;
  std::vector<Named> sni_;  // more certificates: their own contexts, same settings
  std::string summary_;
  bool server_ = false;
};

/// Builds the context of a TLS listener / a cluster's connections. Errors name the file and
/// what is wrong with it.
base::Result<std::shared_ptr<TlsContext>> make_tls_server(const TlsServerSettings& s);
base::Result<std::shared_ptr<TlsContext>> make_tls_client(const TlsClientSettings& s);

/// Checks one PEM certificate chain and key (they parse, and the key is the certificate's).
/// Config loading uses it so a bad file is named before anything runs.
base::Result<void> check_cert_key(const TlsCertKey& ck);
/// Checks a PEM bundle of CA certificates (at least one parses).
base::Result<void> check_ca_bundle(std::string_view pem, std::string_view path);

/// A client session kept for resumption (a reference held; freed with the holder).
class TlsSession {
 public:
  TlsSession() = default;
  ~TlsSession() { reset(nullptr); }
  TlsSession(const TlsSession&) = delete;
  TlsSession& operator=(const TlsSession&) = delete;
  /// Keeps `s` (takes a reference of its own), dropping the one held.
  void reset(SSL_SESSION* s);
  SSL_SESSION* get() const { return s_; }

 private:
  SSL_SESSION* s_ = nullptr;
};

class TlsTransport final : public Transport {
 public:
  /// Holds `context` (its callbacks' state) while the connection lives, past a reload.
  TlsTransport(mem::ChunkPool* pool, std::shared_ptr<const TlsContext> context);
  ~TlsTransport() override;
  TlsTransport(const TlsTransport&) = delete;
  TlsTransport& operator=(const TlsTransport&) = delete;

  /// Client side, before the first seal(): the SNI to send (empty: none) and the name the
  /// certificate must carry (a host name, or an IP address literal).
  void set_server_name(std::string_view sni, std::string_view verify_name);
  /// Client side: a session to resume (the pool's last one for this backend).
  void set_session(SSL_SESSION* s);
  /// Client side: called with each new session the server issues (the caller takes a
  /// reference if it keeps it).
  void set_on_session(void (*fn)(void* arg, SSL_SESSION* s), void* arg) {
    on_session_ = fn;
    on_session_arg_ = arg;
  }

  const char* name() const override { return "tls"; }
  base::Result<void> on_recv(const uint8_t* wire, size_t n, TransportSink& sink) override;
  mem::ChunkQueue& plain_out() override { return plain_; }
  base::Result<void> seal() override;
  mem::ChunkQueue& wire_out() override { return wire_; }
  void clear() override;
  const std::string* fatal() const override { return failed() ? &reason_ : nullptr; }

  bool handshake_done() const { return done_; }
  /// Some bytes came from the peer (a ClientHello, or what claimed to be one).
  bool started() const { return started_; }
  bool failed() const { return failure_ != TlsFailure::kNone; }
  TlsFailure failure() const { return failure_; }
  /// Why the handshake failed, in words ("certificate verify failed: certificate has expired").
  const std::string& failure_reason() const { return reason_; }
  /// Records a failure the transport cannot see itself (the handshake timed out).
  void fail(TlsFailure f, std::string reason);
  bool resumed() const { return resumed_; }
  /// "TLSv1.3" once the handshake is done.
  const char* version() const;
  /// The verified peer certificate's identity: its first URI SAN, else its first DNS SAN,
  /// else its CN; empty without one.
  const std::string& peer_identity() const { return peer_identity_; }

 private:
  friend struct TlsBio;
  friend int on_new_session(SSL* ssl, SSL_SESSION* s);
  friend int select_alpn(SSL* ssl, const uint8_t** out, uint8_t* outlen, const uint8_t* in,
                         unsigned inlen, void* arg);
  friend void on_info(const SSL* ssl, int where, int value);
  base::Result<void> handshake();
  base::Result<void> failure_from(int ret);
  void take_peer_identity();

  std::shared_ptr<const TlsContext> context_;
  SSL* ssl_ = nullptr;
  mem::ChunkQueue plain_;
  mem::ChunkQueue wire_;
  const uint8_t* in_ = nullptr;  // on_recv's bytes the read BIO has not handed over yet
  size_t in_len_ = 0;
  bool server_ = false;
  bool done_ = false;
  bool started_ = false;
  bool resumed_ = false;
  TlsFailure failure_ = TlsFailure::kNone;
  std::string reason_;
  std::string alpn_offered_;  // server: what the client offered when h2 was not among it
  bool alpn_refused_ = false;
  int alert_received_ = -1;
  uint8_t last_in_[7] = {};
  size_t last_in_len_ = 0;
  std::string peer_identity_;
  void (*on_session_)(void*, SSL_SESSION*) = nullptr;
  void* on_session_arg_ = nullptr;
};

}  // namespace ringlb::core::h2
