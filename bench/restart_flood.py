"""How many new connections a ringlb hand-over on one port (SO_REUSEPORT) loses.

Threads open TCP connections back to back (HTTP/2 preface, wait for the server's SETTINGS,
close) while a second ringlb takes over the port and the first gets SIGTERM; each round counts
connections that were reset or closed before SETTINGS came. Runs itself in a network namespace
of its own (loopback only) with net.ipv4.tcp_migrate_req set as asked; needs root.

  python3 bench/restart_flood.py [--backend io_uring|epoll] [--workers 2] [--threads 32]
                                 [--rounds 15] [--migrate 0|1]
RINGLB_BIN picks the binary (default build/ringlb). The README's figures come from this.
"""
from __future__ import annotations

import argparse
import collections
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def one_connection(port: int) -> str:
    s = socket.socket()
    s.settimeout(3)
    try:
        s.connect(("127.0.0.1", port))
        s.sendall(PREFACE)
        head = s.recv(9)
        if len(head) < 9:
            return "closed"
        return "ok" if head[3] == 4 else "not SETTINGS"
    except ConnectionResetError:
        return "reset"
    except ConnectionRefusedError:
        return "refused"
    except socket.timeout:
        return "timeout"
    except OSError as e:
        return f"errno {e.errno}"
    finally:
        s.close()


def run(args) -> int:
    sys.path.insert(0, str(REPO / "tests" / "integration"))
    import harness  # noqa: E402 (the integration harness: backends, the ringlb process)

    tmp = Path(tempfile.mkdtemp(prefix="restart-flood-"))
    pool = harness.BackendPool()
    backend = pool(1)[0]
    port = harness.closed_port()
    cfg = {"proxy": {"workers": args.workers, "io_backend": args.backend, "drain_timeout": "5s"},
           "listener": [{"address": f"127.0.0.1:{port}", "cluster": "main"}],
           "cluster": [harness.cluster("main", [backend])]}
    current = harness.Ringlb(cfg, args.backend, tmp, name="gen0")
    total = collections.Counter()
    for r in range(args.rounds):
        stop = threading.Event()
        seen = collections.Counter()
        lock = threading.Lock()

        def flood():
            while not stop.is_set():
                outcome = one_connection(port)
                with lock:
                    seen[outcome] += 1

        threads = [threading.Thread(target=flood) for _ in range(args.threads)]
        for t in threads:
            t.start()
        t0 = time.monotonic()
        time.sleep(0.3)
        successor = harness.Ringlb(cfg, args.backend, tmp, name=f"gen{r + 1}")
        time.sleep(0.3)
        current.signal(signal.SIGTERM)
        rc = current.wait(10)
        time.sleep(0.3)
        stop.set()
        for t in threads:
            t.join()
        secs = time.monotonic() - t0
        n = sum(seen.values())
        print(f"round {r}: {dict(seen)} ({n / secs:.0f} connections/s); old exit {rc}",
              flush=True)
        total.update(seen)
        current = successor
    current.stop()
    pool.close()
    n = sum(total.values())
    lost = n - total["ok"]
    print(f"{args.backend}, tcp_migrate_req={args.migrate}: {lost} of {n} connections lost "
          f"over {args.rounds} hand-overs {dict(total)}")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", default="io_uring", choices=["io_uring", "epoll"])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=32)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--migrate", type=int, default=0, choices=[0, 1])
    args = p.parse_args()
    if os.environ.get("RESTART_FLOOD_NETNS") != "1":
        script = (f"ip link set lo up && sysctl -qw net.ipv4.tcp_migrate_req={args.migrate} && "
                  f"exec {sys.executable} {Path(__file__).resolve()} " + " ".join(sys.argv[1:]))
        env = dict(os.environ, RESTART_FLOOD_NETNS="1")
        env.setdefault("RINGLB_BIN", str(REPO / "build" / "ringlb"))
        return subprocess.call(["unshare", "--net", "sh", "-c", script], env=env)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
