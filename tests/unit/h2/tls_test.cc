// TlsTransport: two transports (a server and a client) handshake and exchange bytes in memory,
// with certificates made here (BoringSSL), so every outcome is exact: ALPN, verification by
// name and CA, expiry, client certificates, resumption, SNI choice, and the alert a failed
// handshake leaves to send.
#include "core/h2/tls.h"

#include <doctest/doctest.h>
#include <openssl/bio.h>
#include <openssl/bytestring.h>
#include <openssl/ec_key.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <memory>
#include <string>
#include <vector>

#include "core/mem/buffer.h"

using namespace ringlb::core;

namespace {

// What `write(bio)` writes to a memory BIO, as a string.
template <typename Write>
std::string pem_with(Write write) {
  BIO* b = BIO_new(BIO_s_mem());
  write(b);
  const uint8_t* p = nullptr;
  size_t n = 0;
  BIO_mem_contents(b, &p, &n);
  std::string s(reinterpret_cast<const char*>(p), n);
  BIO_free(b);
  return s;
}

std::string pem_of(X509* x) {
  return pem_with([&](BIO* b) { PEM_write_bio_X509(b, x); });
}

std::string pem_of(EVP_PKEY* k) {
  return pem_with(
      [&](BIO* b) { PEM_write_bio_PrivateKey(b, k, nullptr, nullptr, 0, nullptr, nullptr); });
}

EVP_PKEY* new_key() {
  EC_KEY* ec = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
  EC_KEY_generate_key(ec);
  EVP_PKEY* k = EVP_PKEY_new();
  EVP_PKEY_assign_EC_KEY(k, ec);
  return k;
}

/// A certificate (and its key) for `cn` with SANs `sans` ("DNS:x", "URI:y", "IP:1.2.3.4"),
/// signed by `issuer` (null: self-signed, a CA), valid from `from_days` to `to_days` (from now).
struct Cert {
  X509* x = nullptr;
  EVP_PKEY* key = nullptr;
  Cert() = default;
  Cert(const Cert&) = delete;
  Cert& operator=(const Cert&) = delete;
  ~Cert() {
    X509_free(x);
    EVP_PKEY_free(key);
  }
  std::string cert_pem() const { return pem_of(x); }
  std::string key_pem() const { return pem_of(key); }
  h2::TlsCertKey pair() const { return {cert_pem(), key_pem(), "test.crt", "test.key"}; }
};

void make_cert(Cert& c, const std::string& cn, const std::string& sans, const Cert* issuer,
               long serial = 1, int from_days = -1, int to_days = 30) {
  c.key = new_key();
  c.x = X509_new();
  X509_set_version(c.x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(c.x), serial);
  X509_gmtime_adj(X509_getm_notBefore(c.x), static_cast<long>(from_days) * 86400);
  X509_gmtime_adj(X509_getm_notAfter(c.x), static_cast<long>(to_days) * 86400);
  X509_set_pubkey(c.x, c.key);
  X509_NAME* name = X509_get_subject_name(c.x);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const uint8_t*>(cn.c_str()),
                             -1, -1, 0);
  X509_set_issuer_name(c.x, issuer != nullptr ? X509_get_subject_name(issuer->x) : name);
  X509V3_CTX ctx;
  X509V3_set_ctx(&ctx, issuer != nullptr ? issuer->x : c.x, c.x, nullptr, nullptr, 0);
  auto add = [&](int nid, const char* value) {
    X509_EXTENSION* e = X509V3_EXT_nconf_nid(nullptr, &ctx, nid, value);
    REQUIRE(e != nullptr);
    X509_add_ext(c.x, e, -1);
    X509_EXTENSION_free(e);
  };
  if (issuer == nullptr) {
    add(NID_basic_constraints, "critical,CA:TRUE");
    add(NID_key_usage, "critical,keyCertSign,cRLSign");
  } else {
    add(NID_basic_constraints, "critical,CA:FALSE");
    if (!sans.empty()) add(NID_subject_alt_name, sans.c_str());
  }
  X509_sign(c.x, issuer != nullptr ? issuer->key : c.key, EVP_sha256());
}

struct Sink final : h2::TransportSink {
  std::string got;
  bool on_plaintext(const uint8_t* data, size_t n) override {
    got.append(reinterpret_cast<const char*>(data), n);
    return true;
  }
};

/// Moves what each side's wire_out() holds to the other until neither has anything.
void exchange(mem::ChunkPool&, h2::TlsTransport& client, Sink& client_sink,
              h2::TlsTransport& server, Sink& server_sink) {
  for (int round = 0; round < 20; ++round) {
    bool moved = false;
    for (auto [from, to, sink] :
         {std::tuple{&client, &server, &server_sink}, std::tuple{&server, &client, &client_sink}}) {
      (void)from->seal();
      mem::ChunkQueue& q = from->wire_out();
      if (q.empty()) continue;
      std::vector<uint8_t> bytes(q.size());
      q.read(bytes.data(), bytes.size());
      (void)to->on_recv(bytes.data(), bytes.size(), *sink);
      moved = true;
    }
    if (!moved) return;
  }
}

