#include "core/runtime/control.h"

#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/base/log.h"
#include "core/proxy/tls_contexts.h"
#include "core/runtime/admin.h"
#include "core/runtime/health_checker.h"
#include "core/runtime/sd_notify.h"
#include "core/runtime/server.h"
#include "core/runtime/shard.h"
#include "discovery/followed_name.h"
#include "discovery/srv_lookup.h"

namespace ringlb::core::runtime {

using discovery::RecordType;

namespace {
enum : uint8_t { kTimerResolver = 1, kTimerPoll = 2, kTimerGoaway = 3, kTimerEject = 4 };
constexpr int64_t kPollNs = 50'000'000;
// Shards close their listeners within microseconds of a drain; this only bounds a stuck one.
constexpr int64_t kGoawayFallbackNs = 1'000'000'000;

RecordType record_type(config::DnsRecord r) {
  switch (r) {
    case config::DnsRecord::kAAAA:
      return RecordType::kAAAA;
    case config::DnsRecord::kSRV:
      return RecordType::kSRV;
    default:
      return RecordType::kA;
  }
}

discovery::RefreshPolicy refresh_policy(const config::DnsConfig& dns) {
  discovery::RefreshPolicy p;
  p.min_refresh_ns = dns.min_refresh.count();
  p.max_refresh_ns = dns.max_refresh.count();
  p.stale_after_ns = dns.stale_after.count();
  p.hold_ns = dns.hold.count() < 0 ? -1 : dns.hold.count();
  return p;
}

}  // namespace

sigset_t control_signals() {
  sigset_t sigs;
  sigemptyset(&sigs);
  for (int s : {SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2}) sigaddset(&sigs, s);
  return sigs;
}

/// One DNS-followed cluster: the membership policy (discovery::FollowedName) plus the I/O state
/// the controller keeps for it. Owner: the control thread.
struct Controller::DnsCluster final : io::TimerHandler {
  DnsCluster(Controller& o, size_t i, const config::ClusterConfig& c, uint64_t seed)
      : owner(o),
        index(i),
        config(&c),
        follow(c.dns.name, record_type(c.dns.record), refresh_policy(c.dns), seed) {
    timer.handler = this;
  }
  void on_timer(io::Timer&) override { owner.query(*this); }
  Controller& owner;
  size_t index;
  const config::ClusterConfig* config;
  discovery::FollowedName follow;
  discovery::SrvLookup srv;  // SRV follow-up lookups for targets the answer gave no address for
  io::Timer timer;
  bool in_flight = false;  // a refresh (the query, then any SRV target lookups) is out
  bool dead = false;       // a reload dropped it (in dead_dns_): answers are ignored
};

/// A c-ares socket as the reactor watches it. Lives until its ops have completed, even after
/// c-ares has closed the socket (rule 6).
struct Controller::Watch final : io::IoHandler {
  explicit Watch(Controller& o) : owner(o) { in.handler = out.handler = this; }
  void on_complete(io::Op& op, const io::Completion& c) override { owner.on_watch(*this, op, c); }
  Controller& owner;
  int fd = -1;
  io::Op in, out;
  bool read = false, write = false, dead = false;
};

Controller::Controller(std::shared_ptr<const config::Config> config, std::vector<Shard*> shards,
                       ReportQueue* reports)
    : config_(std::move(config)), shards_(std::move(shards)), reports_(reports) {
  resolver_timer_.handler = poll_timer_.handler = goaway_timer_.handler = eject_timer_.handler =
      this;
  resolver_timer_.tag = kTimerResolver;
  poll_timer_.tag = kTimerPoll;
  goaway_timer_.tag = kTimerGoaway;
  eject_timer_.tag = kTimerEject;
  eligibility_.resize(config_->clusters.size());
  for (const config::ClusterConfig& c : config_->clusters) {
    outlier_.emplace_back(proxy::outlier_policy(c.outlier));
    members_.push_back(c.endpoints.size());  // DNS clusters: the first report says
    cluster_uid_.push_back(next_uid_++);
  }
  signal_op_.handler = reports_op_.handler = this;
  reports_op_.tag = 1;
}

Controller::~Controller() {
  resolver_.reset();  // runs pending callbacks (ARES_EDESTRUCTION) while dns_ still exists
  for (auto& [fd, w] : watches_) delete w;
  // Closed sockets whose cancelled polls never completed: the reactor is not turned again.
  for (Watch* w : dying_watches_) delete w;
  if (signal_fd_ >= 0) ::close(signal_fd_);
}

bool Controller::start(std::string& error) {
  // The control thread is never the hot path: epoll works everywhere, io_uring or not.
  reactor_ = io::make_epoll_reactor(error);
  if (!reactor_) return false;
  sigset_t sigs = control_signals();
  signal_fd_ = signalfd(-1, &sigs, SFD_NONBLOCK | SFD_CLOEXEC);
  if (signal_fd_ < 0) {
    error = std::string("signalfd: ") + strerror(errno);
    return false;
  }
  reactor_->poll_in(signal_fd_, signal_op_);
  if (reports_ != nullptr && reports_->fd() >= 0) reactor_->poll_in(reports_->fd(), reports_op_);
  // Before the first DNS answers: /ready says why it is not ready yet while they are awaited.
  if (!start_admin(error)) return false;
  start_health_checks();

  uint64_t seed = static_cast<uint64_t>(base::mono_now_ns());
  for (size_t i = 0; i < config_->clusters.size(); ++i) {
    const config::ClusterConfig& c = config_->clusters[i];
    if (!c.uses_dns()) continue;
    dns_.push_back(std::make_unique<DnsCluster>(*this, i, c, seed + i));
  }
  if (dns_.empty()) return true;
  std::vector<std::string> servers;
  for (const io::SocketAddress& a : config_->discovery.resolvers) servers.push_back(a.text);
  resolver_ = discovery::Resolver::create(
      servers, static_cast<int>(config_->discovery.query_timeout.count() / 1000000), *this, error);
  if (!resolver_) return false;
  for (auto& d : dns_) query(*d);
  return true;
}

void Controller::turn(int64_t max_wait_ns) {
  int64_t now = base::mono_now_ns();
  timers_.run(now);
  int64_t t = timers_.next_timeout(base::mono_now_ns());
  if (t < 0 || t > max_wait_ns) t = max_wait_ns;
  if (health_ && health_->flush()) t = 0;  // health check output still queued: do not sleep
  reactor_->run_once(t);
}

void Controller::await_first_answers(int64_t max_wait_ns) {
  int64_t deadline = base::mono_now_ns() + max_wait_ns;
  for (;;) {
    bool all = true;
    for (auto& d : dns_) all &= d->follow.answered();
    int64_t left = deadline - base::mono_now_ns();
    if (all || left <= 0 || draining_) return;
    turn(left);
  }
}

bool Controller::shards_finished() const {
  for (Shard* s : shards_) {
    if (!s->finished()) return false;
  }
  return true;
}

int Controller::run() {
  // Shards can also stop on their own (a failed start); poll for that now and then.
  timers_.arm(poll_timer_, base::mono_now_ns() + kPollNs);
  while (!shards_finished()) turn(kPollNs);
  return 0;
}

void Controller::on_signal() {
  signalfd_siginfo si;
  while (::read(signal_fd_, &si, sizeof si) == static_cast<ssize_t>(sizeof si)) {
    int sig = static_cast<int>(si.ssi_signo);
    if (sig == SIGHUP) {
      if (draining_) {
        LOG_WARN("SIGHUP: draining; no reload");
        continue;
      }
      LOG_INFO("SIGHUP: reloading %s", config_->source.c_str());
      reload();  // logs what it did
      continue;
    }
    if (sig == SIGUSR1 || sig == SIGUSR2) {
      LOG_INFO("%s: ignored", strsignal(sig));
      continue;
    }
    if (draining_) {
      LOG_WARN("second signal (%s): exiting now", strsignal(sig));
      base::log_flush();  // the line above must get out before we go
      _exit(128 + sig);
    }
    draining_ = true;
    LOG_INFO("%s: draining (up to %lld ms); send it again to exit at once", strsignal(sig),
             static_cast<long long>(config_->proxy.drain_timeout.count() / 1000000));
    notify_systemd("STOPPING=1\nSTATUS=draining");
    // Two steps: every shard leaves the listening group, then (on_reports: all of them said
    // so, or after kGoawayFallbackNs) every client is told to go.
    for (Shard* s : shards_) s->post_leave();
    timers_.arm(goaway_timer_, base::mono_now_ns() + kGoawayFallbackNs);
  }
}

void Controller::post_goaway() {
  if (goaway_posted_) return;
  goaway_posted_ = true;
  timers_.cancel(goaway_timer_);
  for (Shard* s : shards_) s->post_goaway();
}

void Controller::on_reports() {
  // Shards have already acted (replayed or failed the calls, ejected locally). Here: ejections
  // confirmed or taken back for every shard, counts for operators, and one log line per
  // endpoint per 10 s at most, so a dead endpoint cannot flood the log.
  constexpr int64_t kLogEveryNs = 10'000'000'000;
  const int64_t now = base::mono_now_ns();
  for (ShardReport* r : reports_->take_all()) {
    if (r->kind == ShardReport::Kind::kSnapshot) {
      on_snapshot_report(r);  // an admin collection's answer, not about an endpoint
      continue;
    }
    if (r->kind == ShardReport::Kind::kListenersClosed) {
      if (++shards_left_ == shards_.size()) post_goaway();
      delete r;
      continue;
    }
    // Sent under another config generation (a reload crossed it): its cluster index means
    // nothing now. Rare (only around a reload) and only counts and logs are lost.
    if (r->generation != generation_ || r->cluster >= config_->clusters.size()) {
      delete r;
      continue;
    }
    const std::string& cluster = config_->clusters[r->cluster].name;
    EndpointReports& e = endpoint_reports_[cluster + "/" + r->endpoint];
    ++e.counts[static_cast<size_t>(r->kind)];
    e.last_detail = r->detail;
    e.last_ns = now;
    if (r->kind == ShardReport::Kind::kEjected || r->kind == ShardReport::Kind::kNotEjected) {
      on_ejection_report(*r, now);  // logs for itself
    } else if (e.logged_ns == 0 || now - e.logged_ns >= kLogEveryNs) {
      e.logged_ns = now;
      LOG_WARN("cluster %s: upstream %s: %s (%s; shard %u)", cluster.c_str(), r->endpoint.c_str(),
               report_kind_name(r->kind), r->detail.c_str(), r->shard);
    }
    delete r;
  }
}

void Controller::on_complete(io::Op& op, const io::Completion& c) {
  if (&op == &reports_op_) {
    on_reports();
    if (!c.more) reactor_->poll_in(reports_->fd(), reports_op_);
    return;
  }
  on_signal();  // the only op the controller itself owns
  if (!c.more) reactor_->poll_in(signal_fd_, signal_op_);
}

void Controller::on_watch(Watch& w, io::Op& op, const io::Completion& c) {
  if (!w.dead && c.res >= 0) {
    bool readable = &op == &w.in;
    resolver_->process(w.fd, readable, !readable);
    // c-ares may have closed the socket meanwhile (watch(fd, false, false) marks it dead).
    if (!w.dead) {
      if (readable && w.read && !w.in.active) reactor_->poll_in(w.fd, w.in);
      if (!readable && w.write && !w.out.active) reactor_->poll_out(w.fd, w.out);
    }
    rearm_resolver_timer();
  }
  if (w.dead && !w.in.active && !w.out.active) {
    dying_watches_.erase(&w);
    delete &w;
  }
}

void Controller::watch(int fd, bool read, bool write) {
  auto it = watches_.find(fd);
  Watch* w = it == watches_.end() ? nullptr : it->second;
  if (!read && !write) {
    if (w == nullptr) return;
    watches_.erase(it);
    w->dead = true;
    reactor_->cancel(w->in);
    reactor_->cancel(w->out);
    reactor_->forget(fd);
    if (!w->in.active && !w->out.active) {
      delete w;
    } else {
      dying_watches_.insert(w);  // freed when its cancels complete, or by ~Controller
    }
    return;
  }
  if (w == nullptr) {
    w = new Watch(*this);
    w->fd = fd;
    watches_[fd] = w;
  }
  w->read = read;
  w->write = write;
  if (read && !w->in.active) reactor_->poll_in(fd, w->in);
  if (!read && w->in.active) reactor_->cancel(w->in);
  if (write && !w->out.active) reactor_->poll_out(fd, w->out);
}

void Controller::rearm_resolver_timer() {
  if (!resolver_) return;
  int64_t t = resolver_->next_timeout_ns();
  if (t < 0)
    timers_.cancel(resolver_timer_);
  else
    timers_.arm(resolver_timer_, base::mono_now_ns() + t);
}

void Controller::on_timer(io::Timer& t) {
  if (t.tag == kTimerResolver) {
    resolver_->on_timeout();
    rearm_resolver_timer();
    return;
  }
  if (t.tag == kTimerGoaway) {
    // A shard that never said it left (one that stopped early): the others go on anyway.
    LOG_WARN("drain: %zu of %zu shards closed their listeners in time; telling clients to go",
             shards_left_, shards_.size());
    post_goaway();
    return;
  }
  if (t.tag == kTimerEject) {
    expire_ejections(base::mono_now_ns());
    return;
  }
  // kTimerPoll: only wakes the loop so run() can notice shards that stopped.
  timers_.arm(poll_timer_, base::mono_now_ns() + kPollNs);
}

void Controller::query(DnsCluster& c) {
  if (c.in_flight) return;
  c.in_flight = true;
  DnsCluster* cp = &c;
  resolver_->query(
      c.config->dns.name, static_cast<uint16_t>(record_type(c.config->dns.record)),
      [this, cp](int status, std::span<const uint8_t> msg) { on_answer(*cp, status, msg); });
  rearm_resolver_timer();
}

void Controller::on_answer(DnsCluster& c, int status, std::span<const uint8_t> message) {
  if (status == ARES_EDESTRUCTION) return;  // the controller is going away
  if (c.dead) {
    c.in_flight = false;
    return;
  }
  const config::DnsConfig& dns = c.config->dns;
  discovery::LookupResult r =
      discovery::interpret_answer(status, message, record_type(dns.record), dns.port);
  if (r.unresolved.empty()) {
    finish(c, r);
    return;
  }
  // SRV targets without addresses in the answer: look each up (A and AAAA); the refresh
  // finishes when all are in.
  DnsCluster* cp = &c;
  for (discovery::SrvLookup::Query& q : c.srv.begin(std::move(r.endpoints), r.ttl, r.unresolved)) {
    resolver_->query(
        q.name, static_cast<uint16_t>(q.type),
        [this, cp, round = q.round, index = q.index](int st, std::span<const uint8_t> msg) {
          on_srv_target(*cp, round, index, st, msg);
        });
  }
  rearm_resolver_timer();
}

void Controller::on_srv_target(DnsCluster& c, uint64_t round, size_t index, int status,
                               std::span<const uint8_t> message) {
  if (status == ARES_EDESTRUCTION || c.dead) return;
  if (c.srv.on_result(round, index, status, message)) finish(c, c.srv.result());
}

void Controller::finish(DnsCluster& c, const discovery::LookupResult& result) {
  c.in_flight = false;
  const int64_t now = base::mono_now_ns();
  discovery::FollowedName::Step step = c.follow.record(result, now);
  ++dns_refreshes_[c.config->name].results[static_cast<size_t>(dns_result_of(result))];
  if (step.log == discovery::FollowedName::Log::kInfo) {
    LOG_INFO("cluster %s: %s", c.config->name.c_str(), step.log_text.c_str());
  } else if (step.log == discovery::FollowedName::Log::kWarn) {
    LOG_WARN("cluster %s: %s", c.config->name.c_str(), step.log_text.c_str());
  }
  if (step.publish) {
    LOG_INFO("cluster %s: publishing %zu endpoints (version %llu)", c.config->name.c_str(),
             step.publish->size(), static_cast<unsigned long long>(step.publish->version));
    for (Shard* s : shards_) s->post_endpoints(c.index, step.publish);
    if (health_) {
      health_->set_endpoints(cluster_uid_[c.index], c.config->name, c.config->health_check,
                             *step.publish, health_tls(c.index));
    }
    // An endpoint a shard had forgotten (it left the set and drained) and meets again in this
    // set starts fresh there: tell it what it missed. Messages arrive in order, set first.
    rebroadcast_eligibility(c.index);
  }
  timers_.arm(c.timer, now + step.next_query_in_ns);
}

HealthTls Controller::health_tls(size_t index) const {
  return {proxy::cluster_tls(config_, index), &config_->clusters[index]};
}

void Controller::ensure_health_checker() {
  if (health_) return;
  // Clusters are known to it by uid (cluster_uid_), which a reload does not renumber.
  health_ = std::make_unique<HealthChecker>(
      *reactor_, timers_,
      [this](size_t uid, const std::string& key, bool healthy, std::string_view why) {
        on_health_change(uid, key, healthy, why);
      });
}

int Controller::cluster_of_uid(size_t uid) const {
  for (size_t i = 0; i < cluster_uid_.size(); ++i) {
    if (cluster_uid_[i] == uid) return static_cast<int>(i);
  }
  return -1;
}

void Controller::start_health_checks() {
  std::vector<lb::EndpointSetPtr> sets;  // static clusters' members; DNS ones come in finish()
  for (size_t i = 0; i < config_->clusters.size(); ++i) {
    const config::ClusterConfig& c = config_->clusters[i];
    if (!c.health_check.enabled) continue;
    if (!health_) {
      sets = initial_endpoint_sets(*config_);
      ensure_health_checker();
    }
    if (!c.uses_dns()) {
      health_->set_endpoints(cluster_uid_[i], c.name, c.health_check, *sets[i], health_tls(i));
    }
  }
}

void Controller::on_health_change(size_t uid, const std::string& endpoint_key, bool healthy,
                                  std::string_view why) {
  const int index = cluster_of_uid(uid);
  if (index < 0) return;  // a reload removed the cluster (its checks are stopped)
  const size_t cluster = static_cast<size_t>(index);
  // Every shard takes it out (lb::kUnhealthy: no new calls, calls in flight finish) or back.
  set_health(cluster, endpoint_key, healthy);
  const std::string* name = health_->endpoint_name(uid, endpoint_key);
  const char* endpoint = name != nullptr ? name->c_str() : "?";
  const std::string& c = config_->clusters[cluster].name;
  const int n = static_cast<int>(why.size());
  if (healthy) {
    LOG_INFO("cluster %s: endpoint %s healthy again (%.*s)", c.c_str(), endpoint, n, why.data());
  } else {
    LOG_WARN("cluster %s: endpoint %s unhealthy: %.*s", c.c_str(), endpoint, n, why.data());
  }
}

// Here, not in control_admin.cc: it reads DnsCluster, which only this file sees.
std::string Controller::readiness() const {
  if (draining_) return "draining";
  for (const auto& d : dns_) {
    if (!d->follow.answered()) {
      return "waiting for the first DNS answer for cluster " + d->config->name + " (" +
             d->config->dns.name + ")";
    }
  }
  if (!serving_) return "starting";
  return "";
}

std::vector<Controller::DnsStatus> Controller::dns_status() const {
  std::vector<DnsStatus> out;
  for (const auto& d : dns_) {
    out.push_back({d->config->name, d->config->dns.name, d->follow.membership().members().size(),
                   d->follow.last_result(), d->follow.last_refresh_ns()});
  }
  return out;
}

}  // namespace ringlb::core::runtime

