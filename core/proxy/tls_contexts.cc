#include "core/proxy/tls_contexts.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <mutex>
#include <vector>

namespace ringlb::core::proxy {
namespace {

struct Entry {
  std::weak_ptr<const config::Config> config;
  const config::Config* key = nullptr;
  std::vector<std::shared_ptr<h2::TlsContext>> listeners;
  std::vector<std::shared_ptr<h2::TlsContext>> clusters;
};

std::mutex mu;
std::vector<Entry> table;  // one per snapshot that runs; dead snapshots are dropped

h2::TlsCertKey cert_key(const config::PemFile& cert, const config::PemFile& key) {
  return {cert.pem, key.pem, cert.path, key.path};
}

// A certificate/key pair's problem, under the key that names the file at fault.
base::Result<void> check_pair(const config::PemFile& cert, const config::PemFile& key) {
  if (auto r = h2::check_cert_key(cert_key(cert, key)); !r) {
    const bool cert_fault = r.error().message.starts_with(cert.path + ":");
    return base::fail((cert_fault ? cert.where : key.where) + ": " + r.error().message);
  }
  return {};
}

base::Result<std::shared_ptr<h2::TlsContext>> build_listener(const config::ListenerTlsConfig& t) {
  if (auto r = check_pair(t.cert, t.key); !r) return base::Unexpected(r.error());
  for (const auto& [c, k] : t.sni_certs) {
    if (auto r = check_pair(c, k); !r) return base::Unexpected(r.error());
  }
  h2::TlsServerSettings s;
  s.certs.push_back(cert_key(t.cert, t.key));
  for (const auto& [c, k] : t.sni_certs) s.certs.push_back(cert_key(c, k));
  s.client_ca_pem = t.client_ca.pem;
  s.require_client_cert = t.require_client_cert;
  s.tls13_only = t.tls13_only;
  if (!t.client_ca.pem.empty()) {
    if (auto r = h2::check_ca_bundle(t.client_ca.pem, t.client_ca.path); !r) {
      return base::fail(t.client_ca.where + ": " + r.error().message);
    }
  }
  return h2::make_tls_server(s);
}

base::Result<std::shared_ptr<h2::TlsContext>> build_cluster(const config::ClusterTlsConfig& t) {
  if (!t.cert.pem.empty()) {
    if (auto r = check_pair(t.cert, t.key); !r) return base::Unexpected(r.error());
  }
  h2::TlsClientSettings s;
  s.ca_pem = t.ca.pem;
  s.verify = t.verify;
  if (!t.cert.pem.empty()) s.client = cert_key(t.cert, t.key);
  if (t.verify) {
    if (auto r = h2::check_ca_bundle(t.ca.pem, t.ca.path); !r) {
      return base::fail((t.ca.where.empty() ? t.where : t.ca.where) + ": " + r.error().message);
    }
  }
  return h2::make_tls_client(s);
}

// Errors from the checks above name their key already; BoringSSL's own get the table's.
std::string positioned(const std::string& where, const std::string& message) {
  const std::string source = where.substr(0, where.find(':'));
  return message.starts_with(source + ":") ? message : where + ": " + message;
}

base::Result<void> build_all(const config::Config& c, Entry& e) {
  e.listeners.resize(c.listeners.size());
  e.clusters.resize(c.clusters.size());
  for (size_t i = 0; i < c.listeners.size(); ++i) {
    const config::ListenerTlsConfig& t = c.listeners[i].tls;
    if (!t.enabled) continue;
    auto r = build_listener(t);
    if (!r) return base::fail(positioned(t.where, r.error().message));
    e.listeners[i] = *r;
  }
  for (size_t i = 0; i < c.clusters.size(); ++i) {
    const config::ClusterTlsConfig& t = c.clusters[i].tls;
    if (!t.enabled) continue;
    auto r = build_cluster(t);
    if (!r) return base::fail(positioned(t.where, r.error().message));
    e.clusters[i] = *r;
  }
  return {};
}

bool has_tls(const config::Config& c) {
  for (const auto& l : c.listeners) {
    if (l.tls.enabled) return true;
  }
  for (const auto& cl : c.clusters) {
    if (cl.tls.enabled) return true;
  }
  return false;
}

// The entry of `config`, built if new. Caller holds mu.
base::Result<Entry*> entry_of(const std::shared_ptr<const config::Config>& config) {
  std::erase_if(table, [](const Entry& e) { return e.config.expired(); });
  for (Entry& e : table) {
    if (e.key == config.get()) return &e;
  }
  Entry e;
  e.config = config;
  e.key = config.get();
  if (auto r = build_all(*config, e); !r) return base::Unexpected(r.error());
  table.push_back(std::move(e));
  return &table.back();
}

}  // namespace

base::Result<void> prepare_tls(const std::shared_ptr<const config::Config>& config) {
  if (!has_tls(*config)) return {};
  std::lock_guard lock(mu);
  auto e = entry_of(config);
  if (!e) return base::Unexpected(e.error());
  return {};
}

std::shared_ptr<h2::TlsContext> listener_tls(const std::shared_ptr<const config::Config>& config,
                                             size_t i) {
  if (i >= config->listeners.size() || !config->listeners[i].tls.enabled) return nullptr;
  std::lock_guard lock(mu);
  auto e = entry_of(config);
  return e ? (*e)->listeners[i] : nullptr;
}

std::shared_ptr<h2::TlsContext> cluster_tls(const std::shared_ptr<const config::Config>& config,
                                            size_t i) {
  if (i >= config->clusters.size() || !config->clusters[i].tls.enabled) return nullptr;
  std::lock_guard lock(mu);
  auto e = entry_of(config);
  return e ? (*e)->clusters[i] : nullptr;
}

TlsNames tls_names(const config::ClusterConfig& c, const sockaddr_storage& addr) {
  TlsNames n;
  n.sni = !c.tls.sni.empty() ? c.tls.sni : c.dns.name;
  if (!c.tls.verify) return n;
  n.verify = n.sni;
  if (n.verify.empty()) {
    char ip[INET6_ADDRSTRLEN] = "";
    const void* a =
        addr.ss_family == AF_INET6
            ? static_cast<const void*>(&reinterpret_cast<const sockaddr_in6&>(addr).sin6_addr)
            : static_cast<const void*>(&reinterpret_cast<const sockaddr_in&>(addr).sin_addr);
    inet_ntop(addr.ss_family, a, ip, sizeof ip);
    n.verify = ip;
  }
  return n;
}

std::unique_ptr<h2::TlsTransport> client_transport(mem::ChunkPool* pool,
                                                   std::shared_ptr<const h2::TlsContext> context,
                                                   const config::ClusterConfig& c,
                                                   const sockaddr_storage& addr) {
  auto t = std::make_unique<h2::TlsTransport>(pool, std::move(context));
  TlsNames names = tls_names(c, addr);
  t->set_server_name(names.sni, names.verify);
  return t;
}

base::Result<void> check_tls(const config::Config& config) {
  Entry e;
  return build_all(config, e);
}

}  // namespace ringlb::core::proxy
