#include "core/server.h"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "core/cpus.h"
#include "core/log.h"
#include "core/net.h"
#include "core/reactor.h"
#include "core/shard.h"
#include "discovery/snapshot.h"

namespace ringlb::core {
namespace {

std::vector<lb::EndpointSetPtr> static_sets(const Config& config) {
  std::vector<lb::EndpointSetPtr> sets;
  for (const ClusterConfig& c : config.clusters) {
    std::vector<lb::Endpoint> members;
    for (const EndpointConfig& e : c.endpoints) {
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

void close_all(std::vector<std::vector<int>>& fds) {
  for (auto& per_shard : fds) {
    for (int fd : per_shard) {
      if (fd >= 0) ::close(fd);
    }
  }
}

}  // namespace

int run_server(const Config& config) {
  std::string error;
  auto choice = choose_reactor(config.proxy.io_backend, error);
  if (!choice) {
    LOG_ERROR("%s", error.c_str());
    return 1;
  }
  if (choice->backend == IoBackend::kIoUring) {
    LOG_INFO("io backend: io_uring (%s)", choice->note.c_str());
  } else {
    LOG_INFO("io backend: epoll (%s)", choice->note.c_str());
  }

  unsigned workers = config.proxy.workers;
  std::string why = "configured";
  if (workers == 0) workers = usable_cpus(&why);

  // Listeners: one SO_REUSEPORT socket per shard per listener. With port 0 the first socket
  // picks the port and the others join it.
  std::vector<std::vector<int>> fds(workers);
  for (const ListenerConfig& l : config.listeners) {
    sockaddr_storage addr = l.address.storage;
    for (unsigned s = 0; s < workers; ++s) {
      int fd = make_listen_socket(reinterpret_cast<const sockaddr*>(&addr), l.address.len, error);
      if (fd < 0) {
        LOG_ERROR("listener %s: %s", l.address.text.c_str(), error.c_str());
        close_all(fds);
        return 1;
      }
      if (s == 0) {
        SocketAddress bound = local_address(fd);
        addr = bound.storage;
        LOG_INFO("listener %s listening on %s", l.address.text.c_str(), bound.text.c_str());
      }
      fds[s].push_back(fd);
    }
  }

  // Shards inherit this mask: only the control thread takes the signals, via sigwait.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  signal(SIGPIPE, SIG_IGN);

  std::vector<lb::EndpointSetPtr> sets = static_sets(config);
  std::vector<std::unique_ptr<Shard>> shards;
  std::vector<std::thread> threads;
  std::vector<std::unique_ptr<std::atomic<int>>> ready;
  for (unsigned s = 0; s < workers; ++s) {
    ShardSetup setup{s, choice->backend, fds[s], sets};
    shards.push_back(std::make_unique<Shard>(config, std::move(setup)));
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
  LOG_INFO("ready: %u workers (%s)", workers, why.c_str());

  bool draining = false;
  for (;;) {
    bool all_done = true;
    for (auto& sh : shards) all_done &= sh->finished();
    if (all_done) break;
    timespec ts{0, 100'000'000};
    int sig = sigtimedwait(&sigs, nullptr, &ts);
    if (sig < 0) continue;
    if (draining) {
      LOG_WARN("second signal (%s): exiting now", strsignal(sig));
      _exit(128 + sig);
    }
    draining = true;
    LOG_INFO("%s: draining (up to %lld ms); send it again to exit at once", strsignal(sig),
             static_cast<long long>(config.proxy.drain_timeout.count() / 1000000));
    for (auto& sh : shards) sh->post_drain();
  }
  for (auto& t : threads) t.join();
  LOG_INFO("stopped");
  return 0;
}

}  // namespace ringlb::core
