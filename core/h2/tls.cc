#include "core/h2/tls.h"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cctype>
#include <cstring>

namespace ringlb::core::h2 {
namespace {

constexpr size_t kRecord = 16384;  // TLS's largest plaintext record
constexpr size_t kGather = 4096;   // smaller pieces are gathered into one record

template <typename T, void (*Free)(T*)>
struct Owned {
  T* p = nullptr;
  explicit Owned(T* v = nullptr) : p(v) {}
  ~Owned() {
    if (p != nullptr) Free(p);
  }
  Owned(const Owned&) = delete;
  Owned& operator=(const Owned&) = delete;
  T* release() {
    T* v = p;
    p = nullptr;
    return v;
  }
};
using OwnedBio = Owned<BIO, [](BIO* b) { BIO_free(b); }>;
using OwnedX509 = Owned<X509, X509_free>;
using OwnedKey = Owned<EVP_PKEY, EVP_PKEY_free>;

base::Unexpected error(std::string msg) {
  return base::Unexpected(base::Error{std::move(msg)});
}

// BoringSSL's reason for the newest queued error, in words ("no certificates in pem"), or "".
std::string ssl_error_words() {
  uint32_t e = ERR_peek_last_error();
  ERR_clear_error();
  if (e == 0) return "";
  const char* r = ERR_reason_error_string(e);
  std::string s = r != nullptr ? r : "error " + std::to_string(e);
  for (char& c : s) c = c == '_' ? ' ' : static_cast<char>(std::tolower(c));
  return s;
}

BIO* pem_bio(std::string_view pem) {
  return BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
}

std::vector<X509*> read_certs(std::string_view pem) {
  std::vector<X509*> out;
  OwnedBio bio(pem_bio(pem));
  while (X509* x = PEM_read_bio_X509(bio.p, nullptr, nullptr, nullptr)) out.push_back(x);
  ERR_clear_error();  // the end of the input reads as an error
  return out;
}

std::string asn1_text(const ASN1_STRING* s) {
  return std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                     static_cast<size_t>(ASN1_STRING_length(s)));
}

std::string common_name(X509* x) {
  X509_NAME* name = X509_get_subject_name(x);
  int i = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
  if (i < 0) return "";
  return asn1_text(X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i)));
}

// The SANs of type `type` (GEN_DNS, GEN_URI).
std::vector<std::string> sans(X509* x, int type) {
  std::vector<std::string> out;
  auto* names =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(x, NID_subject_alt_name, nullptr, nullptr));
  if (names == nullptr) return out;
  for (size_t i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
    const GENERAL_NAME* gn = sk_GENERAL_NAME_value(names, i);
    if (gn->type != type) continue;
    out.push_back(asn1_text(type == GEN_DNS ? gn->d.dNSName : gn->d.uniformResourceIdentifier));
  }
  GENERAL_NAMES_free(names);
  return out;
}

std::string serial_hex(X509* x) {
  BIGNUM* bn = ASN1_INTEGER_to_BN(X509_get_serialNumber(x), nullptr);
  if (bn == nullptr) return "?";
  char* hex = BN_bn2hex(bn);
  std::string s = hex != nullptr ? hex : "?";
  OPENSSL_free(hex);
  BN_free(bn);
  return s;
}

bool name_matches(std::string_view pattern, std::string_view host) {
  auto lower_eq = [](std::string_view a, std::string_view b) {
    return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
             return std::tolower(static_cast<unsigned char>(x)) ==
                    std::tolower(static_cast<unsigned char>(y));
           });
  };
  if (pattern.starts_with("*.")) {
    size_t dot = host.find('.');
    return dot != std::string_view::npos && dot > 0 &&
           lower_eq(pattern.substr(1), host.substr(dot));
  }
  return lower_eq(pattern, host);
}

int ex_index() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

TlsTransport* transport_of(const SSL* ssl) {
  return static_cast<TlsTransport*>(SSL_get_ex_data(ssl, ex_index()));
}

