#include "core/runtime/access_log.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <ctime>

#include "core/base/clock.h"
#include "core/base/log.h"

namespace ringlb::core::runtime {
namespace {

// Output budgets per field (bytes between the quotes, escapes included). Their sum with the
// keys and numbers stays under kAccessLineMax (the longest-line unit test checks it).
constexpr size_t kListenerMax = 64;
constexpr size_t kPeerMax = 64;
constexpr size_t kPeerIdentityMax = 256;
constexpr size_t kAuthorityMax = 128;
constexpr size_t kPathMax = 288;  // service + method, or path
constexpr size_t kGrpcMessageMax = 256;
constexpr size_t kClusterMax = 96;
constexpr size_t kEndpointMax = 56;
constexpr size_t kUserAgentMax = 128;
constexpr size_t kRequestIdMax = 96;

constexpr int64_t kNapNs = 2'000'000;               // between idle looks; the first busy nap
constexpr int64_t kMinNapNs = 1'000'000;            // busy naps adapt within these bounds so a
constexpr int64_t kMaxNapNs = 16'000'000;           // pass takes 1/8 to 3/8 of the fullest ring
constexpr int kIdleNaps = 5;                        // then sleep until a shard wakes us
constexpr int64_t kReportEveryNs = 10'000'000'000;  // drop reports

// The length of the valid UTF-8 sequence at s[0] (2..4 bytes), 0 if it is not one (overlong,
// surrogate, past U+10FFFF, cut short).
size_t utf8_length(const unsigned char* s, size_t n) {
  const unsigned c = s[0];
  if (c < 0xC2) return 0;
  if (c < 0xE0) return n >= 2 && (s[1] & 0xC0) == 0x80 ? 2 : 0;
  if (c < 0xF0) {
    if (n < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80) return 0;
    if (c == 0xE0 && s[1] < 0xA0) return 0;   // overlong
    if (c == 0xED && s[1] >= 0xA0) return 0;  // surrogates
    return 3;
  }
  if (c < 0xF5) {
    if (n < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80) {
      return 0;
    }
    if (c == 0xF0 && s[1] < 0x90) return 0;   // overlong
    if (c == 0xF4 && s[1] >= 0x90) return 0;  // past U+10FFFF
    return 4;
  }
  return 0;
}

// A JSON object written into a fixed buffer. Strings are cut to their budget (and to what the
// line has left); everything else is short and counted in the budgets above.
class JsonOut {
 public:
  static_assert(std::endian::native == std::endian::little, "special_bytes reads words LE");
  // High bit set in each byte of `x` that JSON escaping or UTF-8 checking must look at: below
  // 0x20, '"', '\\', or 0x80 and up. Exact for the lowest such byte (borrows only run upward),
  // which is all the caller uses.
  static uint64_t special_bytes(uint64_t x) {
    constexpr uint64_t kOnes = 0x0101010101010101ULL;
    constexpr uint64_t kHigh = 0x8080808080808080ULL;
    const uint64_t q = x ^ (kOnes * '"');
    const uint64_t b = x ^ (kOnes * '\\');
    return (((x - kOnes * 0x20) & ~x) | ((q - kOnes) & ~q) | ((b - kOnes) & ~b) | x) & kHigh;
  }

  explicit JsonOut(char* buf) : p_(buf), start_(buf), end_(buf + kAccessLineMax - 160) {}

