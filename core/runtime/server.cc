#include "core/runtime/server.h"

#include <netinet/in.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "core/base/log.h"
#include "core/io/net.h"
#include "core/io/reactor.h"
#include "core/proxy/tls_contexts.h"
#include "core/runtime/access_log.h"
#include "core/runtime/control.h"
#include "core/runtime/cpus.h"
#include "core/runtime/sd_notify.h"
#include "core/runtime/shard.h"
#include "discovery/snapshot.h"

namespace ringlb::core::runtime {
namespace {

constexpr int64_t kFirstAnswerWaitNs = 5'000'000'000;

void close_all(std::vector<std::vector<int>>& fds) {
  for (auto& per_shard : fds) {
    for (int fd : per_shard) {
      if (fd >= 0) ::close(fd);
    }
  }
}

uint16_t port_of(const io::SocketAddress& a) {
  const auto* sa = reinterpret_cast<const sockaddr*>(&a.storage);
  if (sa->sa_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in*>(sa)->sin_port);
  return ntohs(reinterpret_cast<const sockaddr_in6*>(sa)->sin6_port);
}

// Whether the process being replaced can hand the connections still in its accept queues over
// when it closes its sockets (Linux >= 5.14, off by default; see README, "Restarting ringlb").
std::string migrate_note() {
  FILE* f = fopen("/proc/sys/net/ipv4/tcp_migrate_req", "re");
  if (f == nullptr) return "";
  int v = -1;
  if (fscanf(f, "%d", &v) != 1) v = -1;
  fclose(f);
  if (v != 0) return "";
  return " (net.ipv4.tcp_migrate_req is 0: a connection that reaches the old process's accept "
         "queue in the instant it closes its sockets is reset; 1 hands it over)";
}

// The sockets bound but not listening yet (another process was there first): they join its
// reuseport group now, before the shards arm their accepts.
bool listen_deferred(const config::Config& config, const std::vector<bool>& deferred,
                     const std::vector<std::vector<int>>& fds, std::string& error) {
  for (size_t i = 0; i < deferred.size(); ++i) {
    if (!deferred[i]) continue;
    for (const std::vector<int>& per_shard : fds) {
      if (!io::start_listening(per_shard[i], error)) return false;
    }
    LOG_INFO("listener %s listening on %s", config.listeners[i].address.text.c_str(),
             io::local_address(fds[0][i]).text.c_str());
  }
  return true;
}

}  // namespace

bool bind_listener(const config::ListenerConfig& l, unsigned workers, bool defer_if_taken,
                   std::vector<int>& fds, bool& deferred, std::string& error) {
  // Where another process (the ringlb this one replaces) already listens, the sockets are only
  // bound now and listen once this process can serve: a listening socket joins the kernel's
  // reuseport group at once, and new connections hashed to it would wait in its backlog through
  // the first DNS answers (or be reset if this process failed to start) while the old process
  // could have served them.
  sockaddr_storage addr = l.address.storage;
  const auto* sa = reinterpret_cast<const sockaddr*>(&addr);
  deferred = defer_if_taken && port_of(l.address) != 0 && io::address_in_use(sa, l.address.len);
  const size_t first = fds.size();
  for (unsigned s = 0; s < workers; ++s) {
    int fd = io::make_listen_socket(sa, l.address.len, error, !deferred);
    if (fd < 0) {
      for (size_t i = first; i < fds.size(); ++i) ::close(fds[i]);
      fds.resize(first);
      return false;
    }
    if (s == 0) {
      io::SocketAddress bound = io::local_address(fd);
      addr = bound.storage;
      if (deferred) {
        LOG_INFO("listener %s: another process listens on %s; taking over once ready%s",
                 l.address.text.c_str(), bound.text.c_str(), migrate_note().c_str());
      } else {
        LOG_INFO("listener %s listening on %s", l.address.text.c_str(), bound.text.c_str());
      }
    }
    fds.push_back(fd);
  }
  return true;
}

std::vector<lb::EndpointSetPtr> initial_endpoint_sets(const config::Config& config) {
  std::vector<lb::EndpointSetPtr> sets;
  for (const config::ClusterConfig& c : config.clusters) {
    if (c.uses_dns()) {
      // Empty until the controller's first answer; calls meanwhile learn why.
      auto empty = std::make_shared<lb::EndpointSet>();
      empty->note = "waiting for the first DNS answer for " + c.dns.name;
      sets.push_back(std::move(empty));
      continue;
    }
    std::vector<lb::Endpoint> members;
    for (const config::EndpointConfig& e : c.endpoints) {
      lb::Endpoint ep;
      std::memcpy(&ep.addr, &e.address.storage, e.address.len);
      ep.addr_len = e.address.len;
      ep.weight = e.weight;
      ep.name = e.address.text;
      members.push_back(std::move(ep));
    }
    sets.push_back(discovery::make_endpoint_set(std::move(members), 1));
  }
  return sets;
}

void log_tls(const std::shared_ptr<const config::Config>& config) {
  for (size_t i = 0; i < config->listeners.size(); ++i) {
    const config::ListenerConfig& l = config->listeners[i];
    if (!l.tls.enabled) continue;
    auto t = proxy::listener_tls(config, i);
    LOG_INFO("listener %s: TLS (ALPN h2), certificate %s%s%s", l.address.text.c_str(),
             t ? t->summary().c_str() : "?",
             l.tls.sni_certs.empty()
                 ? ""
                 : (", " + std::to_string(l.tls.sni_certs.size()) + " more by SNI").c_str(),
             l.tls.client_ca.path.empty()
                 ? ""
                 : (l.tls.require_client_cert ? ", client certificates required"
                                              : ", client certificates verified if sent"));
  }
  for (const config::ClusterConfig& c : config->clusters) {
    if (!c.tls.enabled) continue;
    LOG_INFO("cluster %s: TLS to backends (ALPN h2), %s%s", c.name.c_str(),
             c.tls.verify ? ("verified against " + c.tls.ca.path).c_str()
                          : "NOT verified (tls.verify = false)",
             c.tls.cert.path.empty() ? "" : ", with a client certificate");
  }
}

int run_server(const config::Config& config, bool log_level_pinned) {
  // From here on shards (and everyone) only enqueue log lines; every return below flushes them.
  base::start_log_writer();
  struct StopLogWriter {
    ~StopLogWriter() { base::stop_log_writer(); }
  } stop_log_writer;
  std::string error;
  auto choice = io::choose_reactor(config.proxy.io_backend, error);
  if (!choice) {
    LOG_ERROR("%s", error.c_str());
    return 1;
  }
  if (choice->backend == io::IoBackend::kIoUring) {
    LOG_INFO("io backend: io_uring (%s)", choice->note.c_str());
  } else {
    LOG_INFO("io backend: epoll (%s)", choice->note.c_str());
  }

  unsigned workers = config.proxy.workers;
  std::string why = "configured";
  if (workers == 0) workers = usable_cpus(&why);

  // Listeners: one SO_REUSEPORT socket per shard per listener (bind_listener).
  std::vector<std::vector<int>> fds(workers);
  std::vector<bool> deferred(config.listeners.size(), false);
  for (size_t i = 0; i < config.listeners.size(); ++i) {
    std::vector<int> per_shard;
    bool d = false;
    if (!bind_listener(config.listeners[i], workers, true, per_shard, d, error)) {
      LOG_ERROR("listener %s: %s", config.listeners[i].address.text.c_str(), error.c_str());
      close_all(fds);
      return 1;
    }
    deferred[i] = d;
    for (unsigned s = 0; s < workers; ++s) fds[s].push_back(per_shard[s]);
  }

  // Shards inherit this mask: only the control thread takes the signals, via sigwait.
  sigset_t sigs = control_signals();
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  signal(SIGPIPE, SIG_IGN);  // a peer that went away is an EPIPE on its socket, not our death

  // The access log outlives the shards (declared first, destroyed last); stopped after them.
  std::unique_ptr<AccessLog> access_log = AccessLog::create(config.log, workers, error);
  if (config.log.access != config::AccessLogTarget::kOff &&
      (!access_log || !access_log->start(error))) {
    LOG_ERROR("%s", error.c_str());
    close_all(fds);
    return 1;
  }
  auto snapshot = std::make_shared<const config::Config>(config);
  if (auto tls = proxy::prepare_tls(snapshot); !tls) {
    LOG_ERROR("%s", tls.error().message.c_str());
    close_all(fds);
    return 1;
  }
  log_tls(snapshot);
  std::vector<lb::EndpointSetPtr> sets = initial_endpoint_sets(config);
  ReportQueue reports;  // shards -> control thread; outlives both
  std::vector<std::unique_ptr<Shard>> shards;
  std::vector<std::thread> threads;
  std::vector<std::unique_ptr<std::atomic<int>>> ready;
  for (unsigned s = 0; s < workers; ++s) {
    ShardSetup setup{s, workers, choice->backend, fds[s], sets, &reports};
    setup.access_log = access_log ? access_log->shard(s) : nullptr;
    shards.push_back(std::make_unique<Shard>(snapshot, std::move(setup)));
    ready.push_back(std::make_unique<std::atomic<int>>(0));
    threads.emplace_back([sh = shards.back().get(), r = ready.back().get()] { sh->run(*r); });
  }
  bool ok = true;
  for (unsigned s = 0; s < workers; ++s) {
    ready[s]->wait(0);
    if (ready[s]->load() < 0) {
      LOG_ERROR("shard %u failed to start: %s", s, shards[s]->error().c_str());
      ok = false;
    }
  }
  if (!ok) {
    for (auto& sh : shards) {
      if (!sh->finished()) sh->post_drain();
    }
    for (auto& t : threads) t.join();
    return 1;
  }
  std::vector<Shard*> shard_ptrs;
  for (auto& sh : shards) shard_ptrs.push_back(sh.get());
  Controller controller(snapshot, shard_ptrs, &reports);
  if (log_level_pinned) controller.pin_log_level();
  controller.set_io_backend(choice->backend);
  controller.set_access_log(access_log.get());
  if (!controller.start(error)) {
    LOG_ERROR("control thread: %s", error.c_str());
    for (auto& sh : shards) sh->post_drain();
    for (auto& t : threads) t.join();
    return 1;
  }
  // Serve only once DNS clusters have had their first answer (or a bounded wait): until then
  // clients wait in the listen backlog instead of getting UNAVAILABLE for an empty cluster.
  controller.await_first_answers(kFirstAnswerWaitNs);
  // A SIGTERM during the wait has the shards closing their sockets: leave them alone.
  if (!controller.draining()) {
    if (!listen_deferred(config, deferred, fds, error)) {
      LOG_ERROR("%s", error.c_str());
      for (auto& sh : shards) sh->post_drain();
      for (auto& t : threads) t.join();
      return 1;
    }
    for (auto& sh : shards) sh->post_serve();
    controller.set_serving();
    LOG_INFO("ready: %u workers (%s)", workers, why.c_str());
    // systemd (Type=notify): the start is done once the listeners serve, the moment of the
    // `ready:` line. That is also after the bounded first-DNS wait ran out: /ready may then
    // still say it waits for DNS, but a start that failed on a DNS outage at boot would only
    // turn into a restart loop.
    std::string not_yet = controller.readiness();
    notify_systemd("READY=1\nSTATUS=serving: " + std::to_string(workers) + " workers" +
                   (not_yet.empty() ? std::string() : "; " + not_yet));
  }
  int rc = controller.run();
  for (auto& t : threads) t.join();
  if (access_log) access_log->stop();  // every line the shards queued, then the drop count
  LOG_INFO("stopped");
  return rc;
}

}  // namespace ringlb::core::runtime