base::Result<void> use_cert_key(SSL_CTX* ctx, const TlsCertKey& ck) {
  std::vector<X509*> chain = read_certs(ck.cert_pem);
  if (chain.empty()) return error(ck.cert_path + ": no PEM certificate in the file");
  bool ok = SSL_CTX_use_certificate(ctx, chain[0]) == 1;
  for (size_t i = 1; ok && i < chain.size(); ++i) ok = SSL_CTX_add1_chain_cert(ctx, chain[i]) == 1;
  for (X509* x : chain) X509_free(x);
  if (!ok) return error(ck.cert_path + ": " + ssl_error_words());
  OwnedBio bio(pem_bio(ck.key_pem));
  OwnedKey key(PEM_read_bio_PrivateKey(bio.p, nullptr, nullptr, nullptr));
  if (key.p == nullptr) {
    ERR_clear_error();
    return error(ck.key_path + ": no PEM private key in the file (or it is encrypted)");
  }
  if (SSL_CTX_use_PrivateKey(ctx, key.p) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
    std::string why = ssl_error_words();
    return error(ck.key_path + ": the key does not belong to the certificate in " + ck.cert_path +
                 (why.empty() ? "" : " (" + why + ")"));
  }
  return {};
}

base::Result<int> add_cas(SSL_CTX* ctx, std::string_view pem, bool client_ca_names) {
  std::vector<X509*> cas = read_certs(pem);
  X509_STORE* store = SSL_CTX_get_cert_store(ctx);
  for (X509* x : cas) {
    X509_STORE_add_cert(store, x);
    if (client_ca_names) SSL_CTX_add_client_CA(ctx, x);
    X509_free(x);
  }
  ERR_clear_error();  // a certificate twice in the bundle is not an error
  return static_cast<int>(cas.size());
}

}  // namespace

const char* tls_failure_label(TlsFailure f) {
  switch (f) {
    case TlsFailure::kNone:
      return "none";
    case TlsFailure::kNoAlpnH2:
      return "no_alpn_h2";
    case TlsFailure::kTimeout:
      return "timeout";
    case TlsFailure::kNoClientCert:
      return "no_client_cert";
    case TlsFailure::kUnknownCa:
      return "unknown_ca";
    case TlsFailure::kExpired:
      return "expired";
    case TlsFailure::kNameMismatch:
      return "name_mismatch";
    case TlsFailure::kBadCertificate:
      return "bad_certificate";
    case TlsFailure::kAlert:
      return "alert";
    case TlsFailure::kProtocol:
    case TlsFailure::kCount:
      break;
  }
  return "protocol";
}

// ---- callbacks (BoringSSL's C interface) ----

int select_alpn(SSL* ssl, const uint8_t** out, uint8_t* outlen, const uint8_t* in, unsigned inlen,
                void*) {
  std::string offered;
  for (unsigned i = 0; i < inlen;) {
    unsigned len = in[i];
    if (i + 1 + len > inlen) break;
    std::string_view p(reinterpret_cast<const char*>(in + i + 1), len);
    if (p == "h2") {
      *out = in + i + 1;
      *outlen = static_cast<uint8_t>(len);
      return SSL_TLSEXT_ERR_OK;
    }
    if (!offered.empty()) offered += ",";
    offered += p;
    i += 1 + len;
  }
  if (TlsTransport* t = transport_of(ssl)) {
    t->alpn_refused_ = true;
    t->alpn_offered_ = offered;
  }
  return SSL_TLSEXT_ERR_ALERT_FATAL;  // no_application_protocol
}

int select_sni(SSL* ssl, int*, void* arg) {
  const auto* context = static_cast<const TlsContext*>(arg);
  const char* host = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  if (host == nullptr) return SSL_TLSEXT_ERR_OK;
  for (const TlsContext::Named& n : context->sni_) {
    for (const std::string& name : n.names) {
      if (name_matches(name, host)) {
        SSL_set_SSL_CTX(ssl, n.ctx);
        return SSL_TLSEXT_ERR_OK;
      }
    }
  }
  return SSL_TLSEXT_ERR_OK;  // the default certificate
}

