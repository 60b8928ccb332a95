#include "core/runtime/control.h"

#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>

#include "core/base/log.h"
#include "core/runtime/shard.h"
#include "discovery/dns_message.h"

namespace ringlb::core::runtime {

using discovery::QueryOutcome;
using discovery::RecordType;

namespace {
enum : uint8_t { kTimerResolver = 1, kTimerPoll = 2 };
constexpr int64_t kPollNs = 50'000'000;

RecordType record_type(config::DnsRecord r) {
  switch (r) {
    case config::DnsRecord::kAAAA: return RecordType::kAAAA;
    case config::DnsRecord::kSRV: return RecordType::kSRV;
    default: return RecordType::kA;
  }
}

const char* record_name(config::DnsRecord r) {
  switch (r) {
    case config::DnsRecord::kAAAA: return "AAAA";
    case config::DnsRecord::kSRV: return "SRV";
    default: return "A";
  }
}

// Route 53 answers at most 8 records, picked at random per answer. With M members a member is
// missing from one answer with probability 1 - 8/M, so holding it for h intervals wrongly
// drops about 8 (1 - 8/M)^(h+1) members per refresh. Size h so that stays under 1/100.
int64_t capped_answer_hold(int64_t interval_ns, size_t members) {
  if (members <= 8) return 3 * interval_ns;
  double miss = 1.0 - 8.0 / static_cast<double>(members);
  double h = std::ceil(std::log(0.01 / 8.0) / std::log(miss)) - 1.0;
  h = std::clamp(h, 3.0, 100.0);
  return static_cast<int64_t>(h) * interval_ns;
}

std::string seconds_text(int64_t ns) {
  char b[32];
  snprintf(b, sizeof b, "%.3gs", static_cast<double>(ns) / 1e9);
  return b;
}

}  // namespace

sigset_t control_signals() {
  sigset_t sigs;
  sigemptyset(&sigs);
  for (int s : {SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2}) sigaddset(&sigs, s);
  return sigs;
}

/// One DNS-followed cluster. Owner: the control thread.
struct Controller::DnsCluster final : io::TimerHandler {
  DnsCluster(Controller& o, size_t i, const config::ClusterConfig& c, discovery::RefreshPolicy p,
             uint64_t seed)
      : owner(o), index(i), config(&c), schedule(p, seed) {
    timer.handler = this;
  }
  void on_timer(io::Timer&) override { owner.query(*this); }
  Controller& owner;
  size_t index;
  const config::ClusterConfig* config;
  discovery::Membership members;
  discovery::RefreshSchedule schedule;
  io::Timer timer;
  uint64_t version = 1;
  bool in_flight = false;
  bool answered = false;  // a first outcome is in
  std::string published_note;
  bool published = false;
  // SRV follow-up lookups for targets the answer gave no address for.
  int srv_pending = 0;
  std::vector<lb::Endpoint> srv_found;
  uint32_t srv_ttl = 0;
  // For the admin surface.
  std::string last_result = "no answer yet";
  int64_t last_refresh_ns = 0;
  int64_t empty_since_ns = 0;
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

Controller::Controller(const config::Config& config, std::vector<Shard*> shards)
    : config_(config), shards_(std::move(shards)) {
  resolver_timer_.handler = poll_timer_.handler = this;
  resolver_timer_.tag = kTimerResolver;
  poll_timer_.tag = kTimerPoll;
  signal_op_.handler = this;
}

Controller::~Controller() {
  resolver_.reset();  // runs pending callbacks (ARES_EDESTRUCTION) while dns_ still exists
  for (auto& [fd, w] : watches_) delete w;
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

  uint64_t seed = static_cast<uint64_t>(base::mono_now_ns());
  for (size_t i = 0; i < config_.clusters.size(); ++i) {
    const config::ClusterConfig& c = config_.clusters[i];
    if (!c.uses_dns()) continue;
    discovery::RefreshPolicy p;
    p.min_refresh_ns = c.dns.min_refresh.count();
    p.max_refresh_ns = c.dns.max_refresh.count();
    p.stale_after_ns = c.dns.stale_after.count();
    p.hold_ns = c.dns.hold.count() < 0 ? -1 : c.dns.hold.count();
    dns_.push_back(std::make_unique<DnsCluster>(*this, i, c, p, seed + i));
  }
  if (dns_.empty()) return true;
  std::vector<std::string> servers;
  for (const io::SocketAddress& a : config_.discovery.resolvers) servers.push_back(a.text);
  resolver_ = discovery::Resolver::create(
      servers, static_cast<int>(config_.discovery.query_timeout.count() / 1000000), *this, error);
  if (!resolver_) return false;
  for (auto& d : dns_) query(*d);
  return true;
}

void Controller::turn(int64_t max_wait_ns) {
  int64_t now = base::mono_now_ns();
  timers_.run(now);
  int64_t t = timers_.next_timeout(base::mono_now_ns());
  if (t < 0 || t > max_wait_ns) t = max_wait_ns;
  reactor_->run_once(t);
}

void Controller::await_first_answers(int64_t max_wait_ns) {
  int64_t deadline = base::mono_now_ns() + max_wait_ns;
  for (;;) {
    bool all = true;
    for (auto& d : dns_) all &= d->answered;
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
      LOG_WARN("SIGHUP: config reload is not supported yet; still running %s",
               config_.source.c_str());
      continue;
    }
    if (sig == SIGUSR1 || sig == SIGUSR2) {
      LOG_INFO("%s: ignored", strsignal(sig));
      continue;
    }
    if (draining_) {
      LOG_WARN("second signal (%s): exiting now", strsignal(sig));
      _exit(128 + sig);
    }
    draining_ = true;
    LOG_INFO("%s: draining (up to %lld ms); send it again to exit at once", strsignal(sig),
             static_cast<long long>(config_.proxy.drain_timeout.count() / 1000000));
    for (Shard* s : shards_) s->post_drain();
  }
}

void Controller::on_complete(io::Op&, const io::Completion& c) {
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
  if (w.dead && !w.in.active && !w.out.active) delete &w;
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
    if (!w->in.active && !w->out.active) delete w;
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
  if (t < 0) timers_.cancel(resolver_timer_);
  else timers_.arm(resolver_timer_, base::mono_now_ns() + t);
}

void Controller::on_timer(io::Timer& t) {
  if (t.tag == kTimerResolver) {
    resolver_->on_timeout();
    rearm_resolver_timer();
    return;
  }
  // kTimerPoll: only wakes the loop so run() can notice shards that stopped.
  timers_.arm(poll_timer_, base::mono_now_ns() + kPollNs);
}

void Controller::query(DnsCluster& c) {
  if (c.in_flight) return;
  c.in_flight = true;
  c.srv_pending = 0;
  c.srv_found.clear();
  DnsCluster* cp = &c;
  resolver_->query(c.config->dns.name, static_cast<uint16_t>(record_type(c.config->dns.record)),
                   [this, cp](int status, std::span<const uint8_t> msg) {
                     on_answer(*cp, status, msg);
                   });
  rearm_resolver_timer();
}

void Controller::on_answer(DnsCluster& c, int status, std::span<const uint8_t> message) {
  if (status == ARES_EDESTRUCTION) return;
  const config::DnsConfig& dns = c.config->dns;
  if (status == ARES_ENOTFOUND || status == ARES_ENODATA) {
    record(c, QueryOutcome::kEmpty, 0, {}, status == ARES_ENOTFOUND ? "NXDOMAIN" : "no records");
    return;
  }
  if (status != ARES_SUCCESS) {
    record(c, QueryOutcome::kFailure, 0, {}, ares_strerror(status));
    return;
  }
  std::string error;
  std::optional<discovery::DnsAnswer> answer = discovery::parse_dns_response(message, error);
  if (!answer) {
    record(c, QueryOutcome::kFailure, 0, {}, "malformed answer: " + error);
    return;
  }
  discovery::Resolved r = discovery::endpoints_from_answer(*answer, record_type(dns.record),
                                                           dns.port);
  if (dns.record == config::DnsRecord::kSRV && !r.unresolved_srv.empty()) {
    // Targets without addresses in the answer: look each up (A) and finish when all are in.
    c.srv_found = std::move(r.endpoints);
    c.srv_ttl = r.ttl;
    c.srv_pending = static_cast<int>(r.unresolved_srv.size());
    DnsCluster* cp = &c;
    for (auto& [target, port] : r.unresolved_srv) {
      uint16_t p = port;
      resolver_->query(target, static_cast<uint16_t>(RecordType::kA),
                       [this, cp, p](int st, std::span<const uint8_t> msg) {
                         on_srv_target(*cp, st, msg, p);
                       });
    }
    rearm_resolver_timer();
    return;
  }
  if (r.endpoints.empty()) {
    record(c, QueryOutcome::kEmpty, r.ttl, {}, "no usable records");
    return;
  }
  record(c, QueryOutcome::kOk, r.ttl, r.endpoints, "");
}

void Controller::on_srv_target(DnsCluster& c, int status, std::span<const uint8_t> message,
                               uint16_t port) {
  if (status == ARES_EDESTRUCTION) return;
  if (status == ARES_SUCCESS) {
    std::string error;
    if (auto answer = discovery::parse_dns_response(message, error)) {
      discovery::Resolved r = discovery::endpoints_from_answer(*answer, RecordType::kA, port);
      for (lb::Endpoint& e : r.endpoints) c.srv_found.push_back(std::move(e));
      if (r.ttl < c.srv_ttl) c.srv_ttl = r.ttl;
    }
  }
  if (--c.srv_pending > 0) return;
  if (c.srv_found.empty()) {
    record(c, QueryOutcome::kEmpty, c.srv_ttl, {}, "SRV targets have no addresses");
  } else {
    std::vector<lb::Endpoint> found = std::move(c.srv_found);
    record(c, QueryOutcome::kOk, c.srv_ttl, found, "");
  }
}

int64_t Controller::hold_for(const DnsCluster& c, size_t answer_size) const {
  if (c.config->dns.hold.count() >= 0) return c.config->dns.hold.count();  // configured
  int64_t hold = c.schedule.hold_ns();
  if (answer_size >= 8) {  // the answer may be capped: expect members to come and go
    size_t members = std::max(c.members.members().size(), answer_size);
    hold = std::max(hold, capped_answer_hold(c.schedule.good_interval_ns(), members));
  }
  return hold;
}

void Controller::record(DnsCluster& c, QueryOutcome outcome, uint32_t ttl,
                        const std::vector<lb::Endpoint>& endpoints, const std::string& detail) {
  c.in_flight = false;
  const int64_t now = base::mono_now_ns();
  const config::DnsConfig& dns = c.config->dns;
  int64_t delay = c.schedule.record(outcome, ttl, now);
  c.last_refresh_ns = now;
  bool changed = false;
  std::string note;
  switch (outcome) {
    case QueryOutcome::kOk:
      c.empty_since_ns = 0;
      c.last_result = "ok: " + std::to_string(endpoints.size()) + " records, ttl " +
                      std::to_string(ttl) + "s";
      changed = c.members.merge(endpoints, now, hold_for(c, endpoints.size()));
      break;
    case QueryOutcome::kEmpty:
      if (c.empty_since_ns == 0) c.empty_since_ns = now;
      c.last_result = detail;
      note = "DNS name " + dns.name + ": " + detail;
      if (c.schedule.stale(now)) {
        note += " for " + seconds_text(now - c.empty_since_ns) + " (past stale_after)";
        changed = c.members.clear();
      }
      break;
    case QueryOutcome::kFailure:
      c.last_result = detail;
      note = "DNS name " + dns.name + ": " + detail;
      break;
  }
  if (c.schedule.state_changed()) {
    if (outcome == QueryOutcome::kOk) {
      LOG_INFO("cluster %s: DNS %s %s: %s; %zu members", c.config->name.c_str(),
               dns.name.c_str(), record_name(dns.record), c.last_result.c_str(),
               c.members.members().size());
    } else {
      LOG_WARN("cluster %s: DNS %s %s: %s; keeping %zu members, retry in %s",
               c.config->name.c_str(), dns.name.c_str(), record_name(dns.record),
               detail.c_str(), c.members.members().size(), seconds_text(delay).c_str());
    }
  }
  // Readiness waits for a real answer (records or NXDOMAIN); failures keep the bounded wait.
  if (outcome != QueryOutcome::kFailure) c.answered = true;
  // Shards need a new snapshot when members change, or when the set is empty and the reason
  // clients will read has changed.
  if (c.members.members().empty() && note.empty()) note = "DNS name " + dns.name + ": no members";
  if (changed || !c.published || (c.members.members().empty() && note != c.published_note)) {
    publish(c, c.members.members().empty() ? note : std::string());
  }
  timers_.arm(c.timer, now + delay);
}

void Controller::publish(DnsCluster& c, const std::string& note) {
  lb::EndpointSetPtr snap = c.members.snapshot(++c.version);
  auto set = std::make_shared<lb::EndpointSet>(*snap);
  set->note = note;
  c.published = true;
  c.published_note = note;
  LOG_INFO("cluster %s: publishing %zu endpoints (version %llu)", c.config->name.c_str(),
           set->size(), static_cast<unsigned long long>(set->version));
  lb::EndpointSetPtr shared = std::move(set);
  for (Shard* s : shards_) s->post_endpoints(c.index, shared);
}

std::vector<Controller::DnsStatus> Controller::dns_status() const {
  std::vector<DnsStatus> out;
  for (const auto& d : dns_) {
    out.push_back({d->config->name, d->config->dns.name, d->members.members().size(),
                   d->last_result, d->last_refresh_ns});
  }
  return out;
}

}  // namespace ringlb::core::runtime