  template <size_t N>
  void raw(const char (&lit)[N]) {
    std::memcpy(p_, lit, N - 1);
    p_ += N - 1;
  }
  void raw(std::string_view s) {
    std::memcpy(p_, s.data(), s.size());
    p_ += s.size();
  }
  void u64(uint64_t v) {
    if (v < 10) {  // most counts
      *p_++ = static_cast<char>('0' + v);
      return;
    }
    char tmp[20];
    size_t n = 0;
    do {
      tmp[n++] = static_cast<char>('0' + v % 10);
      v /= 10;
    } while (v != 0);
    while (n > 0) *p_++ = tmp[--n];
  }
  // Nanoseconds as milliseconds with three decimals.
  void ms(int64_t ns) {
    const uint64_t us = ns > 0 ? static_cast<uint64_t>(ns) / 1000 : 0;
    u64(us / 1000);
    const unsigned frac = static_cast<unsigned>(us % 1000);
    p_[0] = '.';
    p_[1] = static_cast<char>('0' + frac / 100);
    p_[2] = static_cast<char>('0' + frac / 10 % 10);
    p_[3] = static_cast<char>('0' + frac % 10);
    p_ += 4;
  }
  // 1..7 bytes as the low bytes of a word, zeros above, without reading past them.
  static uint64_t load_tail(const unsigned char* p, size_t rem) {
    uint64_t x = 0;
    size_t off = 0;
    if (rem >= 4) {
      uint32_t v;
      std::memcpy(&v, p, 4);
      x = v;
      off = 4;
    }
    if (rem - off >= 2) {
      uint16_t v;
      std::memcpy(&v, p + off, 2);
      x |= static_cast<uint64_t>(v) << (off * 8);
      off += 2;
    }
    if (rem - off >= 1) x |= static_cast<uint64_t>(p[off]) << (off * 8);
    return x;
  }
  /// A quoted string of at most `budget` bytes inside the quotes. True if `s` was cut.
  bool str(std::string_view s, size_t budget) {
    *p_++ = '"';
    bool cut = body(s, budget);
    *p_++ = '"';
    return cut;
  }
  void str_or_null(std::string_view s, size_t budget) {
    if (s.empty()) {
      raw("null");
    } else {
      str(s, budget);
    }
  }
  /// The escaped text alone (no quotes). True if it was cut.
  bool body(std::string_view s, size_t budget) {
    char* const lim = std::min(p_ + budget, end_);
    const auto* in = reinterpret_cast<const unsigned char*>(s.data());
    const size_t n = s.size();
    size_t i = 0;
    while (i < n) {
      // Eight bytes at a time while none needs a second look (most header values).
      while (i + 8 <= n && p_ + 8 <= lim) {
        uint64_t x;
        std::memcpy(&x, in + i, 8);
        std::memcpy(p_, &x, 8);  // room for 8 is there; only the plain ones count
        if (const uint64_t m = special_bytes(x); m != 0) {
          const size_t k = static_cast<size_t>(__builtin_ctzll(m)) >> 3;
          p_ += k;
          i += k;
          break;
        }
        p_ += 8;
        i += 8;
      }
      // The last few bytes as one word too (short values are most of them).
      if (const size_t rem = n - i; rem > 0 && rem < 8 && p_ + 8 <= lim) {
        const uint64_t x = load_tail(in + i, rem);
        const uint64_t m = special_bytes(x);  // the zero padding is flagged, past `rem` only
        const size_t k = static_cast<size_t>(__builtin_ctzll(m)) >> 3;
        std::memcpy(p_, &x, 8);
        p_ += std::min(k, rem);
        i += std::min(k, rem);
      }
      if (i >= n) break;
      const unsigned c = in[i];
      if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
        if (p_ >= lim) break;
        *p_++ = static_cast<char>(c);
        ++i;
      } else if (c < 0x80) {
        if (!escape(c, lim)) break;
        ++i;
      } else if (size_t len = utf8_length(in + i, n - i); len > 0) {
        if (p_ + len > lim) break;
        std::memcpy(p_, in + i, len);
        p_ += len;
        i += len;
      } else {  // invalid UTF-8: one byte becomes U+FFFD
        if (p_ + 3 > lim) break;
        raw("\xEF\xBF\xBD");
        ++i;
      }
    }
    return i < n;
  }
  size_t finish() {
    raw("}\n");
    return static_cast<size_t>(p_ - start_);
  }

 private:
  bool escape(unsigned c, char* lim) {
    char short_form = 0;
    switch (c) {
      case '"':
        short_form = '"';
        break;
      case '\\':
        short_form = '\\';
        break;
      case '\n':
        short_form = 'n';
        break;
      case '\r':
        short_form = 'r';
        break;
      case '\t':
        short_form = 't';
        break;
      case '\b':
        short_form = 'b';
        break;
      case '\f':
        short_form = 'f';
        break;
      default:
        break;
    }
    if (short_form != 0) {
      if (p_ + 2 > lim) return false;
      p_[0] = '\\';
      p_[1] = short_form;
      p_ += 2;
      return true;
    }
    if (p_ + 6 > lim) return false;
    static constexpr char kHex[] = "0123456789abcdef";
    std::memcpy(p_, "\\u00", 4);
    p_[4] = kHex[c >> 4];
    p_[5] = kHex[c & 15];
    p_ += 6;
    return true;
  }