int on_new_session(SSL* ssl, SSL_SESSION* s) {
  TlsTransport* t = transport_of(ssl);
  if (t != nullptr && t->on_session_ != nullptr) t->on_session_(t->on_session_arg_, s);
  return 0;  // not kept by us: the callee took its own reference
}

void on_info(const SSL* ssl, int where, int value) {
  if ((where & SSL_CB_ALERT) == 0 || (where & SSL_CB_READ) == 0) return;  // not one we sent
  if (TlsTransport* t = transport_of(ssl)) {
    if (t->alert_received_ < 0) t->alert_received_ = value & 0xff;
  }
}

// ---- contexts ----

TlsContext::~TlsContext() {
  for (Named& n : sni_) SSL_CTX_free(n.ctx);
  if (ctx_ != nullptr) SSL_CTX_free(ctx_);
}

namespace {

base::Result<SSL_CTX*> server_ctx(const TlsServerSettings& s, const TlsCertKey& ck) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_method());
  if (ctx == nullptr) return error("SSL_CTX_new: " + ssl_error_words());
  SSL_CTX_set_min_proto_version(ctx, s.tls13_only ? TLS1_3_VERSION : TLS1_2_VERSION);
  SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
  // Resumption is by tickets only (stateless: BoringSSL rotates their keys in memory); a
  // session cache would grow with clients.
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_alpn_select_cb(ctx, select_alpn, nullptr);
  SSL_CTX_set_info_callback(ctx, on_info);
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  if (auto r = use_cert_key(ctx, ck); !r) {
    SSL_CTX_free(ctx);
    return base::Unexpected(r.error());
  }
  if (!s.client_ca_pem.empty()) {
    add_cas(ctx, s.client_ca_pem, true);
    SSL_CTX_set_verify(
        ctx, SSL_VERIFY_PEER | (s.require_client_cert ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0),
        nullptr);
  }
  return ctx;
}

}  // namespace

base::Result<std::shared_ptr<TlsContext>> make_tls_server(const TlsServerSettings& s) {
  if (s.certs.empty()) return error("no certificate");
  auto context = std::make_shared<TlsContext>();
  context->server_ = true;
  auto main = server_ctx(s, s.certs[0]);
  if (!main) return base::Unexpected(main.error());
  context->ctx_ = *main;
  for (size_t i = 1; i < s.certs.size(); ++i) {
    auto more = server_ctx(s, s.certs[i]);
    if (!more) return base::Unexpected(more.error());
    TlsContext::Named n{*more, {}};
    std::vector<X509*> chain = read_certs(s.certs[i].cert_pem);
    if (!chain.empty()) {
      n.names = sans(chain[0], GEN_DNS);
      if (n.names.empty()) n.names.push_back(common_name(chain[0]));
    }
    for (X509* x : chain) X509_free(x);
    context->sni_.push_back(std::move(n));
  }
  if (!context->sni_.empty()) {
    SSL_CTX_set_tlsext_servername_callback(context->ctx_, select_sni);
    SSL_CTX_set_tlsext_servername_arg(context->ctx_, context.get());
  }
  std::vector<X509*> chain = read_certs(s.certs[0].cert_pem);
  if (!chain.empty()) {
    context->summary_ = "CN=" + common_name(chain[0]) + " serial " + serial_hex(chain[0]);
    if (X509_cmp_current_time(X509_get_notAfter(chain[0])) < 0) context->summary_ += " (EXPIRED)";
  }
  for (X509* x : chain) X509_free(x);
  return context;
}

base::Result<std::shared_ptr<TlsContext>> make_tls_client(const TlsClientSettings& s) {
  auto context = std::make_shared<TlsContext>();
  SSL_CTX* ctx = SSL_CTX_new(TLS_method());
  if (ctx == nullptr) return error("SSL_CTX_new: " + ssl_error_words());
  context->ctx_ = ctx;
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
  static const uint8_t kH2[] = {2, 'h', '2'};
  SSL_CTX_set_alpn_protos(ctx, kH2, sizeof kH2);
  SSL_CTX_set_info_callback(ctx, on_info);
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  // Sessions go to the pool (set_on_session), which offers the newest to its next connection.
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
  SSL_CTX_sess_set_new_cb(ctx, on_new_session);
  if (s.verify) {
    add_cas(ctx, s.ca_pem, false);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  } else {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
  }
  if (!s.client.cert_pem.empty()) {
    if (auto r = use_cert_key(ctx, s.client); !r) return base::Unexpected(r.error());
  }
  return context;
}