struct Pki {
  Cert ca, other_ca, server, other_name, expired, client, client_wrong_ca, sni_server;
  Pki() {
    make_cert(ca, "Test CA", "", nullptr);
    make_cert(other_ca, "Other CA", "", nullptr);
    make_cert(server, "ringlb.test", "DNS:ringlb.test,IP:127.0.0.1", &ca, 2);
    make_cert(other_name, "wrong.test", "DNS:wrong.test", &ca, 3);
    make_cert(expired, "ringlb.test", "DNS:ringlb.test", &ca, 4, -30, -1);
    make_cert(client, "client", "URI:spiffe://test/client", &ca, 5);
    make_cert(client_wrong_ca, "client", "URI:spiffe://test/client", &other_ca, 6);
    make_cert(sni_server, "other.test", "DNS:other.test,DNS:*.wild.test", &ca, 7);
  }
};

Pki& pki() {
  static Pki p;
  return p;
}

std::shared_ptr<h2::TlsContext> server_ctx(const h2::TlsServerSettings& s) {
  auto r = h2::make_tls_server(s);
  REQUIRE(r.has_value());
  return *r;
}

std::shared_ptr<h2::TlsContext> client_ctx(const h2::TlsClientSettings& s) {
  auto r = h2::make_tls_client(s);
  REQUIRE(r.has_value());
  return *r;
}

h2::TlsServerSettings server_settings(const Cert& c) {
  h2::TlsServerSettings s;
  s.certs.push_back(c.pair());
  return s;
}

h2::TlsClientSettings client_settings(const Cert& ca) {
  h2::TlsClientSettings s;
  s.ca_pem = ca.cert_pem();
  return s;
}

struct Pair {
  mem::ChunkPool pool;
  std::unique_ptr<h2::TlsTransport> client, server;
  Sink client_sink, server_sink;
  Pair(const std::shared_ptr<h2::TlsContext>& client_ctx,
       const std::shared_ptr<h2::TlsContext>& server_ctx, std::string_view sni = "ringlb.test",
       std::string_view verify = "ringlb.test") {
    client = std::make_unique<h2::TlsTransport>(&pool, client_ctx);
    server = std::make_unique<h2::TlsTransport>(&pool, server_ctx);
    client->set_server_name(sni, verify);
  }
  void run() { exchange(pool, *client, client_sink, *server, server_sink); }
};

}  // namespace

