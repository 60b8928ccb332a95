#include "tests/support/proxy_rig.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/proxy/downstream.h"
#include "core/runtime/server.h"

namespace ringlb::test {

TestContext::TestContext(std::shared_ptr<const core::config::Config> config,
                         core::base::Clock& clock)
    : core::proxy::Context(config, 0, core::runtime::initial_endpoint_sets(*config), clock) {
  auto r = std::make_unique<MemoryReactor>();
  reactor_ = r.get();
  set_reactor(std::move(r));
  refresh_now();
}

void TestContext::on_call_end(const core::proxy::CallRecord& record) {
  core::proxy::count_call(*this, record);  // as runtime::Shard does (metrics)
  EndedCall e{record, std::string(record.path)};
  e.rec.path = {};  // valid during the hook only
  ended.push_back(std::move(e));
}

void TestContext::report_upstream_event(core::proxy::UpstreamEvent e,
                                        const core::proxy::ClusterState&,
                                        const core::proxy::EndpointState& ep,
                                        std::string_view detail) {
  events.push_back({e, ep.endpoint.name, std::string(detail)});
}

ProxyRig::ProxyRig(std::string_view toml)
    : config_(std::make_shared<const core::config::Config>(
          core::config::parse_config(toml, "<proxy rig>"))),
      ctx_(std::make_unique<TestContext>(config_, clock)) {}

ProxyRig::~ProxyRig() {
  // Every peer hangs up; the context closes and reclaims every connection, as after real EOFs.
  for (const ClientConn& c : clients_) {
    if (reactor().is_open(c.fd)) reactor().inject_eof(c.fd);
  }
  for (const BackendConn& b : backends_) {
    if (b.open && reactor().is_open(b.fd)) reactor().inject_eof(b.fd);
  }
  for (int i = 0; i < 8; ++i) ctx_->turn(0);
  ctx_->close_upstreams();
  for (int i = 0; i < 8; ++i) ctx_->turn(0);
}

size_t ProxyRig::add_client(size_t listener, uint32_t stream_window) {
  // ringlb's side of a client connection needs a real fd (it sets TCP_NODELAY, shuts it down
  // and closes it): an unconnected TCP socket, which never carries a byte.
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    fail(std::string("socket: ") + strerror(errno));
  } else if (!ctx_->adopt(listener, fd)) {
    fail("the context refused the connection");
  }
  clients_.push_back({std::make_unique<H2Client>(true, stream_window), fd});
  return clients_.size() - 1;
}

H2Client& ProxyRig::client(size_t i) {
  while (clients_.size() <= i) add_client();
  return *clients_[i].peer;
}

H2Backend::Mode& ProxyRig::mode(const std::string& address) {
  std::shared_ptr<H2Backend::Mode>& m = modes_[address];
  if (!m) m = std::make_shared<H2Backend::Mode>();
  return *m;
}

std::vector<H2Backend*> ProxyRig::backends(const std::string& address) const {
  std::vector<H2Backend*> out;
  for (const BackendConn& b : backends_) {
    if (b.address == address) out.push_back(b.peer.get());
  }
  return out;
}

H2Backend* ProxyRig::backend(const std::string& address) const {
  std::vector<H2Backend*> all = backends(address);
  return all.empty() ? nullptr : all.back();
}

bool ProxyRig::backend_open(const H2Backend* p) const {
  for (const BackendConn& b : backends_) {
    if (b.peer.get() == p) return b.open;
  }
  return false;
}

void ProxyRig::hang_up(const H2Backend* p) {
  for (const BackendConn& b : backends_) {
    if (b.peer.get() == p && b.open && reactor().is_open(b.fd)) reactor().inject_eof(b.fd);
  }
}

bool ProxyRig::fail(const std::string& why) {
  if (error_.empty()) error_ = why;
  return false;
}

bool ProxyRig::step(bool* moved) {
  MemoryReactor& r = reactor();
  for (ClientConn& c : clients_) {
    if (!c.peer->pull(buf_)) return fail("client: " + c.peer->error());
    if (!buf_.empty() && r.is_open(c.fd)) {
      r.inject(c.fd, buf_);
      *moved = true;
    }
  }
  ctx_->turn(0);
  const auto& log = r.connect_log();
  for (; connects_seen_ < log.size(); ++connects_seen_) {
    const MemoryReactor::ConnectEntry& e = log[connects_seen_];
    for (BackendConn& b : backends_) {
      if (b.fd == e.fd) b.open = false;  // the fd was closed and reused
    }
    if (e.res != 0) continue;  // failed or hanging: no backend behind it
    mode(e.address);
    backends_.push_back({std::make_unique<H2Backend>(modes_[e.address]), e.address, e.fd, true});
    *moved = true;
  }
  for (BackendConn& b : backends_) {
    if (!b.open) continue;
    if (!r.is_open(b.fd)) {
      b.open = false;
      continue;
    }
    const H2Backend::Mode& m = b.peer->mode();
    if (m.stopped) continue;  // what ringlb sent stays on the wire, as in a socket buffer
    if (r.take_wire(b.fd, buf_)) {
      *moved = true;
      if (!b.peer->push(buf_)) return fail("backend " + b.address + ": " + b.peer->error());
    }
    if (m.mute) continue;
    if (!b.peer->pull(buf_)) return fail("backend " + b.address + ": " + b.peer->error());
    if (!buf_.empty()) {
      r.inject(b.fd, buf_);
      *moved = true;
    }
  }
  for (ClientConn& c : clients_) {
    if (r.take_wire(c.fd, buf_)) {
      *moved = true;
      if (!c.peer->push(buf_)) return fail("client: " + c.peer->error());
    }
  }
  return true;
}

bool ProxyRig::pump(int max_rounds) {
  int quiet = 0;
  for (int round = 0; round < max_rounds; ++round) {
    bool moved = false;
    if (!step(&moved)) return false;
    if (!moved && !ctx_->has_dirty() && reactor().idle()) {
      if (++quiet >= 2) return true;
    } else {
      quiet = 0;
    }
  }
  return fail("pump: still busy after " + std::to_string(max_rounds) + " rounds");
}

core::proxy::Call* ProxyRig::call(int32_t id, size_t i) {
  auto* ds = dynamic_cast<core::proxy::DownstreamConn*>(reactor().in_handler(clients_[i].fd));
  if (ds == nullptr) return nullptr;
  core::proxy::Call* found = nullptr;
  ds->calls.for_each([&](core::proxy::Call* c) {
    if (c->ds_id == id) found = c;
  });
  return found;
}

}  // namespace ringlb::test
