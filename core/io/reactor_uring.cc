// io_uring backend: one ring per owning thread, created on that thread so SINGLE_ISSUER and
// DEFER_TASKRUN hold. Receives use multishot recv over one provided-buffer ring; a buffer goes
// back to the ring as soon as its completion has been handled (handlers consume synchronously).
#include <liburing.h>
#include <poll.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/base/log.h"
#include "core/io/reactor.h"

namespace ringlb::core::io {
namespace {

constexpr unsigned kEntries = 512;
constexpr unsigned kCqEntries = 4096;
constexpr unsigned kBufCount = 128;  // power of two
constexpr unsigned kBufSize = 16 * 1024;
constexpr unsigned kBufGroup = 0;

class UringReactor final : public Reactor {
 public:
  ~UringReactor() override {
    if (ring_ok_) io_uring_queue_exit(&ring_);
    if (br_ != nullptr) munmap(br_, br_bytes_);
    if (bufs_ != nullptr) munmap(bufs_, kBufCount * kBufSize);
  }

  int init() {
    io_uring_params p{};
    p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL | IORING_SETUP_SINGLE_ISSUER |
              IORING_SETUP_DEFER_TASKRUN;
    p.cq_entries = kCqEntries;
    int r = io_uring_queue_init_params(kEntries, &ring_, &p);
    deferred_taskrun_ = r == 0;
    if (r == -EINVAL) {  // kernels before 6.1 lack DEFER_TASKRUN
      p = io_uring_params{};
      p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_COOP_TASKRUN;
      p.cq_entries = kCqEntries;
      r = io_uring_queue_init_params(kEntries, &ring_, &p);
    }
    if (r == -EINVAL) r = io_uring_queue_init(kEntries, &ring_, 0);
    if (r < 0) return -r;
    ring_ok_ = true;
    if (!(p.features & IORING_FEAT_EXT_ARG)) return EINVAL;  // needs 5.11+ for timed waits

    br_bytes_ = kBufCount * sizeof(io_uring_buf);
    void* mem =
        mmap(nullptr, br_bytes_, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (mem == MAP_FAILED) return errno;
    br_ = static_cast<io_uring_buf_ring*>(mem);
    mem = mmap(nullptr, kBufCount * kBufSize, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE,
               -1, 0);
    if (mem == MAP_FAILED) return errno;
    bufs_ = static_cast<uint8_t*>(mem);
    io_uring_buf_reg reg{};
    reg.ring_addr = reinterpret_cast<uint64_t>(br_);
    reg.ring_entries = kBufCount;
    reg.bgid = kBufGroup;
    r = io_uring_register_buf_ring(&ring_, &reg, 0);
    if (r < 0) return -r;  // EINVAL before 5.19: no provided buffer rings
    io_uring_buf_ring_init(br_);
    for (unsigned i = 0; i < kBufCount; ++i) {
      io_uring_buf_ring_add(br_, bufs_ + i * kBufSize, kBufSize, i,
                            io_uring_buf_ring_mask(kBufCount), i);
    }
    io_uring_buf_ring_advance(br_, kBufCount);
    return 0;
  }

  const char* name() const override { return "io_uring"; }

  void trim() override {
    // With DEFER_TASKRUN the kernel fills buffers only inside our own io_uring_enter, so
    // between run_once calls, with no completion waiting, every provided buffer is back in the
    // ring and holds nothing: its pages can go, and one the kernel fills again is faulted back
    // in. Without DEFER_TASKRUN data may land at any syscall: left alone.
    if (bufs_ != nullptr && deferred_taskrun_ && io_uring_cq_ready(&ring_) == 0) {
      madvise(bufs_, kBufCount * kBufSize, MADV_DONTNEED);
      used_since_trim_ = 0;
    }
  }
  bool wants_trim() const override {
    return used_since_trim_ >= kBufCount / 2 && batch_buffers_ <= 2;
  }

  void accept(int fd, Op& op) override {
    io_uring_sqe* sqe = start(op, OpKind::kAccept, fd);
    io_uring_prep_multishot_accept(sqe, fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
  }

  void recv(int fd, Op& op) override {
    io_uring_sqe* sqe = start(op, OpKind::kRecv, fd);
    prep_recv(sqe, fd);
  }

  void send(int fd, Op& op) override {
    io_uring_sqe* sqe = start(op, OpKind::kSend, fd);
    io_uring_prep_writev(sqe, fd, op.iov, op.iovcnt, 0);
  }

  void connect(int fd, const sockaddr* addr, socklen_t len, Op& op) override {
    io_uring_sqe* sqe = start(op, OpKind::kConnect, fd);
    io_uring_prep_connect(sqe, fd, addr, len);
  }

  void poll_in(int fd, Op& op) override {
    io_uring_sqe* sqe = start(op, OpKind::kPollIn, fd);
    io_uring_prep_poll_multishot(sqe, fd, POLLIN);
  }

  void poll_out(int fd, Op& op) override {
    io_uring_sqe* sqe = start(op, OpKind::kPollOut, fd);
    io_uring_prep_poll_add(sqe, fd, POLLOUT);
  }

  void forget(int) override {}

  void cancel(Op& op) override {
    if (!op.active) return;
    op.cancelled = true;
    io_uring_sqe* sqe = get_sqe();
    io_uring_prep_cancel64(sqe, reinterpret_cast<uint64_t>(&op), 0);
    io_uring_sqe_set_data64(sqe, 0);  // its own completion is ignored
  }

  void close(int fd) override { ::close(fd); }

  int run_once(int64_t timeout_ns) override {
    io_uring_cqe* cqe = nullptr;
    int r;
    if (timeout_ns < 0) {
      r = io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, nullptr, nullptr);
    } else {
      __kernel_timespec ts{};
      ts.tv_sec = timeout_ns / 1000000000;
      ts.tv_nsec = timeout_ns % 1000000000;
      r = io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, &ts, nullptr);
    }
    if (r < 0 && r != -ETIME && r != -EINTR && r != -EBUSY && r != -EAGAIN) {
      LOG_ERROR("io_uring wait failed: %s", strerror(-r));
    }
    if (timeout_ns != 0) woke();
    int n = 0;
    batch_buffers_ = 0;
    // Handlers may submit more SQEs while we walk the CQ; that is fine, they go out next turn.
    while (io_uring_peek_cqe(&ring_, &cqe) == 0) {
      uint64_t ud = io_uring_cqe_get_data64(cqe);
      int res = cqe->res;
      uint32_t flags = cqe->flags;
      io_uring_cqe_seen(&ring_, cqe);
      if (ud != 0) {
        dispatch(*reinterpret_cast<Op*>(ud), res, flags);
        ++n;
      }
    }
    return n;
  }