TEST_CASE("tls: a handshake with ALPN h2, bytes both ways, then a resumed session") {
  auto sc = server_ctx(server_settings(pki().server));
  auto cc = client_ctx(client_settings(pki().ca));
  SSL_SESSION* saved = nullptr;
  {
    Pair p(cc, sc);
    p.client->set_on_session(
        [](void* arg, SSL_SESSION* s) {
          auto** slot = static_cast<SSL_SESSION**>(arg);
          if (*slot == nullptr) {
            SSL_SESSION_up_ref(s);
            *slot = s;
          }
        },
        &saved);
    const std::string hello = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    p.client->plain_out().append(reinterpret_cast<const uint8_t*>(hello.data()), hello.size());
    p.run();
    REQUIRE(p.client->handshake_done());
    REQUIRE(p.server->handshake_done());
    CHECK_FALSE(p.server->resumed());
    CHECK(std::string(p.server->version()) == "TLSv1.3");
    CHECK(p.server_sink.got == hello);
    // A large answer: several records, every byte in order.
    std::string big(100'000, 'x');
    for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>('a' + i % 26);
    p.server->plain_out().append(reinterpret_cast<const uint8_t*>(big.data()), big.size());
    p.run();
    CHECK(p.client_sink.got == big);
    CHECK(p.server->peer_identity().empty());  // no client certificate
  }
  REQUIRE(saved != nullptr);
  Pair again(cc, sc);
  again.client->set_session(saved);
  SSL_SESSION_free(saved);
  again.run();
  REQUIRE(again.server->handshake_done());
  CHECK(again.server->resumed());
  CHECK(again.client->resumed());
}

TEST_CASE("tls: the client's verification names the failure: unknown CA, name, expiry") {
  auto cc = client_ctx(client_settings(pki().ca));
  SUBCASE("a server certificate from another CA") {
    auto other = client_ctx(client_settings(pki().other_ca));
    auto sc = server_ctx(server_settings(pki().server));
    Pair p(other, sc);
    p.run();
    CHECK(p.client->failure() == h2::TlsFailure::kUnknownCa);
    CHECK(p.client->failure_reason().find("unable to get local issuer certificate") !=
          std::string::npos);
    // The alert went to the server, which names it in turn.
    CHECK(p.server->failed());
    CHECK(p.server->failure_reason().find("peer sent alert") != std::string::npos);
    CHECK(p.client->fatal() != nullptr);
  }
  SUBCASE("a certificate for another name") {
    auto sc = server_ctx(server_settings(pki().other_name));
    Pair p(cc, sc);
    p.run();
    CHECK(p.client->failure() == h2::TlsFailure::kNameMismatch);
    CHECK(p.client->failure_reason() == "certificate verify failed: Hostname mismatch");
  }
  SUBCASE("an IP address verified against the IP SAN (no SNI)") {
    auto sc = server_ctx(server_settings(pki().server));
    Pair p(cc, sc, "", "127.0.0.1");
    p.run();
    CHECK(p.client->handshake_done());
    Pair q(cc, sc, "", "127.0.0.2");
    q.run();
    CHECK(q.client->failure() == h2::TlsFailure::kNameMismatch);
  }
  SUBCASE("an expired certificate") {
    auto sc = server_ctx(server_settings(pki().expired));
    Pair p(cc, sc);
    p.run();
    CHECK(p.client->failure() == h2::TlsFailure::kExpired);
    CHECK(p.client->failure_reason() == "certificate verify failed: certificate has expired");
  }
}

TEST_CASE("tls: client certificates: required, optional, from another CA; the identity") {
  auto cc_plain = client_ctx(client_settings(pki().ca));
  h2::TlsClientSettings with_cert = client_settings(pki().ca);
  with_cert.client = pki().client.pair();
  auto cc_cert = client_ctx(with_cert);
  h2::TlsClientSettings wrong = client_settings(pki().ca);
  wrong.client = pki().client_wrong_ca.pair();
  auto cc_wrong = client_ctx(wrong);
  h2::TlsServerSettings req = server_settings(pki().server);
  req.client_ca_pem = pki().ca.cert_pem();
  auto required = server_ctx(req);
  req.require_client_cert = false;
  auto optional = server_ctx(req);

  Pair ok(cc_cert, required);
  ok.run();
  REQUIRE(ok.server->handshake_done());
  CHECK(ok.server->peer_identity() == "spiffe://test/client");

  Pair none(cc_plain, required);
  none.run();
  CHECK(none.server->failure() == h2::TlsFailure::kNoClientCert);
  CHECK(none.server->failure_reason() == "no client certificate");

  Pair bad(cc_wrong, required);
  bad.run();
  CHECK(bad.server->failure() == h2::TlsFailure::kUnknownCa);
  CHECK(bad.server->failure_reason().starts_with("certificate verify failed: "));

  Pair opt(cc_plain, optional);
  opt.run();
  CHECK(opt.server->handshake_done());
  CHECK(opt.server->peer_identity().empty());
}

TEST_CASE("tls: SNI picks among the listener's certificates; wildcard names match one label") {
  h2::TlsServerSettings s = server_settings(pki().server);
  s.certs.push_back(pki().sni_server.pair());
  auto sc = server_ctx(s);
  auto cc = client_ctx(client_settings(pki().ca));
  for (const char* name : {"other.test", "a.wild.test"}) {
    Pair p(cc, sc, name, name);
    p.run();
    CHECK_MESSAGE(p.client->handshake_done(), name);
  }
  Pair fallback(cc, sc, "ringlb.test", "ringlb.test");
  fallback.run();
  CHECK(fallback.client->handshake_done());
  Pair deep(cc, sc, "a.b.wild.test", "a.b.wild.test");  // the default certificate: no match
  deep.run();
  CHECK(deep.client->failure() == h2::TlsFailure::kNameMismatch);
}

TEST_CASE("tls: a key that is not the certificate's, and PEM that is not, are named") {
  h2::TlsCertKey mixed{pki().server.cert_pem(), pki().client.key_pem(), "s.crt", "c.key"};
  auto r = h2::check_cert_key(mixed);
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().message.find("c.key: the key does not belong to the certificate in s.crt") !=
        std::string::npos);
  h2::TlsCertKey junk{"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
                      pki().server.key_pem(), "junk.crt", "s.key"};
  auto j = h2::check_cert_key(junk);
  REQUIRE_FALSE(j.has_value());
  CHECK(j.error().message.starts_with("junk.crt: "));
  CHECK_FALSE(h2::check_ca_bundle("nothing here", "ca.pem").has_value());
  CHECK(h2::check_ca_bundle(pki().ca.cert_pem(), "ca.pem").has_value());
}
