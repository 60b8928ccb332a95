#include "discovery/resolver.h"

#include <sys/time.h>

#include <mutex>

namespace ringlb::discovery {
namespace {

struct Pending {
  Resolver* resolver;
  Resolver::Callback cb;
};

}  // namespace

std::unique_ptr<Resolver> Resolver::create(const std::vector<std::string>& servers, int timeout_ms,
                                           ResolverIo& io, std::string& error) {
  static std::once_flag once;
  static int init_status = ARES_SUCCESS;
  std::call_once(once, [] { init_status = ares_library_init(ARES_LIB_INIT_ALL); });
  if (init_status != ARES_SUCCESS) {
    error = std::string("c-ares init: ") + ares_strerror(init_status);
    return nullptr;
  }
  std::unique_ptr<Resolver> r(new Resolver(io));
  ares_options opts{};
  opts.sock_state_cb = &Resolver::on_sock_state;
  opts.sock_state_cb_data = r.get();
  opts.timeout = timeout_ms;
  opts.tries = 2;
  // No search list (Cloud Map names are absolute); EDNS so a full 8-record answer or an SRV
  // answer with its addresses fits in one UDP response.
  opts.flags = ARES_FLAG_NOSEARCH | ARES_FLAG_EDNS;
  opts.ednspsz = 1232;
  int mask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_FLAGS |
             ARES_OPT_EDNSPSZ;
  int st = ares_init_options(&r->channel_, &opts, mask);
  if (st != ARES_SUCCESS) {
    error = std::string("c-ares channel: ") + ares_strerror(st);
    return nullptr;
  }
  if (!servers.empty()) {
    std::string csv;
    for (const std::string& s : servers) csv += (csv.empty() ? "" : ",") + s;
    st = ares_set_servers_ports_csv(r->channel_, csv.c_str());
    if (st != ARES_SUCCESS) {
      error = "c-ares servers \"" + csv + "\": " + ares_strerror(st);
      return nullptr;
    }
  }
  return r;
}

Resolver::~Resolver() {
  // Pending callbacks run with ARES_EDESTRUCTION; their owners are going away with us.
  if (channel_ != nullptr) ares_destroy(channel_);
}

void Resolver::query(const std::string& name, uint16_t type, Callback cb) {
  ++pending_;
  ares_query(channel_, name.c_str(), 1 /* C_IN */, type, &Resolver::on_answer,
             new Pending{this, std::move(cb)});
}

void Resolver::on_answer(void* arg, int status, int, unsigned char* abuf, int alen) {
  std::unique_ptr<Pending> p(static_cast<Pending*>(arg));
  --p->resolver->pending_;
  std::span<const uint8_t> msg;
  if (abuf != nullptr && alen > 0) msg = {abuf, static_cast<size_t>(alen)};
  p->cb(status, msg);
}

void Resolver::on_sock_state(void* data, ares_socket_t fd, int readable, int writable) {
  static_cast<Resolver*>(data)->io_.watch(fd, readable != 0, writable != 0);
}

void Resolver::process(int fd, bool readable, bool writable) {
  ares_process_fd(channel_, readable ? fd : ARES_SOCKET_BAD, writable ? fd : ARES_SOCKET_BAD);
}

void Resolver::on_timeout() {
  ares_process_fd(channel_, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
}

int64_t Resolver::next_timeout_ns() const {
  timeval tv{};
  timeval* t = ares_timeout(channel_, nullptr, &tv);
  if (t == nullptr) return -1;
  return static_cast<int64_t>(t->tv_sec) * 1000000000 + static_cast<int64_t>(t->tv_usec) * 1000;
}

}  // namespace ringlb::discovery