  char* p_;
  char* start_;
  char* end_;  // strings stop here: what follows them always fits
};

void put_time(JsonOut& j, int64_t wall_ns, WallSecondCache& cache) {
  const int64_t sec = wall_ns / 1'000'000'000;
  if (sec != cache.second) {
    cache.second = sec;
    time_t t = static_cast<time_t>(sec);
    tm u;
    gmtime_r(&t, &u);
    strftime(cache.text, sizeof cache.text, "%Y-%m-%dT%H:%M:%S", &u);
  }
  const unsigned milli = static_cast<unsigned>(wall_ns / 1'000'000 % 1000);
  j.raw(std::string_view(cache.text, 19));
  char frac[5] = {'.', static_cast<char>('0' + milli / 100),
                  static_cast<char>('0' + milli / 10 % 10), static_cast<char>('0' + milli % 10),
                  'Z'};
  j.raw(std::string_view(frac, 5));
}

// "service"/"method" for a gRPC "/pkg.Svc/Method", else "path".
void put_target(JsonOut& j, const proxy::CallRecord& r) {
  const std::string_view path = r.path;
  if (r.grpc && path.size() > 1 && path[0] == '/') {
    const size_t slash = path.rfind('/');
    if (slash > 1 && slash + 1 < path.size()) {
      j.raw(",\"service\":");
      j.str(path.substr(1, slash - 1), kPathMax / 2);
      j.raw(",\"method\":");
      j.str(path.substr(slash + 1), kPathMax / 2);
      return;
    }
  }
  j.raw(",\"path\":");
  j.str(path, kPathMax);
}

void put_grpc(JsonOut& j, const proxy::CallRecord& r) {
  j.raw(",\"grpc_status\":");
  if (r.grpc_status >= 0) {
    j.u64(static_cast<uint64_t>(r.grpc_status));
  } else {
    j.raw("null");
  }
  j.raw(",\"grpc_message\":");
  if (r.grpc_message.empty()) {
    j.raw("null");
  } else if (j.str(r.grpc_message, kGrpcMessageMax)) {
    j.raw(",\"grpc_message_truncated\":true");
  }
}

void put_upstream(JsonOut& j, const proxy::CallRecord& r, const config::Config& config) {
  j.raw(",\"cluster\":");
  if (r.cluster >= 0 && static_cast<size_t>(r.cluster) < config.clusters.size()) {
    j.str(config.clusters[static_cast<size_t>(r.cluster)].name, kClusterMax);
  } else {
    j.raw("null");
  }
  j.raw(",\"endpoints\":[");
  const size_t named = std::min<size_t>(r.attempts, proxy::CallRecord::kMaxTried);
  for (size_t i = 0; i < named; ++i) {
    if (i > 0) j.raw(",");
    j.str(r.tried[i], kEndpointMax);
  }
  j.raw("],\"attempts\":");
  j.u64(r.attempts);
  j.raw(",\"retries\":");
  j.u64(r.retries);
  j.raw(",\"hedges\":");
  j.u64(r.hedges);
  j.raw(",\"replays\":");
  j.u64(r.replays);
}

}  // namespace

size_t format_access_line(const proxy::CallRecord& r, const config::Config& config, int64_t wall_ns,
                          WallSecondCache& cache, char* out) {
  JsonOut j(out);
  j.raw("{\"time\":\"");
  put_time(j, wall_ns, cache);
  j.raw("\",\"listener\":");
  if (r.listener < config.listeners.size()) {
    j.str(config.listeners[r.listener].address.text, kListenerMax);
  } else {
    j.raw("null");
  }
  j.raw(",\"peer\":");
  j.str_or_null(r.peer, kPeerMax);
  if (r.tls != nullptr) {  // a TLS listener's calls only
    j.raw(",\"tls\":");
    j.str(r.tls, kPeerMax);
    j.raw(",\"peer_identity\":");
    j.str_or_null(r.peer_identity, kPeerIdentityMax);
  }
  j.raw(",\"authority\":");
  j.str_or_null(r.authority, kAuthorityMax);
  put_target(j, r);
  j.raw(",\"http_status\":");
  j.u64(r.http_status);
  put_grpc(j, r);
  if (r.flags == 0) {
    j.raw(",\"flags\":\"-\"");
  } else {
    char flags[64];
    const size_t nf = proxy::call_flag_names(r.flags, flags);
    j.raw(",\"flags\":\"");
    j.raw(std::string_view(flags, nf));
    j.raw("\"");
  }
  put_upstream(j, r, config);
  j.raw(",\"duration_ms\":");
  j.ms(r.start_ns > 0 && r.end_ns > r.start_ns ? r.end_ns - r.start_ns : 0);
  j.raw(",\"upstream_ms\":");
  j.ms(r.upstream_ns);
  j.raw(",\"request_bytes\":");
  j.u64(r.request_bytes);
  j.raw(",\"response_bytes\":");
  j.u64(r.response_bytes);
  j.raw(",\"user_agent\":");
  j.str_or_null(r.user_agent, kUserAgentMax);
  j.raw(",\"request_id\":");
  j.str_or_null(r.request_id, kRequestIdMax);
  return j.finish();
}