 private:
  io_uring_sqe* get_sqe() {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    while (sqe == nullptr) {  // SQ full: push what we have to the kernel and retry
      io_uring_submit(&ring_);
      sqe = io_uring_get_sqe(&ring_);
    }
    return sqe;
  }

  io_uring_sqe* start(Op& op, OpKind kind, int fd) {
    op.kind = kind;
    op.fd = fd;
    op.active = true;
    op.cancelled = false;
    io_uring_sqe* sqe = get_sqe();
    io_uring_sqe_set_data64(sqe, reinterpret_cast<uint64_t>(&op));
    return sqe;
  }

  void prep_recv(io_uring_sqe* sqe, int fd) {
    io_uring_prep_recv_multishot(sqe, fd, nullptr, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = kBufGroup;
  }

  void dispatch(Op& op, int res, uint32_t flags) {
    bool more = (flags & IORING_CQE_F_MORE) != 0;
    Completion c{res, more, nullptr};
    if (op.kind == OpKind::kRecv) {
      if (res == -ENOBUFS && !more) {
        if (op.cancelled) {
          // A cancel already went to the kernel and found nothing; re-arming would outlive it.
          op.active = false;
          op.handler->on_complete(op, Completion{-ECANCELED, false, nullptr});
          return;
        }
        // Every buffer was in flight when data came; they are all back by now. Re-arm quietly.
        prep_recv(get_sqe_for(op), op.fd);
        return;
      }
      if (flags & IORING_CQE_F_BUFFER) {
        unsigned bid = flags >> IORING_CQE_BUFFER_SHIFT;
        uint8_t* buf = bufs_ + bid * kBufSize;
        c.data = buf;
        ++batch_buffers_;
        ++used_since_trim_;
        if (!more) op.active = false;
        op.handler->on_complete(op, c);
        io_uring_buf_ring_add(br_, buf, kBufSize, bid, io_uring_buf_ring_mask(kBufCount), 0);
        io_uring_buf_ring_advance(br_, 1);
        return;
      }
    }
    if (!more) op.active = false;
    op.handler->on_complete(op, c);
  }

  io_uring_sqe* get_sqe_for(Op& op) {
    io_uring_sqe* sqe = get_sqe();
    io_uring_sqe_set_data64(sqe, reinterpret_cast<uint64_t>(&op));
    return sqe;
  }

  io_uring ring_{};
  bool ring_ok_ = false;
  io_uring_buf_ring* br_ = nullptr;
  size_t br_bytes_ = 0;
  uint8_t* bufs_ = nullptr;
  bool deferred_taskrun_ = false;  // IORING_SETUP_DEFER_TASKRUN took
  // Receive buffers the last run_once used, and all used since the last trim (the kernel takes
  // them in turn, so as many pages are resident now).
  unsigned batch_buffers_ = 0;
  uint64_t used_since_trim_ = 0;
};

}  // namespace

std::unique_ptr<Reactor> make_uring_reactor(int& err, std::string& error) {
  auto r = std::make_unique<UringReactor>();
  err = r->init();
  if (err != 0) {
    error =
        std::string("io_uring setup failed: ") + strerrorname_np(err) + " (" + strerror(err) + ")";
    return nullptr;
  }
  return r;
}

}  // namespace ringlb::core::io