base::Result<void> check_cert_key(const TlsCertKey& ck) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_method());
  if (ctx == nullptr) return error("SSL_CTX_new: " + ssl_error_words());
  auto r = use_cert_key(ctx, ck);
  SSL_CTX_free(ctx);
  return r;
}

base::Result<void> check_ca_bundle(std::string_view pem, std::string_view path) {
  std::vector<X509*> cas = read_certs(pem);
  for (X509* x : cas) X509_free(x);
  if (cas.empty()) return error(std::string(path) + ": no PEM certificate in the file");
  return {};
}

void TlsSession::reset(SSL_SESSION* s) {
  if (s != nullptr) SSL_SESSION_up_ref(s);
  if (s_ != nullptr) SSL_SESSION_free(s_);
  s_ = s;
}

// ---- the transport ----

struct TlsBio {
  static BIO_METHOD* method() {
    static BIO_METHOD* m = [] {
      BIO_METHOD* b = BIO_meth_new(BIO_TYPE_SOURCE_SINK, "ringlb");
      BIO_meth_set_write(b, write);
      BIO_meth_set_read(b, read);
      BIO_meth_set_ctrl(b, ctrl);
      BIO_meth_set_create(b, [](BIO* bio) {
        BIO_set_init(bio, 1);
        return 1;
      });
      return b;
    }();
    return m;
  }
  static int write(BIO* b, const char* data, int len) {
    auto* t = static_cast<TlsTransport*>(BIO_get_data(b));
    BIO_clear_retry_flags(b);
    t->wire_.append(reinterpret_cast<const uint8_t*>(data), static_cast<size_t>(len));
    return len;
  }
  static int read(BIO* b, char* out, int len) {
    auto* t = static_cast<TlsTransport*>(BIO_get_data(b));
    BIO_clear_retry_flags(b);
    if (t->in_len_ == 0) {
      BIO_set_retry_read(b);
      return -1;
    }
    size_t n = std::min(t->in_len_, static_cast<size_t>(len));
    std::memcpy(out, t->in_, n);
    t->in_ += n;
    t->in_len_ -= n;
    return static_cast<int>(n);
  }
  static long ctrl(BIO*, int cmd, long, void*) { return cmd == BIO_CTRL_FLUSH ? 1 : 0; }
};

TlsTransport::TlsTransport(mem::ChunkPool* pool, std::shared_ptr<const TlsContext> context)
    : context_(std::move(context)), plain_(pool), wire_(pool), server_(context_->server()) {
  ssl_ = SSL_new(context_->ctx());
  if (ssl_ == nullptr) return;  // fails at the first handshake step
  BIO* bio = BIO_new(TlsBio::method());
  BIO_set_data(bio, this);
  SSL_set_bio(ssl_, bio, bio);  // one reference, taken by the SSL
  SSL_set_ex_data(ssl_, ex_index(), this);
  if (server_) {
    SSL_set_accept_state(ssl_);
  } else {
    SSL_set_connect_state(ssl_);
  }
}

TlsTransport::~TlsTransport() {
  if (ssl_ != nullptr) SSL_free(ssl_);
}