namespace ringlb::core::runtime {

void Controller::reload_dns(const ReloadPlan& plan, const std::vector<int>& cluster_to) {
  // config_ is the new snapshot already. A follow whose cluster stays with the same DNS
  // settings goes on as it is (its members, its timers, a query in flight); any other stops
  // (kept in dead_dns_ while c-ares may still call back into it), and new ones start.
  std::vector<bool> followed(config_->clusters.size(), false);
  std::vector<std::unique_ptr<DnsCluster>> kept;
  for (auto& d : dns_) {
    const int j = d->index < cluster_to.size() ? cluster_to[d->index] : -1;
    if (j >= 0 && config_->clusters[static_cast<size_t>(j)].uses_dns() &&
        !plan.clusters[static_cast<size_t>(j)].dns) {
      d->index = static_cast<size_t>(j);
      d->config = &config_->clusters[d->index];
      followed[d->index] = true;
      kept.push_back(std::move(d));
      continue;
    }
    LOG_INFO("cluster %s: no longer following %s", d->config->name.c_str(),
             d->config->dns.name.c_str());
    d->dead = true;
    timers_.cancel(d->timer);
    dead_dns_.push_back(std::move(d));
  }
  dns_ = std::move(kept);
  const uint64_t seed = static_cast<uint64_t>(base::mono_now_ns());
  for (size_t i = 0; i < config_->clusters.size(); ++i) {
    const config::ClusterConfig& c = config_->clusters[i];
    if (!c.uses_dns() || followed[i]) continue;
    if (!resolver_) {
      std::string error;
      std::vector<std::string> servers;
      for (const io::SocketAddress& a : config_->discovery.resolvers) servers.push_back(a.text);
      resolver_ = discovery::Resolver::create(
          servers, static_cast<int>(config_->discovery.query_timeout.count() / 1000000), *this,
          error);
      if (!resolver_) {
        LOG_ERROR("reload: cluster %s: no resolver: %s", c.name.c_str(), error.c_str());
        continue;
      }
    }
    LOG_INFO("cluster %s: following %s", c.name.c_str(), c.dns.name.c_str());
    dns_.push_back(std::make_unique<DnsCluster>(*this, i, c, seed + i));
    query(*dns_.back());
  }
}

lb::EndpointSetPtr Controller::dns_members(size_t cluster) const {
  for (const auto& d : dns_) {
    if (d->index == cluster && d->follow.answered()) return d->follow.membership().snapshot(0);
  }
  return nullptr;
}

}  // namespace ringlb::core::runtime
