// Shard::reconfigure: a reload on the shard thread (kReconfigure). The proxy state changes in
// proxy::Context::reconfigure; here the listening sockets follow: those that stay keep
// accepting, new ones start, removed ones have their accept queue taken and close, and their
// client connections drain.
#include <unistd.h>

#include "core/base/log.h"
#include "core/runtime/shard.h"

namespace ringlb::core::runtime {

ShardReload::~ShardReload() {
  for (int fd : listen_fds) {
    if (fd >= 0) ::close(fd);
  }
}

void Shard::post_reconfigure(std::unique_ptr<ShardReload> reload) {
  auto* m = new ShardMessage;
  m->kind = ShardMessage::Kind::kReconfigure;
  m->reload = std::move(reload);
  post(m);
}

size_t Shard::closing_listener_count() const {
  size_t n = 0;
  for (const auto& l : closing_) n += l->fd >= 0 ? 1 : 0;
  return n;
}

void Shard::reconfigure(ShardReload& reload) {
  proxy::Context::Reconfig& rc = reload.reconfig;
  std::vector<bool> kept(listeners_.size(), false);
  for (int from : rc.listener_from) {
    if (from >= 0 && static_cast<size_t>(from) < kept.size())
      kept[static_cast<size_t>(from)] = true;
  }
  // Sockets still open keep their router (running numbering) alive until their queue is taken.
  for (size_t i = 0; i < listeners_.size(); ++i) {
    if (!kept[i] && listeners_[i]->fd >= 0) rc.pinned_routers.push_back(listeners_[i]->router);
  }
  for (const auto& l : closing_) {
    if (l->fd >= 0) rc.pinned_routers.push_back(l->router);
  }
  const std::vector<int> router_to = proxy::Context::reconfigure(rc);

  for (auto& l : closing_) {
    if (l->fd >= 0) l->router = static_cast<size_t>(router_to[l->router]);
  }
  std::erase_if(closing_, [](const auto& l) { return l->fd < 0 && !l->op.active; });
  std::vector<std::unique_ptr<Listener>> next(rc.listener_from.size());
  for (size_t j = 0; j < next.size(); ++j) {
    const int from = rc.listener_from[j];
    if (from >= 0 && static_cast<size_t>(from) < listeners_.size()) {  // (tests: no sockets)
      next[j] = std::move(listeners_[static_cast<size_t>(from)]);
      next[j]->router = j;
      continue;
    }
    int fd = j < reload.listen_fds.size() ? reload.listen_fds[j] : -1;
    if (j < reload.listen_fds.size()) reload.listen_fds[j] = -1;  // ours now
    if (fd >= 0 && leaving_) {
      reactor().close(fd);  // draining: a new listener is not joined
      fd = -1;
    }
    next[j] = std::make_unique<Listener>(*this, fd, j);
    if (serving_ && !leaving_ && fd >= 0) reactor().accept(fd, next[j]->op);
  }
  for (auto& l : listeners_) {
    if (!l) continue;  // stays: moved to next
    l->removed = true;
    if (l->fd >= 0) l->router = static_cast<size_t>(router_to[l->router]);
    Listener& ref = *l;
    closing_.push_back(std::move(l));
    if (ref.op.active) {
      reactor().cancel(ref.op);  // its final completion takes the queue and closes it
    } else {
      hand_over(ref);
    }
  }
  listeners_ = std::move(next);
  LOG_DEBUG("shard %u: config generation %llu: %zu listeners, %zu clusters", setup_.index,
            static_cast<unsigned long long>(generation()), listeners_.size(), cluster_count());
}

}  // namespace ringlb::core::runtime