void TlsTransport::set_server_name(std::string_view sni, std::string_view verify_name) {
  if (ssl_ == nullptr) return;
  if (!sni.empty()) SSL_set_tlsext_host_name(ssl_, std::string(sni).c_str());
  if (verify_name.empty()) return;
  X509_VERIFY_PARAM* p = SSL_get0_param(ssl_);
  std::string name(verify_name);
  if (X509_VERIFY_PARAM_set1_ip_asc(p, name.c_str()) != 1) {
    ERR_clear_error();
    X509_VERIFY_PARAM_set_hostflags(p, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    X509_VERIFY_PARAM_set1_host(p, name.data(), name.size());
  }
}

void TlsTransport::set_session(SSL_SESSION* s) {
  if (ssl_ != nullptr && s != nullptr) SSL_set_session(ssl_, s);
}

const char* TlsTransport::version() const {
  return ssl_ != nullptr && done_ ? SSL_get_version(ssl_) : nullptr;
}

void TlsTransport::fail(TlsFailure f, std::string reason) {
  if (failure_ != TlsFailure::kNone) return;
  failure_ = f;
  reason_ = std::move(reason);
}

base::Result<void> TlsTransport::failure_from(int ret) {
  const int err = SSL_get_error(ssl_, ret);
  if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) return {};
  const long verify = SSL_get_verify_result(ssl_);
  const uint32_t first = ERR_peek_last_error();
  if (alert_received_ < 0 && last_in_len_ == 7 && last_in_[0] == 21 && last_in_[1] == 3 &&
      last_in_[3] == 0 && last_in_[4] == 2) {
    // A plaintext alert where TLS 1.3 expected an encrypted record: OpenSSL clients send their
    // verification failures so (before they switch keys); BoringSSL only sees a bad record.
    alert_received_ = last_in_[6];
  }
  if (ERR_GET_LIB(first) == ERR_LIB_SSL &&
      ERR_GET_REASON(first) == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE) {
    ERR_clear_error();
    fail(TlsFailure::kNoClientCert, "no client certificate");
  } else if (alpn_refused_) {
    fail(TlsFailure::kNoAlpnH2,
         "no ALPN h2 (the client offered " +
             (alpn_offered_.empty() ? std::string("nothing") : alpn_offered_) + ")");
  } else if (verify != X509_V_OK && verify != X509_V_ERR_INVALID_CALL) {
    TlsFailure f = TlsFailure::kBadCertificate;
    switch (verify) {
      case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
      case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
      case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
      case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
      case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
        f = TlsFailure::kUnknownCa;
        break;
      case X509_V_ERR_CERT_HAS_EXPIRED:
      case X509_V_ERR_CERT_NOT_YET_VALID:
        f = TlsFailure::kExpired;
        break;
      case X509_V_ERR_HOSTNAME_MISMATCH:
      case X509_V_ERR_IP_ADDRESS_MISMATCH:
        f = TlsFailure::kNameMismatch;
        break;
    }
    fail(f, std::string("certificate verify failed: ") + X509_verify_cert_error_string(verify));
  } else if (alert_received_ >= 0) {
    TlsFailure f = TlsFailure::kAlert;
    switch (alert_received_) {
      case SSL_AD_UNKNOWN_CA:
        f = TlsFailure::kUnknownCa;
        break;
      case SSL_AD_CERTIFICATE_EXPIRED:
        f = TlsFailure::kExpired;
        break;
      case SSL_AD_BAD_CERTIFICATE:
        f = TlsFailure::kBadCertificate;
        break;
      case SSL_AD_NO_APPLICATION_PROTOCOL:
        f = TlsFailure::kNoAlpnH2;
        break;
      case SSL_AD_CERTIFICATE_REQUIRED:
        f = TlsFailure::kNoClientCert;
        break;
    }
    fail(f, std::string("peer sent alert: ") + SSL_alert_desc_string_long(alert_received_));
  } else {
    if (err == SSL_ERROR_ZERO_RETURN || (err == SSL_ERROR_SYSCALL && first == 0)) {
      fail(TlsFailure::kProtocol, "the peer closed TLS");
    } else {
      std::string words = ssl_error_words();
      fail(TlsFailure::kProtocol, words.empty() ? "TLS error " + std::to_string(err) : words);
    }
  }
  ERR_clear_error();
  return error("TLS: " + reason_);
}