bool access_log_success(const proxy::CallRecord& r) {
  if (r.flags != 0) return false;
  if (r.grpc) return r.grpc_status == 0;
  return r.http_status != 0 && r.http_status < 400;
}

// --- AccessLogShard -----------------------------------------------------------------------

AccessLogShard::AccessLogShard(AccessLog& log, size_t lines, double sample, uint64_t seed)
    : log_(log) {
  line_cap_ = std::max<size_t>(lines, 2);
  size_t bytes = 8192;
  while (bytes < line_cap_ * 512) bytes <<= 1;
  byte_mask_ = bytes - 1;
  ring_ = std::make_unique_for_overwrite<char[]>(bytes);
  sample_all_ = sample >= 1.0;
  const double below = std::ldexp(sample, 64);
  sample_below_ = sample <= 0.0                     ? 0
                  : below >= 18446744073709551615.0 ? UINT64_MAX
                                                    : static_cast<uint64_t>(below);
  random_ = seed * 0x9e3779b97f4a7c15ULL + 0x632be59bd9b4e019ULL;
}

void AccessLogShard::log(const proxy::CallRecord& r, const config::Config& config) {
  if (!sample_all_ && access_log_success(r)) {
    // splitmix64: cheap, shard-local.
    uint64_t z = (random_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    if ((z ^ (z >> 31)) >= sample_below_) return;
  }
  // A line fits if the ring holds fewer than line_cap_ lines and has room for its bytes. The
  // writer's head_ is read only when the last reading of it no longer shows enough.
  const uint64_t tail = pack(tail_lines_, tail_bytes_);
  const size_t size = byte_mask_ + 1;
  auto room = [&] {
    return lines_between(head_seen_, tail) < line_cap_ ? size - bytes_between(head_seen_, tail) : 0;
  };
  size_t free = room();
  if (free < kAccessLineMax) {
    head_seen_ = head_.load(std::memory_order_acquire);
    free = room();
  }
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  const int64_t wall_ns = static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
  const size_t at = tail_bytes_ & byte_mask_;
  size_t len;
  if (free >= kAccessLineMax && size - at >= kAccessLineMax) {
    // Straight into the ring: every line but those that would cross the ring's end.
    len = format_access_line(r, config, wall_ns, wall_, ring_.get() + at);
  } else {  // formatted aside, then copied if it fits (in two pieces across the end)
    len = free == 0 ? 0 : format_access_line(r, config, wall_ns, wall_, scratch_);
    if (len == 0 || len > free) {
      dropped_.store(dropped_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
      log_.wake_if_sleeping();  // its drop report is due
      return;
    }
    const size_t first = std::min(len, size - at);
    std::memcpy(ring_.get() + at, scratch_, first);
    std::memcpy(ring_.get(), scratch_ + first, len - first);
  }
  tail_lines_ += 1;
  tail_bytes_ += len;
  queued_.store(tail_lines_, std::memory_order_relaxed);
  // seq_cst: pairs with the writer's sleeping_ store and its re-check of the rings.
  tail_.store(pack(tail_lines_, tail_bytes_), std::memory_order_seq_cst);
  log_.wake_if_sleeping();
}

// --- AccessLog ----------------------------------------------------------------------------

std::unique_ptr<AccessLog> AccessLog::create(const config::LogConfig& c, unsigned shards,
                                             std::string& error) {
  if (c.access == config::AccessLogTarget::kOff) return nullptr;
  int fd = 1;
  bool own = false;
  if (c.access == config::AccessLogTarget::kFile) {
    fd = ::open(c.access_path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
      error = "log.access: cannot open " + c.access_path + ": " + strerror(errno);
      return nullptr;
    }
    own = true;
  }
  return std::make_unique<AccessLog>(fd, own, c.access_path, shards, c.access_buffer,
                                     c.access_sample);
}

AccessLog::AccessLog(int fd, bool own_fd, std::string path, unsigned shards, size_t lines,
                     double sample)
    : fd_(fd), own_fd_(own_fd), path_(std::move(path)) {
  for (unsigned i = 0; i < shards; ++i) {
    shards_.push_back(std::make_unique<AccessLogShard>(*this, lines, sample, i + 1));
  }
  take_.assign(shards, 0);
  iov_.resize(2 * static_cast<size_t>(shards));
}

AccessLog::~AccessLog() {
  stop();
  if (wake_fd_ >= 0) ::close(wake_fd_);
  if (own_fd_) ::close(fd_.load());
  if (int p = pending_fd_.exchange(-1); p >= 0) ::close(p);
}

bool AccessLog::start(std::string& error) {
  wake_fd_ = eventfd(0, EFD_CLOEXEC);
  if (wake_fd_ < 0) {
    error = std::string("access log: eventfd: ") + strerror(errno);
    return false;
  }
  // The thread blocks every signal: the control thread takes them (signalfd / sigwait).
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "ringlb-access");
    run();
  });
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  return true;
}

