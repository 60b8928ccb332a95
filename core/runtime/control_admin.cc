// The Controller's side of the admin listener: starting it, collecting every shard's
// ShardSnapshot (collect), readiness, and the /live test hook. The HTTP side is admin.cc.
// Owner: the control thread.
#include <cstdlib>
#include <cstring>

#include "core/base/clock.h"
#include "core/base/log.h"
#include "core/runtime/admin.h"
#include "core/runtime/control.h"
#include "core/runtime/shard.h"

namespace ringlb::core::runtime {

bool Controller::start_admin(std::string& error) {
  if (!config_->admin.enabled) {
    LOG_INFO("admin: off");
    return true;
  }
  const char* hooks = std::getenv("RINGLB_TEST_HOOKS");
  bool test_hooks = hooks != nullptr && std::strcmp(hooks, "1") == 0;
  admin_ = std::make_unique<AdminServer>(*this, *reactor_, timers_, config_->admin, test_hooks);
  if (!admin_->start(error)) {
    error = "admin listener " + config_->admin.address.text + ": " + error;
    admin_.reset();
    return false;
  }
  if (test_hooks) LOG_WARN("admin: RINGLB_TEST_HOOKS=1: POST /test/stall is enabled");
  return true;
}

void Controller::collect(int64_t timeout_ns, CollectDone done) {
  auto c = std::make_unique<Collection>();
  c->owner = this;
  c->id = next_collect_id_++;
  c->done = std::move(done);
  c->got.resize(shards_.size());
  c->timer.handler = c.get();
  // With no shards (or all answering later) the timer ends it: `done` never runs from inside
  // collect(), so a caller can hold its own state across the call.
  timers_.arm(c->timer, base::mono_now_ns() + (shards_.empty() ? 0 : timeout_ns));
  uint64_t id = c->id;
  collections_.emplace(id, std::move(c));
  for (Shard* s : shards_) s->post_collect(id);
}

void Controller::on_snapshot_report(ShardReport* r) {
  std::unique_ptr<ShardReport> owned(r);
  auto it = collections_.find(r->collect_id);
  if (it == collections_.end() || r->shard >= shards_.size() || !r->snapshot) return;  // late
  Collection& c = *it->second;
  if (c.got[r->shard]) return;  // one answer per shard and collection
  c.got[r->shard] = std::move(r->snapshot);
  if (++c.answered == shards_.size()) finish_collection(c.id);
}

void Controller::finish_collection(uint64_t id) {
  auto it = collections_.find(id);
  if (it == collections_.end()) return;
  // Out of the map before `done` runs: it may start the next collection.
  std::unique_ptr<Collection> c = std::move(it->second);
  collections_.erase(it);
  timers_.cancel(c->timer);
  std::vector<std::unique_ptr<ShardSnapshot>> got;
  std::vector<unsigned> missing;
  for (size_t i = 0; i < c->got.size(); ++i) {
    if (c->got[i]) {
      got.push_back(std::move(c->got[i]));
    } else {
      missing.push_back(static_cast<unsigned>(i));
    }
  }
  c->done(got, missing);
}

bool Controller::ready() const {
  return readiness().empty();
}

bool Controller::stall_shard(unsigned shard, int64_t ns) {
  if (shard >= shards_.size()) return false;
  shards_[shard]->post_stall(ns);
  return true;
}

}  // namespace ringlb::core::runtime