base::Result<void> TlsTransport::handshake() {
  if (ssl_ == nullptr) {
    fail(TlsFailure::kProtocol, "SSL_new failed");
    return error("TLS: SSL_new failed");
  }
  int r = SSL_do_handshake(ssl_);
  if (r != 1) return failure_from(r);
  const uint8_t* alpn = nullptr;
  unsigned alpn_len = 0;
  SSL_get0_alpn_selected(ssl_, &alpn, &alpn_len);
  if (std::string_view(reinterpret_cast<const char*>(alpn), alpn_len) != "h2") {
    fail(TlsFailure::kNoAlpnH2,
         server_ ? "no ALPN h2 (the client offered none)" : "backend did not select ALPN h2");
    return error("TLS: " + reason_);
  }
  done_ = true;
  resumed_ = SSL_session_reused(ssl_) != 0;
  take_peer_identity();
  return {};
}

void TlsTransport::take_peer_identity() {
  X509* peer = SSL_get_peer_certificate(ssl_);
  if (peer == nullptr) return;
  std::vector<std::string> uris = sans(peer, GEN_URI);
  if (!uris.empty()) {
    peer_identity_ = uris[0];
  } else if (std::vector<std::string> dns = sans(peer, GEN_DNS); !dns.empty()) {
    peer_identity_ = dns[0];
  } else {
    peer_identity_ = common_name(peer);
  }
  X509_free(peer);
}

base::Result<void> TlsTransport::on_recv(const uint8_t* wire, size_t n, TransportSink& sink) {
  if (failed()) return {};  // closing after its alert: input is dropped
  started_ = true;
  if (!done_) {  // the start of the latest input, to read a plaintext alert (failure_from)
    last_in_len_ = std::min<size_t>(n, sizeof last_in_);
    std::memcpy(last_in_, wire, last_in_len_);
  }
  in_ = wire;
  in_len_ = n;
  if (!done_) {
    // A failed handshake is not an error here: its alert is in wire_out(), and the
    // connection sends it before closing (fatal()).
    (void)handshake();
    if (!done_) {
      in_len_ = 0;
      return {};
    }
  }
  uint8_t buf[kRecord];
  for (;;) {
    int got = SSL_read(ssl_, buf, sizeof buf);
    if (got > 0) {
      if (!sink.on_plaintext(buf, static_cast<size_t>(got))) break;
      continue;
    }
    const int err = SSL_get_error(ssl_, got);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) break;
    in_len_ = 0;
    if (err == SSL_ERROR_ZERO_RETURN) return error("the peer closed TLS (close_notify)");
    std::string words = ssl_error_words();
    return error("TLS: " + (words.empty() ? "read failed" : words));
  }
  in_len_ = 0;
  return {};
}

base::Result<void> TlsTransport::seal() {
  if (failed()) {
    plain_.clear();
    return {};
  }
  if (!done_) {
    (void)handshake();  // a failure: fatal() says so, its alert is in wire_out()
    if (!done_) return {};
  }
  uint8_t gather[kRecord];
  while (!plain_.empty()) {
    iovec iov[16];
    const int cnt = plain_.peek_iovecs(iov, 16);
    const uint8_t* data = static_cast<const uint8_t*>(iov[0].iov_base);
    size_t n = std::min(iov[0].iov_len, kRecord);
    if (n < kGather && cnt > 1) {
      // Small frames (HEADERS, WINDOW_UPDATE, a short message): one record for several.
      n = 0;
      for (int i = 0; i < cnt && n < kRecord; ++i) {
        const size_t take = std::min(iov[i].iov_len, kRecord - n);
        std::memcpy(gather + n, iov[i].iov_base, take);
        n += take;
      }
      data = gather;
    }
    int w = SSL_write(ssl_, data, static_cast<int>(n));
    if (w <= 0) {
      std::string words = ssl_error_words();
      return error("TLS: " + (words.empty() ? "write failed" : words));
    }
    plain_.consume(static_cast<size_t>(w));
  }
  return {};
}

void TlsTransport::clear() {
  plain_.clear();
  wire_.clear();
}

}  // namespace ringlb::core::h2
