#include "core/runtime/reports.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>

namespace ringlb::core::runtime {

const char* report_kind_name(ShardReport::Kind k) {
  switch (k) {
    case ShardReport::Kind::kConnectFailed:
      return "connect failed";
    case ShardReport::Kind::kConnectionLost:
      return "connection lost";
    case ShardReport::Kind::kGoaway:
      return "GOAWAY";
    case ShardReport::Kind::kListenersClosed:
      return "listeners closed";
    case ShardReport::Kind::kPingTimeout:
      return "PING timeout";
    case ShardReport::Kind::kEjected:
      return "ejected";
    case ShardReport::Kind::kNotEjected:
      return "not ejected (max_ejected_percent)";
    case ShardReport::Kind::kSnapshot:
      return "snapshot";
  }
  return "?";
}

ReportQueue::ReportQueue() {
  fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
}

ReportQueue::~ReportQueue() {
  for (ShardReport* r : take_all()) delete r;
  if (fd_ >= 0) ::close(fd_);
}

void ReportQueue::post(ShardReport* r) {
  ShardReport* head = head_.load(std::memory_order_relaxed);
  do {
    r->next = head;
  } while (
      !head_.compare_exchange_weak(head, r, std::memory_order_release, std::memory_order_relaxed));
  if (fd_ >= 0) {
    uint64_t one = 1;
    ssize_t n = ::write(fd_, &one, sizeof one);
    (void)n;
  }
}

std::vector<ShardReport*> ReportQueue::take_all() {
  if (fd_ >= 0) {
    uint64_t v;
    ssize_t n = ::read(fd_, &v, sizeof v);
    (void)n;
  }
  std::vector<ShardReport*> out;
  for (ShardReport* r = head_.exchange(nullptr, std::memory_order_acquire); r != nullptr;
       r = r->next) {
    out.push_back(r);
  }
  std::reverse(out.begin(), out.end());  // the stack holds newest first
  return out;
}

}  // namespace ringlb::core::runtime
