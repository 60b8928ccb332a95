// `ringlb demo` and `ringlb backend`: argument handling and process plumbing (signals, the proxy
// child, its config file). The backend loops are in backend.cc, the demo's client in client.cc.
// Main thread only.
#include "core/demo/demo.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "core/base/log.h"
#include "core/demo/backend.h"
#include "core/demo/client.h"
#include "core/demo/options.h"
#include "core/io/net.h"

namespace ringlb::core::demo {
namespace {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

sockaddr_in loopback(uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

// Binds 127.0.0.1:port as the proxy's listener would, but without SO_REUSEPORT, so that a port
// held by another process fails here (EADDRINUSE) even if that process set SO_REUSEPORT too.
bool port_is_free(uint16_t port) {
  sockaddr_in addr = loopback(port);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  bool ok = fd >= 0 && bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
            listen(fd, 1) == 0;
  int err = errno;
  if (fd >= 0) close(fd);
  if (!ok && err == EADDRINUSE) {
    LOG_ERROR("ringlb demo: port %u on 127.0.0.1 is busy; pick another with --port N", port);
  } else if (!ok) {
    LOG_ERROR("ringlb demo: cannot listen on 127.0.0.1:%u: %s", port, strerror(err));
  }
  return ok;
}

bool can_connect(uint16_t port) {
  sockaddr_in addr = loopback(port);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  bool ok = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  close(fd);
  return ok;
}

std::string describe_exit(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  return std::string("was killed by signal ") + strsignal(WTERMSIG(status));
}

// Asks the proxy to drain and waits; a proxy that ignores SIGTERM for 10 s is killed.
void stop_proxy(pid_t pid) {
  if (pid <= 0) return;
  kill(pid, SIGTERM);
  int status;
  for (auto deadline = Clock::now() + 10s; waitpid(pid, &status, WNOHANG) == 0;) {
    if (Clock::now() > deadline) {
      LOG_WARN("ringlb demo: the proxy ignored SIGTERM for 10 s; killing it");
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      return;
    }
    std::this_thread::sleep_for(20ms);
  }
}

std::string write_config(uint16_t port, const std::vector<uint16_t>& endpoints) {
  char path[] = "/tmp/ringlb-demo-XXXXXX.toml";
  int fd = mkstemps(path, 5);
  if (fd < 0) return {};
  std::string list;
  for (uint16_t p : endpoints) {
    list += (list.empty() ? "\"127.0.0.1:" : ", \"127.0.0.1:") + std::to_string(p) + "\"";
  }
  std::string text =
      "# Written by `ringlb demo`; removed when the demo exits.\n"
      "[proxy]\nworkers = 1\ndrain_timeout = \"1s\"\n\n"
      "[log]\naccess = \"off\"  # the demo prints its own summary on this terminal\n\n"
      "[[listener]]\naddress = \"127.0.0.1:" +
      std::to_string(port) +
      "\"\ncluster = \"demo\"\n\n"
      "[[cluster]]\nname = \"demo\"\nlb = \"round_robin\"\nendpoints = [" +
      list + "]\n";
  bool ok = write(fd, text.data(), text.size()) == ssize_t(text.size());
  close(fd);
  if (!ok) unlink(path);
  return ok ? path : "";
}

// Forks and execs the proxy. The child gets its own process group, so Ctrl-C reaches only the
// demo, which then stops the proxy in order; PDEATHSIG covers a demo that dies uncleanly.
pid_t spawn_proxy(const char* self_exe, const std::string& config, const sigset_t& old_mask) {
  const char* args[] = {self_exe, "--config", config.c_str(), nullptr};
  pid_t parent = getpid();
  fflush(stdout);  // or the child would inherit, and one day repeat, buffered output
  pid_t pid = fork();
  if (pid != 0) return pid;
  // The child of a threaded process: async-signal-safe calls only until exec.
  setpgid(0, 0);
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (getppid() != parent) _exit(1);
  sigprocmask(SIG_SETMASK, &old_mask, nullptr);
  execvp(self_exe, const_cast<char* const*>(args));
  const char msg[] = "ringlb demo: cannot exec the proxy\n";
  (void)!write(2, msg, sizeof msg - 1);
  _exit(127);
}

// Writes the config, starts the proxy and waits until it accepts connections on `port`.
// Returns its pid, or -1 after cleaning up (`config` is then removed and cleared).
pid_t start_proxy(const char* self_exe, uint16_t port, const std::vector<uint16_t>& endpoints,
                  const sigset_t& old_mask, const sigset_t& stop_signals, std::string& config) {
  config = write_config(port, endpoints);
  if (config.empty()) {
    LOG_ERROR("ringlb demo: cannot write a config under /tmp: %s", strerror(errno));
    return -1;
  }
  pid_t proxy = spawn_proxy(self_exe, config, old_mask);
  if (proxy < 0) LOG_ERROR("ringlb demo: fork: %s", strerror(errno));
  // Wait for the listener; sigtimedwait doubles as the retry pause and catches Ctrl-C.
  auto deadline = Clock::now() + 10s;
  timespec pause{0, 50'000'000};
  int status;
  bool up = false;
  while (proxy > 0 && !(up = can_connect(port))) {
    if (waitpid(proxy, &status, WNOHANG) == proxy) {
      LOG_ERROR("ringlb demo: the proxy (%s --config %s) %s before listening", self_exe,
                config.c_str(), describe_exit(status).c_str());
      proxy = -1;
    } else if (Clock::now() > deadline) {
      LOG_ERROR("ringlb demo: the proxy did not accept connections on 127.0.0.1:%u within 10 s",
                port);
      break;
    } else if (sigtimedwait(&stop_signals, nullptr, &pause) > 0) {
      break;
    }
  }
  if (up) return proxy;
  stop_proxy(proxy);
  unlink(config.c_str());
  config.clear();
  return -1;
}

void print_tally(const CallTally& tally, int calls, int backends, bool direct) {
  printf("%d calls over one HTTP/2 connection%s:\n", calls, direct ? " (--direct)" : "");
  // By length first, so backend-10 follows backend-9.
  auto shorter = [](const std::string& a, const std::string& b) {
    return a.size() != b.size() ? a.size() < b.size() : a < b;
  };
  std::map<std::string, int, decltype(shorter)> rows(tally.by_backend.begin(),
                                                     tally.by_backend.end());
  for (int k = 1; k <= backends; ++k) rows.try_emplace("backend-" + std::to_string(k), 0);
  int most = 1, width = 10;
  for (auto& [name, n] : rows) most = std::max(most, n), width = std::max(width, int(name.size()));
  for (auto& [name, n] : rows) {
    std::string bar(size_t(n * 30 / most), '#');
    printf("  %-*s %5d%s%s\n", width, name.c_str(), n, bar.empty() ? "" : "  ", bar.c_str());
  }
  if (tally.failed > 0) {
    printf("  %-*s %5d  (first: %s)\n", width, "FAILED", tally.failed, tally.first_error.c_str());
  }
  fflush(stdout);
}

// Starts `count` backends named backend-1.. on 127.0.0.1 ports of the kernel's choosing.
bool start_demo_backends(int count, io::IoBackend backend, Backends& loops,
                         std::vector<uint16_t>& ports) {
  sockaddr_in any = loopback(0);
  for (int k = 1; k <= count; ++k) {
    std::string error;
    int fd = io::make_listen_socket(reinterpret_cast<sockaddr*>(&any), sizeof any, error);
    if (fd >= 0) {
      io::SocketAddress bound = io::local_address(fd);
      ports.push_back(ntohs(reinterpret_cast<const sockaddr_in*>(&bound.storage)->sin_port));
      loops.push_back(BackendLoop::start(fd, "backend-" + std::to_string(k), 0, backend, error));
    }
    if (fd < 0 || loops.back() == nullptr) {
      LOG_ERROR("ringlb demo: backend: %s", error.c_str());
      return false;
    }
  }
  return true;
}

// After the picture: the demo is a running service until Ctrl-C, or until the proxy dies.
int serve_until_stopped(const sigset_t& wait_signals, pid_t& proxy, uint16_t target) {
  printf(
      "Send your own calls: h2load -n 1000 -c 1 -m 10 -H 'content-type: application/grpc'"
      " -H 'te: trailers' http://127.0.0.1:%u/demo.Echo/Say  (or any gRPC client, "
      "plaintext)\nCtrl-C to stop.\n",
      target);
  fflush(stdout);
  for (siginfo_t info; sigwaitinfo(&wait_signals, &info) < 0 || info.si_signo == SIGCHLD;) {
    int status;
    if (proxy > 0 && waitpid(proxy, &status, WNOHANG) == proxy) {
      LOG_ERROR("ringlb demo: the proxy %s", describe_exit(status).c_str());
      proxy = -1;
      return 1;
    }
  }
  return 0;
}

sigset_t signal_set(std::initializer_list<int> signals) {
  sigset_t set;
  sigemptyset(&set);
  for (int s : signals) sigaddset(&set, s);
  return set;
}

// One SO_REUSEPORT listening socket per loop thread on `addr`. With port 0 the others join the
// port the first one got. Logs why and returns false on failure (nothing left open).
bool open_listeners(io::SocketAddress addr, unsigned count, std::vector<int>& fds) {
  std::string error;
  for (unsigned i = 0; i < count; ++i) {
    if (i == 1) addr = io::local_address(fds[0]);
    int fd = io::make_listen_socket(reinterpret_cast<sockaddr*>(&addr.storage), addr.len, error);
    if (fd < 0) {
      LOG_ERROR("ringlb backend: cannot listen: %s", error.c_str());
      for (int f : fds) close(f);
      fds.clear();
      return false;
    }
    fds.push_back(fd);
  }
  return true;
}

// Serves `fds` (one loop thread each, owning its socket) until SIGINT or SIGTERM, which the
// caller has blocked. Returns the exit code.
int serve_backend(const std::vector<int>& fds, const std::string& name, unsigned delay_ms,
                  io::IoBackend backend, const sigset_t& stop_signals) {
  std::string bound = io::local_address(fds[0]).text, error;
  Backends loops;  // stopped when it goes
  for (int fd : fds) {
    if (!loops.empty() && loops.back() == nullptr) {
      close(fd);  // an earlier loop failed: this socket has no owner yet
    } else {
      loops.push_back(BackendLoop::start(fd, name, delay_ms * 1'000'000LL, backend, error));
    }
  }
  if (loops.back() == nullptr) {
    LOG_ERROR("ringlb backend: %s", error.c_str());
    return 1;
  }
  printf("ringlb backend %s listening on %s (h2c, %zu thread%s, delay %u ms)\n", name.c_str(),
         bound.c_str(), fds.size(), fds.size() == 1 ? "" : "s", delay_ms);
  fflush(stdout);
  int sig;
  sigwait(&stop_signals, &sig);
  return 0;
}

}  // namespace

int run_backend(int argc, char** argv) {
  const char* usage =
      "ringlb backend --listen 127.0.0.1:PORT --name NAME [--delay-ms N] [--threads N] "
      "[--io-backend auto|io_uring|epoll]";
  std::string name = "backend";
  unsigned delay_ms = 0, threads = 1;
  io::IoBackend want = io::IoBackend::kAuto;
  std::optional<io::SocketAddress> addr;
  bool ok = parse_options(argc, argv, {}, usage, [&](std::string_view k, std::string_view v) {
    if (k == "--listen") return (addr = io::parse_socket_address(v)).has_value();
    if (k == "--name") return name.assign(v), !v.empty();
    if (k == "--delay-ms") return parse_number(v, delay_ms);
    if (k == "--threads") return parse_number(v, threads) && threads >= 1 && threads <= 256;
    if (k == "--io-backend") return parse_io_backend(v, want);
    return false;
  });
  if (!ok || !addr) {
    if (ok) fprintf(stderr, "ringlb backend: --listen is required\nusage: %s\n", usage);
    return 2;
  }
  std::optional<io::IoBackend> backend = pick_reactor(want);
  if (!backend) return 1;
  // Signals are taken by sigwait, never by handlers: block them before any thread starts so
  // every thread inherits the mask.
  sigset_t stop_signals = signal_set({SIGINT, SIGTERM}), old_mask;
  pthread_sigmask(SIG_BLOCK, &stop_signals, &old_mask);
  std::vector<int> fds;
  int rc = open_listeners(*addr, threads, fds)
               ? serve_backend(fds, name, delay_ms, *backend, stop_signals)
               : 1;
  pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  return rc;
}

int run_demo(int argc, char** argv, const char* self_exe) {
  const char* usage = "ringlb demo [--port N] [--backends K] [--calls N] [--exit]";
  uint16_t port = 8080;
  int backends = 3, calls = 300;
  bool exit_after = false, direct = false;  // --direct (hidden): no proxy, calls go to backend 1
  bool ok = parse_options(argc, argv, {"--exit", "--direct"}, usage, [&](auto k, auto v) {
    if (k == "--port") return parse_number(v, port) && port != 0;
    if (k == "--backends") return parse_number(v, backends) && backends >= 1 && backends <= 64;
    if (k == "--calls") return parse_number(v, calls) && calls >= 1;
    if (k == "--exit") return exit_after = true;
    if (k == "--direct") return direct = true;
    return false;
  });
  if (!ok) return 2;
  std::optional<io::IoBackend> reactor = pick_reactor(io::IoBackend::kAuto);
  if (!reactor) return 1;
  // As in run_backend; SIGCHLD says the proxy died while we wait for Ctrl-C.
  sigset_t stop_signals = signal_set({SIGINT, SIGTERM});
  sigset_t wait_signals = signal_set({SIGINT, SIGTERM, SIGCHLD}), old_mask;
  pthread_sigmask(SIG_BLOCK, &wait_signals, &old_mask);
  if (!direct && !port_is_free(port)) return 1;

  int rc = 1;
  pid_t proxy = -1;
  std::string config;
  {
    Backends loops;  // stopped when this block ends, on every path
    std::vector<uint16_t> ports;
    if (!start_demo_backends(backends, *reactor, loops, ports)) return 1;
    if (!direct) proxy = start_proxy(self_exe, port, ports, old_mask, stop_signals, config);
    if (direct || proxy > 0) {
      uint16_t target = direct ? ports[0] : port;
      printf(direct ? "ringlb demo: %d backends; --direct: calls go straight to backend-1 on "
                      "127.0.0.1:%u\n"
                    : "ringlb demo: %d backends behind ringlb on 127.0.0.1:%u\n",
             backends, target);
      fflush(stdout);
      CallTally tally = make_demo_calls(calls, target, *reactor);
      print_tally(tally, calls, backends, direct);
      rc = tally.failed > 0 ? 1 : 0;
      // Once the picture is shown, the demo is a running service: only the proxy's death fails it.
      if (!exit_after) rc = serve_until_stopped(wait_signals, proxy, target);
    }
    stop_proxy(proxy);
  }
  if (!config.empty()) unlink(config.c_str());
  pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  return rc;
}

}  // namespace ringlb::core::demo
