#include "core/shard.h"

#include <pthread.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/downstream.h"
#include "core/log.h"

namespace ringlb::core {
namespace {
enum : uint8_t { kWakeTag = 0, kAcceptTagBase = 1 };
enum : uint8_t { kDrainDeadline = 1, kAcceptRetry = 2 };
constexpr int64_t kAcceptRetryNs = 100'000'000;  // after EMFILE and the like
constexpr int kFlushRounds = 4;
}  // namespace

Shard::Shard(const Config& config, ShardSetup setup) : config_(config), setup_(std::move(setup)) {
  for (const ListenerConfig& l : config_.listeners) routers_.emplace_back(l, config_);
  clusters_.resize(config_.clusters.size());
  for (size_t i = 0; i < clusters_.size(); ++i) {
    ClusterState& c = clusters_[i];
    c.config = &config_.clusters[i];
    c.index = i;
    c.seed = 0x9e3779b97f4a7c15ULL * (setup_.index + 1) + i;  // shards must not pick in lockstep
    c.apply(setup_.endpoint_sets[i]);
  }
  accept_ops_.resize(setup_.listen_fds.size());
  drain_deadline_.handler = accept_retry_.handler = this;
  drain_deadline_.tag = kDrainDeadline;
  accept_retry_.tag = kAcceptRetry;
}

Shard::~Shard() {
  for (H2Connection* c : graveyard_) delete c;
  drain_inbox();
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

void Shard::run(std::atomic<int>& ready) {
  char name[16];
  snprintf(name, sizeof name, "ringlb-shard-%u", setup_.index);
  pthread_setname_np(pthread_self(), name);
  std::unique_ptr<Reactor> reactor = make_reactor(setup_.backend, error_);
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
           static_cast<unsigned long long>(connections_), static_cast<unsigned long long>(calls_));
  finished_ = true;
}

bool Shard::attach_reactor(std::unique_ptr<Reactor> reactor) {
  reactor_ = std::move(reactor);
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd_ < 0) {
    error_ = std::string("eventfd: ") + strerror(errno);
    return false;
  }
  wake_op_.handler = this;
  wake_op_.tag = kWakeTag;
  reactor_->poll_in(wake_fd_, wake_op_);
  for (size_t i = 0; i < accept_ops_.size(); ++i) {
    accept_ops_[i].handler = this;
    accept_ops_[i].tag = static_cast<uint8_t>(kAcceptTagBase + i);
    reactor_->accept(setup_.listen_fds[i], accept_ops_[i]);
  }
  now_ns_ = mono_now_ns();
  return true;
}

void Shard::turn(int64_t max_wait_ns) {
  now_ns_ = mono_now_ns();
  timers_.run(now_ns_);
  flush_dirty();
  for (H2Connection* c : graveyard_) delete c;
  graveyard_.clear();
  // now_ns_ is at most one flush old: a timer may fire that much late, for one clock read less.
  int64_t timeout = dirty_.empty() ? timers_.next_timeout(now_ns_) : 0;
  if (max_wait_ns >= 0 && (timeout < 0 || timeout > max_wait_ns)) timeout = max_wait_ns;
  reactor_->run_once(timeout);
}

void Shard::loop() {
  while (!stop_) turn(-1);
  // Drained (or timed out): every client connection is gone. Close upstreams and let their
  // cancelled ops complete before the reactor goes away.
  close_upstreams();
  for (int i = 0; i < 1000; ++i) {
    bool busy = false;
    for (ClusterState& c : clusters_) {
      for (EndpointState* ep : c.endpoints) busy |= !ep->conns.empty();
      for (EndpointState* ep : c.retiring) busy |= !ep->conns.empty();
    }
    flush_dirty();
    for (H2Connection* c : graveyard_) delete c;
    bool pending = !graveyard_.empty();
    graveyard_.clear();
    if (!busy && !pending && i > 0) break;
    reactor_->run_once(1'000'000);
  }
  for (size_t i = 0; i < setup_.listen_fds.size(); ++i) {
    if (setup_.listen_fds[i] >= 0 && !accept_ops_[i].active) {
      reactor_->close(setup_.listen_fds[i]);
      setup_.listen_fds[i] = -1;
    }
  }
}

void Shard::close_upstreams() {
  for (ClusterState& c : clusters_) {
    for (auto* list : {&c.endpoints, &c.retiring}) {
      // Closing can free a retiring endpoint (and edit the list): walk a copy.
      std::vector<EndpointState*> eps = *list;
      for (EndpointState* ep : eps) {
        while (H2Connection* h = ep->conns.front()) h->close("shutting down");
      }
    }
  }
}

void Shard::flush_dirty() {
  // Flushing one connection can make another dirty (a WINDOW_UPDATE to send, say); a few rounds
  // settle that, anything left goes out next turn.
  for (int round = 0; round < kFlushRounds && !dirty_.empty(); ++round) {
    while (H2Connection* c = dirty_.front()) {
      dirty_.remove(c);
      c->flush();
    }
  }
}