void AccessLog::stop() {
  if (!thread_.joinable()) return;
  stop_.store(true, std::memory_order_seq_cst);
  wake();
  thread_.join();
}

bool AccessLog::reopen(std::string& error) {
  if (path_.empty()) return true;  // stdout: nothing to rotate
  int fd = ::open(path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    error = "log.access: cannot reopen " + path_ + ": " + strerror(errno);
    return false;
  }
  if (!thread_.joinable()) {
    ::close(fd_.exchange(fd));
    return true;
  }
  if (int old = pending_fd_.exchange(fd); old >= 0) ::close(old);
  wake();
  return true;
}

void AccessLog::wake_if_sleeping() {
  if (sleeping_.load(std::memory_order_seq_cst) && sleeping_.exchange(false)) wake();
}

void AccessLog::wake() {
  if (wake_fd_ < 0) return;
  uint64_t one = 1;
  ssize_t r = ::write(wake_fd_, &one, sizeof one);
  (void)r;
}

bool AccessLog::any_queued() const {
  for (const auto& s : shards_) {
    if (s->tail_.load(std::memory_order_seq_cst) != s->head_.load(std::memory_order_relaxed)) {
      return true;
    }
  }
  return false;
}

namespace {

// Every byte, or gives up on a hard error (the lines have nowhere else to go). Blocks on a full
// pipe (this is the writer thread; the shards' rings absorb the wait).
void write_all(int fd, iovec* iov, int count) {
  while (count > 0) {
    ssize_t r = ::writev(fd, iov, count);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        pollfd p{fd, POLLOUT, 0};
        ::poll(&p, 1, -1);
        continue;
      }
      return;
    }
    auto done = static_cast<size_t>(r);
    while (count > 0 && done >= iov->iov_len) {
      done -= iov->iov_len;
      ++iov;
      --count;
    }
    if (count > 0) {
      iov->iov_base = static_cast<char*>(iov->iov_base) + done;
      iov->iov_len -= done;
    }
  }
}

}  // namespace

