#!/usr/bin/python3
"""A stand-in for the ringlb binary, used only to self-test the harness's process handling.

It honours ringlb's command line, log lines, SIGTERM drain and exit-time shard lines, but it is
an L4 TCP forwarder (one backend per *connection*, round robin). So the harness plumbing
(config file, ready-wait, stderr capture, VmRSS, signals, shard stats) can be exercised before the
real binary exists, while every test that needs L7 behaviour (per-call balancing, routes, gRPC
errors from the proxy, ...) fails against it, as it should.

  RINGLB_BIN=tests/integration/fake_ringlb.py /usr/bin/python3 -m pytest tests/integration
"""
import asyncio
import re
import signal
import socket
import sys
import threading
import tomllib


def log(msg):
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def load(path):
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"line (\d+), column (\d+)", str(e))
        line, col = (m.group(1), m.group(2)) if m else ("1", "1")
        log(f"{path}:{line}:{col}: toml: {e}")
        sys.exit(2)
    except OSError as e:
        log(f"{path}:1:1: file: {e}")
        sys.exit(2)


def seconds(text):
    m = re.fullmatch(r"([0-9.]+)(ms|s|m)", text)
    if not m:
        return None
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60}[m.group(2)]


class Shard:
    def __init__(self, idx, listeners, clusters, port_holder):
        self.idx = idx
        self.listeners = listeners
        self.clusters = clusters
        self.port_holder = port_holder
        self.connections = 0
        self.open = set()
        self.rr = 0
        self.loop = asyncio.new_event_loop()
        self.servers = []
        self.ready = threading.Event()

    async def pipe(self, r, w):
        try:
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            try:
                w.close()
            except Exception:
                pass

    def handler(self, cluster):
        async def handle(cr, cw):
            self.connections += 1
            task = asyncio.current_task()
            self.open.add(task)
            try:
                eps = self.clusters[cluster]["endpoints"]
                ep = eps[self.rr % len(eps)]
                self.rr += 1
                addr = ep["address"] if isinstance(ep, dict) else ep
                host, port = addr.rsplit(":", 1)
                try:
                    ur, uw = await asyncio.open_connection(host, int(port))
                except OSError:
                    cw.close()
                    return
                await asyncio.gather(self.pipe(cr, uw), self.pipe(ur, cw))
            finally:
                self.open.discard(task)
        return handle

    async def start(self):
        for i, lst in enumerate(self.listeners):
            host, port = lst["address"].rsplit(":", 1)
            port = self.port_holder.get(i, int(port))
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind((host, port))
            s.listen(128)
            self.port_holder[i] = s.getsockname()[1]
            cluster = lst.get("cluster") or lst.get("routes", [{}])[0].get("cluster")
            self.servers.append(await asyncio.start_server(self.handler(cluster), sock=s))
            log(f"listening on {host}:{self.port_holder[i]}")

    async def drain(self, timeout):
        for s in self.servers:
            s.close()
        end = self.loop.time() + timeout
        while self.open and self.loop.time() < end:
            await asyncio.sleep(0.05)
        for t in list(self.open):
            t.cancel()

    def run(self):
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.start())
        self.ready.set()
        self.loop.run_forever()


def main():
    args = sys.argv[1:]
    if len(args) == 2 and args[0] == "check":
        load(args[1])
        return 0
    if len(args) != 2 or args[0] != "--config":
        log("usage: ringlb --config FILE | ringlb check FILE")
        return 2
    cfg = load(args[1])
    proxy = cfg.get("proxy", {})
    workers = int(proxy.get("workers", 1))
    drain = seconds(proxy.get("drain_timeout", "20s")) or 20
    clusters = {c["name"]: c for c in cfg.get("cluster", [])}
    log(f"io backend: {proxy.get('io_backend', 'epoll')}")
    ports = {}
    shards = []
    for i in range(workers):
        sh = Shard(i, cfg.get("listener", []), clusters, ports)
        t = threading.Thread(target=sh.run, daemon=True)
        t.start()
        sh.ready.wait()
        shards.append((sh, t))
    log(f"ready: {workers} workers")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.wait(0.1):
        pass
    futs = [asyncio.run_coroutine_threadsafe(sh.drain(drain), sh.loop) for sh, _ in shards]
    for f in futs:
        f.result()
    for sh, _ in shards:
        log(f"shard {sh.idx} stopped: {sh.connections} connections, 0 calls")
    return 0


if __name__ == "__main__":
    sys.exit(main())