void Shard::retire(H2Connection* c) { graveyard_.push_back(c); }

void Shard::downstream_closed(DownstreamConn* c) {
  downstreams_.remove(c);
  if (draining_ && downstreams_.empty()) stop_ = true;
}

ProxyStream* Shard::alloc_stream() {
  if (free_streams_.empty()) {
    stream_store_.push_back(std::make_unique<ProxyStream>(*this));
    return stream_store_.back().get();
  }
  ProxyStream* s = free_streams_.back();
  free_streams_.pop_back();
  return s;
}

void Shard::free_stream(ProxyStream* s) { free_streams_.push_back(s); }

void Shard::post_endpoints(size_t cluster, lb::EndpointSetPtr set) {
  auto* m = new ShardMessage{nullptr, cluster, std::move(set)};
  ShardMessage* head = inbox_.load(std::memory_order_relaxed);
  do {
    m->next = head;
  } while (!inbox_.compare_exchange_weak(head, m, std::memory_order_release,
                                         std::memory_order_relaxed));
  uint64_t one = 1;
  ssize_t r = ::write(wake_fd_, &one, sizeof one);
  (void)r;
}

void Shard::drain_inbox() {
  ShardMessage* m = inbox_.exchange(nullptr, std::memory_order_acquire);
  ShardMessage* fifo = nullptr;  // the stack holds newest first; apply in posting order
  while (m != nullptr) {
    ShardMessage* next = m->next;
    m->next = fifo;
    fifo = m;
    m = next;
  }
  while (fifo != nullptr) {
    ShardMessage* next = fifo->next;
    clusters_[fifo->cluster].apply(std::move(fifo->set));
    delete fifo;
    fifo = next;
  }
}

void Shard::post_drain() {
  drain_requested_.store(true);
  uint64_t one = 1;
  ssize_t r = ::write(wake_fd_, &one, sizeof one);
  (void)r;
}

void Shard::on_complete(Op& op, const Completion& c) {
  if (op.tag == kWakeTag) {
    uint64_t v;
    ssize_t r = ::read(wake_fd_, &v, sizeof v);
    (void)r;
    drain_inbox();
    if (drain_requested_.load() && !draining_) begin_drain();
    if (!c.more && !stop_) reactor_->poll_in(wake_fd_, wake_op_);
    return;
  }
  on_accept(op.tag - kAcceptTagBase, c);
}

bool Shard::adopt(size_t listener, int fd) {
  if (draining_ || downstreams_.size() >= config_.proxy.max_connections) {
    ::close(fd);  // draining, or over the per-shard cap: refuse politely by closing
    return false;
  }
  auto* conn = new DownstreamConn(*this, fd, listener);
  downstreams_.push_back(conn);
  ++connections_;
  if (!conn->init()) conn->close("session setup failed");
  return true;
}

void Shard::on_accept(size_t listener, const Completion& c) {
  if (c.res >= 0) {
    adopt(listener, c.res);  // refused or not, a final completion must still re-arm below
  } else if (c.res != -ECANCELED && !draining_) {
    LOG_WARN("shard %u: accept on %s: %s", setup_.index,
             config_.listeners[listener].address.text.c_str(), strerror(-c.res));
  }
  if (c.more) return;
  int& fd = setup_.listen_fds[listener];
  if (draining_) {
    if (fd >= 0) reactor_->close(fd);
    fd = -1;
  } else if (!accept_retry_.armed()) {
    timers_.arm(accept_retry_, now_ns_ + kAcceptRetryNs);  // the multishot ended (EMFILE...)
  }
}

void Shard::begin_drain() {
  draining_ = true;
  LOG_INFO("shard %u: draining %zu connections", setup_.index, downstreams_.size());
  for (size_t i = 0; i < accept_ops_.size(); ++i) {
    if (accept_ops_[i].active) {
      reactor_->cancel(accept_ops_[i]);
    } else if (setup_.listen_fds[i] >= 0) {
      reactor_->close(setup_.listen_fds[i]);
      setup_.listen_fds[i] = -1;
    }
  }
  timers_.cancel(accept_retry_);
  downstreams_.for_each([](H2Connection* c) { static_cast<DownstreamConn*>(c)->start_drain(); });
  timers_.arm(drain_deadline_, mono_now_ns() + config_.proxy.drain_timeout.count());
  if (downstreams_.empty()) stop_ = true;
}

void Shard::on_timer(Timer& t) {
  if (t.tag == kAcceptRetry) {
    for (size_t i = 0; i < accept_ops_.size(); ++i) {
      if (!accept_ops_[i].active && setup_.listen_fds[i] >= 0) {
        reactor_->accept(setup_.listen_fds[i], accept_ops_[i]);
      }
    }
    return;
  }
  LOG_WARN("shard %u: drain_timeout reached; closing %zu connections", setup_.index,
           downstreams_.size());
  while (H2Connection* c = downstreams_.front()) c->close("drain timeout");
  stop_ = true;
}

}  // namespace ringlb::core