size_t AccessLog::drain_once() {
  if (int p = pending_fd_.exchange(-1); p >= 0) {
    int old = fd_.exchange(p);
    if (own_fd_) ::close(old);
    own_fd_ = true;
  }
  // Everything each ring holds, one or two iovecs per shard (two where it wraps), one writev.
  size_t n = 0;
  size_t lines = 0;
  size_t fill_eighths = 0;  // of the fullest ring, in eighths
  for (size_t i = 0; i < shards_.size(); ++i) {
    AccessLogShard& s = *shards_[i];
    const uint64_t head = s.head_.load(std::memory_order_relaxed);
    const uint64_t tail = s.tail_.load(std::memory_order_acquire);
    take_[i] = tail;
    const size_t bytes = AccessLogShard::bytes_between(head, tail);
    if (bytes == 0) continue;
    lines += AccessLogShard::lines_between(head, tail);
    const size_t size = s.byte_mask_ + 1;
    fill_eighths = std::max(fill_eighths, bytes * 8 / size);
    const size_t at = s.head_bytes_ & s.byte_mask_;
    const size_t first = std::min(bytes, size - at);
    iov_[n++] = {s.ring_.get() + at, first};
    if (first < bytes) iov_[n++] = {s.ring_.get(), bytes - first};
  }
  if (n == 0) return 0;
  write_all(fd_.load(std::memory_order_relaxed), iov_.data(), static_cast<int>(n));
  for (size_t i = 0; i < shards_.size(); ++i) {
    AccessLogShard& s = *shards_[i];
    const uint64_t head = s.head_.load(std::memory_order_relaxed);
    if (take_[i] == head) continue;
    s.head_bytes_ += AccessLogShard::bytes_between(head, take_[i]);
    // Only now may the shard reuse the bytes.
    s.head_.store(take_[i], std::memory_order_release);
  }
  written_.fetch_add(lines, std::memory_order_relaxed);
  last_fill_eighths_ = fill_eighths;
  return lines;
}

void AccessLog::report_drops(bool force) {
  uint64_t fresh = 0;
  for (auto& s : shards_) fresh += s->dropped() - s->dropped_reported_;
  if (fresh == 0) return;
  const int64_t now = base::mono_now_ns();
  if (!force && last_report_ns_ != 0 && now - last_report_ns_ < kReportEveryNs) return;
  last_report_ns_ = now;
  fresh = 0;
  for (auto& s : shards_) {
    const uint64_t d = s->dropped();
    fresh += d - s->dropped_reported_;
    s->dropped_reported_ = d;
  }
  dropped_reported_.fetch_add(fresh, std::memory_order_relaxed);
  LOG_WARN("access log: %llu lines dropped (buffer full)", static_cast<unsigned long long>(fresh));
}

void AccessLog::run() {
  int idle_naps = 0;  // naps in a row that found nothing
  int64_t busy_nap = kNapNs;
  for (;;) {
    if (const size_t n = drain_once(); n > 0) {
      idle_naps = 0;
      report_drops(false);
      // A busy log: let lines gather so they go out in batches and the shards need not wake
      // us. The nap adapts: a pass that took under 1/8 of the fullest ring doubles it, one
      // over 3/8 halves it, so fewer, larger writes without risking a full ring.
      if (last_fill_eighths_ == 0) busy_nap = std::min(busy_nap * 2, kMaxNapNs);
      if (last_fill_eighths_ >= 3) busy_nap = std::max(busy_nap / 2, kMinNapNs);
      timespec nap{0, static_cast<long>(busy_nap)};
      nanosleep(&nap, nullptr);
      continue;
    }
    report_drops(false);
    if (stop_.load(std::memory_order_seq_cst)) {
      while (drain_once() > 0) {
      }
      report_drops(true);
      return;
    }
    if (idle_naps < kIdleNaps) {
      // Traffic a moment ago: look again shortly rather than have a shard wake us (a syscall
      // on its thread) for the next line.
      ++idle_naps;
      timespec nap{0, kNapNs};
      nanosleep(&nap, nullptr);
      continue;
    }
    sleeping_.store(true, std::memory_order_seq_cst);
    if (any_queued() || stop_.load(std::memory_order_seq_cst) ||
        pending_fd_.load(std::memory_order_relaxed) >= 0) {
      sleeping_.store(false, std::memory_order_relaxed);
      continue;
    }
    // Unreported drops (held back by the 10 s rule) set a timeout; otherwise sleep until woken.
    int timeout = -1;
    for (auto& s : shards_) {
      if (s->dropped() != s->dropped_reported_) timeout = 1000;
    }
    pollfd p{wake_fd_, POLLIN, 0};
    if (::poll(&p, 1, timeout) > 0) {
      uint64_t count;
      ssize_t r = ::read(wake_fd_, &count, sizeof count);
      (void)r;
    }
    sleeping_.store(false, std::memory_order_relaxed);
  }
}

}  // namespace ringlb::core::runtime
