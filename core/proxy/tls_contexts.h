#pragma once
// The TLS contexts of a config snapshot: one per TLS listener and per TLS cluster, built once
// (the control thread prepares them right after loading, so a certificate BoringSSL rejects
// fails the start or the reload) and shared by every shard running that snapshot. Shards
// that start or reload later find them here. Any thread; a mutex guards the table (touched
// only when a snapshot starts running).
#include <sys/socket.h>

#include <memory>
#include <string>

#include "core/base/result.h"
#include "core/config/config.h"
#include "core/h2/tls.h"

namespace ringlb::core::proxy {

/// Builds (or finds) every TLS context of `config`. The error names the config position and
/// the file ("FILE:LINE:COLUMN: listener[0].tls: server.key: the key does not belong ...").
base::Result<void> prepare_tls(const std::shared_ptr<const config::Config>& config);
/// Listener `i`'s / cluster `i`'s context, or null when it has no `tls` (or it failed to build:
/// prepare_tls said why).
std::shared_ptr<h2::TlsContext> listener_tls(const std::shared_ptr<const config::Config>& config,
                                             size_t i);
std::shared_ptr<h2::TlsContext> cluster_tls(const std::shared_ptr<const config::Config>& config,
                                            size_t i);
/// What a cluster's TLS connection to `addr` sends as SNI (may be empty) and verifies the
/// certificate against: `tls.sni`, else the cluster's DNS name, else the endpoint's IP address
/// (no SNI then; the certificate must carry it as an IP SAN). No name with verify = false.
struct TlsNames {
  std::string sni;
  std::string verify;
};
TlsNames tls_names(const config::ClusterConfig& c, const sockaddr_storage& addr);
/// A new client transport for a connection of cluster `c` to `addr` over `context`.
std::unique_ptr<h2::TlsTransport> client_transport(mem::ChunkPool* pool,
                                                   std::shared_ptr<const h2::TlsContext> context,
                                                   const config::ClusterConfig& c,
                                                   const sockaddr_storage& addr);
/// Checks the TLS files of a config not meant to run (`ringlb check`): builds and drops them.
base::Result<void> check_tls(const config::Config& config);

}  // namespace ringlb::core::proxy
