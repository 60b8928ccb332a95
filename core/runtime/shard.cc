#include "core/runtime/shard.h"

#include <pthread.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include "core/base/log.h"

namespace ringlb::core::runtime {
namespace {
enum : uint8_t { kWakeTag = 0 };
enum : uint8_t { kDrainDeadline = 1, kAcceptRetry = 2 };
constexpr int64_t kAcceptRetryNs = 100'000'000;  // after EMFILE and the like
// Connections taken from a listener's accept queue as it closes (a bound, not a promise: what
// a flood leaves behind is reset by the close, as it would be without this).
constexpr int kHandOverAccepts = 4096;
// After drain_timeout: how long the answers that end the last calls may take to get out.
constexpr int64_t kLastWordsNs = 1'000'000'000;
}  // namespace

Shard::Shard(std::shared_ptr<const config::Config> config, ShardSetup setup, base::Clock& clock)
    : proxy::Context(std::move(config), setup.index, setup.endpoint_sets, clock),
      setup_(std::move(setup)) {
  setup_.endpoint_sets.clear();  // the clusters hold them now
  set_buffer_limit(this->config().proxy.memory_limit / std::max(1u, setup_.workers));
  for (size_t i = 0; i < setup_.listen_fds.size(); ++i)
    listeners_.push_back(std::make_unique<Listener>(*this, setup_.listen_fds[i], i));
  setup_.listen_fds.clear();  // the Listeners own them now
  drain_deadline_.handler = accept_retry_.handler = this;
  drain_deadline_.tag = kDrainDeadline;
  accept_retry_.tag = kAcceptRetry;
}

Shard::~Shard() {
  // Messages never handled (the shard stopped first) are freed without acting on them.
  ShardMessage* m = inbox_.exchange(nullptr, std::memory_order_acquire);
  while (m != nullptr) {
    ShardMessage* next = m->next;
    delete m;
    m = next;
  }
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

void Shard::run(std::atomic<int>& ready) {
  char name[16];
  snprintf(name, sizeof name, "ringlb-shard-%u", setup_.index);
  pthread_setname_np(pthread_self(), name);
  std::unique_ptr<io::Reactor> reactor = io::make_reactor(setup_.backend, error_);
  if (!reactor || !attach_reactor(std::move(reactor))) {
    finished_ = true;
    ready.store(-1);
    ready.notify_all();
    return;
  }
  ready.store(1);
  ready.notify_all();
  loop();
  LOG_INFO("shard %u stopped: %llu connections, %llu calls", setup_.index,
           static_cast<unsigned long long>(connections()),
           static_cast<unsigned long long>(calls()));
  finished_ = true;
}

bool Shard::attach_reactor(std::unique_ptr<io::Reactor> reactor) {
  set_reactor(std::move(reactor));
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd_ < 0) {
    error_ = std::string("eventfd: ") + strerror(errno);
    return false;
  }
  wake_op_.handler = this;
  wake_op_.tag = kWakeTag;
  this->reactor().poll_in(wake_fd_, wake_op_);
  refresh_now();
  return true;
}

void Shard::serve() {
  if (serving_ || leaving_) return;
  serving_ = true;
  for (auto& l : listeners_) reactor().accept(l->fd, l->op);
}

void Shard::loop() {
  while (!stop_) {
    turn(-1);
    if (draining() && downstream_count() == 0) stop_ = true;
  }
  // Drained (or timed out): every client connection is closing. Close upstreams and let every
  // cancelled op, client and upstream, complete before the reactor goes away.
  close_upstreams();
  for (int i = 0; i < 1000; ++i) {
    flush_dirty();
    bool reaped = reap();
    if (!connections_busy() && !reaped && i > 0) break;
    reactor().run_once(1'000'000);
  }
  for (auto* list : {&listeners_, &closing_}) {
    for (auto& l : *list) {
      if (l->fd >= 0 && !l->op.active) {
        reactor().close(l->fd);
        l->fd = -1;
      }
    }
  }
}

void Shard::post(ShardMessage* m) {
  ShardMessage* head = inbox_.load(std::memory_order_relaxed);
  do {
    m->next = head;
  } while (
      !inbox_.compare_exchange_weak(head, m, std::memory_order_release, std::memory_order_relaxed));
  uint64_t one = 1;
  ssize_t r = ::write(wake_fd_, &one, sizeof one);
  (void)r;
}

void Shard::post_endpoints(size_t cluster, lb::EndpointSetPtr set) {
  post(new ShardMessage{nullptr, ShardMessage::Kind::kEndpoints, cluster, std::move(set)});
}

void Shard::post_eligibility(size_t cluster, EligibilityUpdate u) {
  auto* m = new ShardMessage;
  m->kind = ShardMessage::Kind::kEligibility;
  m->cluster = cluster;
  m->eligibility = std::move(u);
  post(m);
}

void Shard::post_serve() {
  post(new ShardMessage{nullptr, ShardMessage::Kind::kServe, 0, {}});
}

void Shard::post_drain() {
  post(new ShardMessage{nullptr, ShardMessage::Kind::kDrain, 0, {}});
}

void Shard::post_leave() {
  post(new ShardMessage{nullptr, ShardMessage::Kind::kLeave, 0, {}});
}

void Shard::post_goaway() {
  post(new ShardMessage{nullptr, ShardMessage::Kind::kGoaway, 0, {}});
}

void Shard::drain_inbox() {
  ShardMessage* m = inbox_.exchange(nullptr, std::memory_order_acquire);
  ShardMessage* fifo = nullptr;  // the stack holds newest first; handle in posting order
  while (m != nullptr) {
    ShardMessage* next = m->next;
    m->next = fifo;
    fifo = m;
    m = next;
  }
  while (fifo != nullptr) {
    ShardMessage* next = fifo->next;
    handle(*fifo);
    delete fifo;
    fifo = next;
  }
}

void Shard::handle(ShardMessage& m) {
  switch (m.kind) {
    case ShardMessage::Kind::kEndpoints:
      apply_endpoints(m.cluster, std::move(m.set));
      break;
    case ShardMessage::Kind::kServe:
      serve();
      break;
    case ShardMessage::Kind::kDrain:
      goaway_ok_ = true;
      if (!leaving_) begin_drain();
      maybe_goaway();
      break;
    case ShardMessage::Kind::kLeave:
      if (!leaving_) begin_drain();
      break;
    case ShardMessage::Kind::kGoaway:
      goaway_ok_ = true;
      maybe_goaway();
      break;
    case ShardMessage::Kind::kEligibility: {
      const EligibilityUpdate& u = m.eligibility;
      apply_eligibility(m.cluster, u.key, u.mask, u.bits, u.until_ns, u.streak);
      break;
    }
    case ShardMessage::Kind::kReconfigure:
      reconfigure(*m.reload);
      break;
    case ShardMessage::Kind::kCollect: {
      auto* r = new ShardReport;
      r->kind = ShardReport::Kind::kSnapshot;
      r->shard = setup_.index;
      r->collect_id = m.collect_id;
      r->snapshot = std::make_unique<ShardSnapshot>();
      fill_snapshot(*r->snapshot);
      if (setup_.reports != nullptr) {
        setup_.reports->post(r);
      } else {
        delete r;
      }
      break;
    }
    case ShardMessage::Kind::kStall:
      // Deliberately blocking (a test hook, never sent without RINGLB_TEST_HOOKS=1).
      std::this_thread::sleep_for(std::chrono::nanoseconds(m.stall_ns));
      break;
  }
}

void Shard::post_stall(int64_t ns) {
  auto* m = new ShardMessage;
  m->kind = ShardMessage::Kind::kStall;
  m->stall_ns = ns;
  post(m);
}

void Shard::post_collect(uint64_t collect_id) {
  auto* m = new ShardMessage;
  m->kind = ShardMessage::Kind::kCollect;
  m->collect_id = collect_id;
  post(m);
}

namespace {
EndpointView endpoint_view(const proxy::EndpointState& ep) {
  EndpointView v;
  v.name = ep.endpoint.name;
  v.key = ep.key;
  v.ineligible = ep.ineligible;
  v.weight_permille = ep.weight_permille;
  v.ejected_until_ns = ep.outlier.ejected_until_ns;
  v.outstanding = ep.outstanding;
  v.connections = static_cast<uint32_t>(ep.conns.size());
  v.removed = ep.index < 0;
  v.counters = ep.counters;
  return v;
}
}  // namespace

void Shard::fill_snapshot(ShardSnapshot& s) {
  refresh_now();
  if (setup_.access_log != nullptr) {
    s.access_log_lines = setup_.access_log->lines();
    s.access_log_dropped = setup_.access_log->dropped();
  }
  s.shard = setup_.index;
  s.taken_ns = now();
  s.clusters.reserve(cluster_count());
  for (size_t i = 0; i < cluster_count(); ++i) {
    proxy::ClusterState& c = cluster(i);
    ClusterView& v = s.clusters.emplace_back();
    v.name = c.config->name;
    v.set_version = c.set ? c.set->version : 0;
    v.counters = c.counters;
    v.counters.panic_picks = c.panics;
    for (const proxy::EndpointState* ep : c.endpoints) v.endpoints.push_back(endpoint_view(*ep));
    for (const proxy::EndpointState* ep : c.retiring) v.endpoints.push_back(endpoint_view(*ep));
  }
  s.listeners = stats().listeners;
  s.methods = stats().methods.rows();
}

void Shard::on_call_end(const proxy::CallRecord& record) {
  proxy::count_call(*this, record);
  if (setup_.access_log != nullptr) setup_.access_log->log(record, call_config());
}

void Shard::on_complete(io::Op& op, const io::Completion& c) {
  if (op.tag == kWakeTag) {
    uint64_t v;
    ssize_t r = ::read(wake_fd_, &v, sizeof v);
    (void)r;
    drain_inbox();
    if (!c.more && !stop_) reactor().poll_in(wake_fd_, wake_op_);
  }
}

void Shard::on_accept(Listener& l, const io::Completion& c) {
  if (c.res >= 0) {
    accepted(l.router, c.res);  // refused or not, a final completion must still re-arm below
  } else if (c.res != -ECANCELED && !leaving_ && !l.removed) {
    ++stats().listeners[l.router].rejected[static_cast<size_t>(proxy::Rejection::kAcceptError)];
    LOG_WARN("shard %u: accept on %s: %s", setup_.index, router(l.router).listener_name().c_str(),
             strerror(-c.res));
  }
  if (c.more) return;
  if (leaving_ || l.removed) {
    hand_over(l);
  } else if (!accept_retry_.armed()) {
    timers().arm(accept_retry_, now() + kAcceptRetryNs);  // the multishot ended (EMFILE...)
  }
}

void Shard::begin_drain() {
  // The order that lets a successor on the same port (SO_REUSEPORT) take over losing nothing:
  // 1. Leave the reuseport group: while this shard's socket is in it, the kernel keeps hashing
  //    new connections here, reconnects of the clients told to go away included. close() is
  //    the only way out, and it resets whatever is still in the accept queue (unless
  //    net.ipv4.tcp_migrate_req=1 moves it to the successor), so the queue is accepted first
  //    and the socket closed right after (hand_over): only a connection that arrives between
  //    the last accept4() and the close() is lost, a window of microseconds. An io_uring
  //    accept is cancelled first; connections it still delivers are adopted as usual.
  // 2. Then the two-phase GOAWAY to every client, those just accepted included: their
  //    reconnects cannot come back to this process. With kLeave the control thread sends
  //    kGoaway once every shard has left (another shard's socket would otherwise still take
  //    them for a moment); with kDrain this shard goes on alone once its own listeners closed.
  // 3. Calls in flight finish, up to drain_timeout.
  LOG_INFO("shard %u: draining %zu connections", setup_.index, downstream_count());
  leaving_ = true;
  timers().cancel(accept_retry_);
  timers().arm(drain_deadline_, now() + config().proxy.drain_timeout.count());
  for (size_t i = 0; i < listeners_.size(); ++i) {
    Listener& l = *listeners_[i];
    if (l.op.active) {
      reactor().cancel(l.op);  // its final completion hands the listener over
    } else {
      hand_over(l);
    }
  }
  if (all_listeners_closed()) leave_done();
}

bool Shard::all_listeners_closed() const {
  for (auto* list : {&listeners_, &closing_}) {
    for (auto& l : *list) {
      if (l->fd >= 0) return false;
    }
  }
  return true;
}

void Shard::hand_over(Listener& l) {
  if (l.fd >= 0) {
    for (int n = 0; n < kHandOverAccepts; ++n) {
      int c = ::accept4(l.fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (c >= 0) {
        adopt(l.router, c);
      } else if (errno != EINTR && errno != ECONNABORTED) {
        break;  // EAGAIN: the queue is empty
      }
    }
    reactor().close(l.fd);
    l.fd = -1;
  }
  if (leaving_ && all_listeners_closed()) leave_done();
}

void Shard::leave_done() {
  if (left_) return;
  left_ = true;
  if (!goaway_ok_ && setup_.reports != nullptr) {
    auto* r = new ShardReport;
    r->kind = ShardReport::Kind::kListenersClosed;
    r->shard = setup_.index;
    setup_.reports->post(r);
  } else {
    goaway_ok_ = true;  // nobody to wait for
  }
  maybe_goaway();
}

void Shard::maybe_goaway() {
  if (!left_ || !goaway_ok_ || draining()) return;
  start_draining();
  if (downstream_count() == 0) stop_ = true;
}

void Shard::report_upstream_event(proxy::UpstreamEvent e, const proxy::ClusterState& cluster,
                                  const proxy::EndpointState& ep, std::string_view detail) {
  if (setup_.reports == nullptr) return;
  auto* r = new ShardReport;
  switch (e) {
    case proxy::UpstreamEvent::kConnectFailed:
      r->kind = ShardReport::Kind::kConnectFailed;
      break;
    case proxy::UpstreamEvent::kConnectionLost:
      r->kind = ShardReport::Kind::kConnectionLost;
      break;
    case proxy::UpstreamEvent::kGoaway:
      r->kind = ShardReport::Kind::kGoaway;
      break;
    case proxy::UpstreamEvent::kPingTimeout:
      r->kind = ShardReport::Kind::kPingTimeout;
      break;
  }
  r->shard = setup_.index;
  r->cluster = cluster.index;
  r->generation = generation();
  r->endpoint = ep.endpoint.name;
  r->detail.assign(detail);
  setup_.reports->post(r);
}

void Shard::report_ejection(const proxy::ClusterState& cluster, const proxy::EndpointState& ep,
                            const lb::Trip& trip, int64_t duration_ns) {
  if (setup_.reports == nullptr) return;
  auto* r = new ShardReport;
  r->kind = duration_ns > 0 ? ShardReport::Kind::kEjected : ShardReport::Kind::kNotEjected;
  r->shard = setup_.index;
  r->cluster = cluster.index;
  r->generation = generation();
  r->endpoint = ep.endpoint.name;
  r->detail = std::to_string(trip.count) + " " + lb::eject_reason_text(trip.reason);
  r->key = ep.key;
  r->duration_ns = duration_ns;
  r->members = cluster.endpoints.size();
  setup_.reports->post(r);
}

void Shard::on_timer(io::Timer& t) {
  if (t.tag == kAcceptRetry) {
    for (auto& l : listeners_) {
      if (!l->op.active && l->fd >= 0) reactor().accept(l->fd, l->op);
    }
    return;
  }
  if (!last_words_) {
    // Calls still running get a gRPC answer that says why (not a bare connection close), and
    // their backends a RST_STREAM; the connections close once that is written, or a little
    // later in any case (a client that does not read).
    LOG_WARN("shard %u: drain_timeout reached; ending the calls still open on %zu connections",
             setup_.index, downstream_count());
    last_words_ = true;
    end_calls("ringlb is shutting down: proxy.drain_timeout reached before the call ended");
    timers().arm(drain_deadline_, now() + kLastWordsNs);
    return;
  }
  LOG_WARN("shard %u: closing %zu connections", setup_.index, downstream_count());
  close_downstreams("drain timeout");
  stop_ = true;
}

}  // namespace ringlb::core::runtime
