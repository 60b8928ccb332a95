"""Aggregation (medians over repetitions, added latency, ratios), the floors from the issue,
the Markdown report, the gnuplot PNG, machine and version facts. Part of bench/harness.py."""
from __future__ import annotations

import math
import os
import re
import shutil
import statistics
import subprocess
from pathlib import Path
from typing import Any

from bench_fargate import FARGATE_P99_MS
from bench_load import RATE_CONNS
from bench_targets import KIB_PER_MIB, REFERENCE, REPO, RINGLB_TARGETS, Env

# Floors from the issue. Sizes are MiB of VmRSS.
FLOOR_CPU_VS_HAPROXY = 0.5
FLOOR_P99_VS_HAPROXY = 0.5
FLOOR_IDLE_RSS_MIB = 6.0
FLOOR_EXTRA_RSS_MIB = 40.0
FLOOR_EPOLL_VS_URING = 1.3
FLOOR_OPS_VS_OFF = 1.10  # issue 10: metrics + access log cost at most +10% CPU per call


def med(vals: list) -> float | None:
    v = [x for x in vals if isinstance(x, (int, float)) and not math.isnan(x)]
    return statistics.median(v) if v else None


METRICS = ["calls_per_s", "cpu_us_per_call", "cpu_us_per_call_schedstat", "rate_p50_us",
           "rate_p99_us", "rate_p999_us", "rate_achieved_rate", "cpu_pct_at_rate",
           "rss_idle_kb", "rss_extra_kb", "syscalls_per_call", "rate_steal_ms",
           "hold_max_open"]


def aggregate(targets: list[str], reps: dict[str, list[dict]]) -> dict[str, dict]:
    direct = {r["rep"]: r for r in reps.get("direct", []) if "error" not in r}
    out = {}
    for t in targets:
        good = [r for r in reps[t] if "error" not in r]
        m: dict[str, Any] = {k: med([r.get(k) for r in good]) for k in METRICS}
        for p in ("p50", "p99", "p999"):
            diffs = [r[f"rate_{p}_us"] - direct[r["rep"]][f"rate_{p}_us"]
                     for r in good if r["rep"] in direct and f"rate_{p}_us" in r]
            m[f"added_{p}_us"] = med(diffs) if t != "direct" else 0.0
        m["reps_ok"] = len(good)
        m["reps"] = len(reps[t])
        m["errors"] = [r["error"] for r in reps[t] if "error" in r]
        m["rate_ok"] = all(r.get("rate_ok") for r in good) if good else False
        m["hold_ok"] = (all(r.get("hold_ok") and r.get("hold_concurrent") for r in good)
                        if good and t != "direct" else None)
        out[t] = m
    return out


def ratio(a, b) -> float | None:
    if a is None or b is None or b <= 0:
        return None
    return a / b


def compute_ratios(med_: dict[str, dict]) -> dict[str, dict]:
    out = {}
    for t, m in med_.items():
        out[t] = {}
        for ref in (REFERENCE, "ringlb-io_uring", "ringlb-epoll"):
            r = med_.get(ref)
            if not r or ref == t:
                continue
            out[t][f"cpu_vs_{ref}"] = ratio(m["cpu_us_per_call"], r["cpu_us_per_call"])
            out[t][f"added_p99_vs_{ref}"] = ratio(m["added_p99_us"], r["added_p99_us"])
            out[t][f"calls_per_s_vs_{ref}"] = ratio(m["calls_per_s"], r["calls_per_s"])
    return out


def compute_floors(med_: dict[str, dict], hold_streams: int) -> list[dict]:
    """The floors from the issue; result PASS, FAIL or NO DATA (a figure missing)."""
    floors = []
    h = med_.get(REFERENCE, {})

    def add(name, target, value, limit, ok, shown):
        result = "NO DATA" if value is None or limit is None else ("PASS" if ok else "FAIL")
        floors.append({"floor": name, "target": target, "value": value, "limit": limit,
                       "result": result, "shown": shown})

    held = "" if hold_streams == 10000 else f" (held {hold_streams:,})"
    for t in RINGLB_TARGETS:
        m = med_.get(t)
        if m is None:
            continue
        c, hc = m["cpu_us_per_call"], h.get("cpu_us_per_call")
        rc = ratio(c, hc)
        add("proxy CPU per call <= 0.5x HAProxy h2", t, rc, FLOOR_CPU_VS_HAPROXY,
            rc is not None and rc <= FLOOR_CPU_VS_HAPROXY,
            f"{fmt(c, 2)} vs {fmt(hc, 2)} us = {fmt(rc, 2)}x")
        a, ha = m["added_p99_us"], h.get("added_p99_us")
        lim = None if ha is None else FLOOR_P99_VS_HAPROXY * ha
        add("added p99 at 5,000/s <= 0.5x HAProxy's", t, a, lim,
            a is not None and lim is not None and a <= lim,
            f"{fmt(a, 0)} vs {fmt(ha, 0)} us (limit {fmt(lim, 0)})")
        r = m["rss_idle_kb"]
        mib = None if r is None else r / KIB_PER_MIB
        add("idle RSS (1 worker) <= 6 MiB", t, mib, FLOOR_IDLE_RSS_MIB,
            mib is not None and mib <= FLOOR_IDLE_RSS_MIB, f"{fmt(mib, 2)} MiB")
        x = m["rss_extra_kb"]
        xm = None if x is None else x / KIB_PER_MIB
        add("extra RSS for 10,000 streams <= 40 MiB" + held, t, xm, FLOOR_EXTRA_RSS_MIB,
            xm is not None and xm <= FLOOR_EXTRA_RSS_MIB and m["hold_ok"],
            f"{fmt(xm, 1)} MiB" + ("" if m["hold_ok"] in (None, True)
                                   else f" (only {fmt(m['hold_max_open'], 0)} open at once)"))
    u, o = med_.get("ringlb-io_uring"), med_.get("ringlb-ops")
    if u and o:
        rc = ratio(o["cpu_us_per_call"], u["cpu_us_per_call"])
        add("metrics + access log on: CPU/call within 1.10x of off", "ringlb-ops", rc,
            FLOOR_OPS_VS_OFF, rc is not None and rc <= FLOOR_OPS_VS_OFF,
            f"{fmt(o['cpu_us_per_call'], 2)} vs {fmt(u['cpu_us_per_call'], 2)} us = {fmt(rc, 2)}x")
    u, e = med_.get("ringlb-io_uring"), med_.get("ringlb-epoll")
    if u and e:
        rc = ratio(e["cpu_us_per_call"], u["cpu_us_per_call"])
        add("epoll within 1.3x of io_uring CPU/call", "ringlb-epoll", rc, FLOOR_EPOLL_VS_URING,
            rc is not None and rc <= FLOOR_EPOLL_VS_URING,
            f"{fmt(e['cpu_us_per_call'], 2)} vs {fmt(u['cpu_us_per_call'], 2)} us = {fmt(rc, 2)}x")
    return floors


def fmt(v, digits: int = 1) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if digits == 0:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}"


def render(meta: dict, targets: list[str], med_: dict, ratios: dict, floors: list,
           fargate: dict | None) -> str:
    p = meta["profile"]
    L = []
    L.append(f"# ringlb end-to-end benchmark ({meta['timestamp']})")
    L.append("")
    L.append(f"Command: `{meta['command']}`  ")
    mc = meta["machine"]
    L.append(f"Machine: {mc['nproc']} CPUs ({mc['cpu_model']}), kernel {mc['kernel']}; "
             f"proxy on CPU {mc['proxy_cpu']}, h2load + backends on CPU {mc['client_cpu']}  ")
    L.append(f"Versions: {meta['versions']['ringlb']} ({meta['versions']['git']}), "
             f"{meta['versions']['haproxy']}, {meta['versions']['nginx']}, "
             f"{meta['versions']['h2load']}  ")
    if targets:
        L.append(f"Medians of {p['reps']} repetition(s). Throughput: {p['tput_calls']:,} calls "
                 f"over {p['conns']} connections x {p['streams']} streams. Latency: "
                 f"{p['rate']:,} calls/s for {p['rate_secs']:g} s over {RATE_CONNS} connections. "
                 f"Hold: {p['hold_streams']:,} streams against backends that answer after "
                 f"{p['hold_delay_ms']} ms. Syscalls: {meta['syscall_method']}.")
    if targets:
        L += table_lines(targets, med_, ratios, floors, p["hold_streams"], p["rate"])
    if fargate is not None:
        L += fargate_lines(p, fargate, med_.get("direct", {}).get("rate_p99_us"))
    if meta["notes"]:
        L.append("")
        L.append("Notes:")
        L.append("")
        for n in meta["notes"]:
            L.append(f"- {n}")
    return "\n".join(L) + "\n"


def table_lines(targets: list[str], med_: dict, ratios: dict, floors: list,
                hold_streams: int, rate: int) -> list[str]:
    L = [""]
    L.append(f"| target | calls/s | proxy CPU us/call | proxy CPU % at {rate:,}/s | p50 us "
             "| p99 us | p99.9 us | added p50 us "
             f"| added p99 us | added p99.9 us | idle RSS MiB | +RSS {hold_streams:,} streams MiB "
             "| syscalls/call |")
    L.append("|---|" + "---:|" * 12)
    for t in targets:
        m = med_[t]
        err = "" if m["reps_ok"] == m["reps"] else f" ({m['reps'] - m['reps_ok']} rep(s) failed)"
        rss = None if m["rss_idle_kb"] is None else m["rss_idle_kb"] / KIB_PER_MIB
        extra = None if m["rss_extra_kb"] is None else m["rss_extra_kb"] / KIB_PER_MIB
        flag = "" if m["rate_ok"] else " (rate missed)"
        hold = ("" if m["hold_ok"] in (None, True)
                else f" (only {fmt(m['hold_max_open'], 0)} open at once)")
        L.append(f"| {t}{err} | {fmt(m['calls_per_s'], 0)} | {fmt(m['cpu_us_per_call'], 2)} "
                 f"| {fmt(m['cpu_pct_at_rate'], 0)} "
                 f"| {fmt(m['rate_p50_us'], 0)}{flag} | {fmt(m['rate_p99_us'], 0)} "
                 f"| {fmt(m['rate_p999_us'], 0)} | {fmt(m['added_p50_us'], 0)} "
                 f"| {fmt(m['added_p99_us'], 0)} | {fmt(m['added_p999_us'], 0)} | {fmt(rss, 2)} "
                 f"| {fmt(extra, 1)}{hold} | {fmt(m['syscalls_per_call'], 2)} |")
    L.append("")
    L.append("Ratios (target / reference; CPU and added p99 lower is better, calls/s higher):")
    L.append("")
    L.append("| target | CPU/call vs haproxy-h2 | added p99 vs haproxy-h2 | calls/s vs haproxy-h2 "
             "| CPU/call vs ringlb-io_uring | CPU/call vs ringlb-epoll |")
    L.append("|---|---:|---:|---:|---:|---:|")
    for t in targets:
        if t == "direct":
            continue
        r = ratios[t]
        L.append(f"| {t} | {fmt(r.get('cpu_vs_haproxy-h2'), 2)} "
                 f"| {fmt(r.get('added_p99_vs_haproxy-h2'), 2)} "
                 f"| {fmt(r.get('calls_per_s_vs_haproxy-h2'), 2)} "
                 f"| {fmt(r.get('cpu_vs_ringlb-io_uring'), 2)} "
                 f"| {fmt(r.get('cpu_vs_ringlb-epoll'), 2)} |")
    L.append("")
    L.append("Floors:")
    L.append("")
    L.append("| floor | target | measured | result |")
    L.append("|---|---|---|---|")
    for f in floors:
        L.append(f"| {f['floor']} | {f['target']} | {f['shown']} | {f['result']} |")
    return L


def fargate_lines(p: dict, fargate: dict, direct_p99: float | None) -> list[str]:
    L = []
    L.append("")
    L.append("Fargate-shaped run (ringlb alone, 0.25 CPU, 512 MB, io_backend epoll):")
    L.append("")
    if fargate.get("limit_mode"):
        L.append(f"- limit: {fargate['limit_mode']}")
    for r in fargate.get("limit_reasons", []):
        L.append(f"- not used: {r}")
    if fargate.get("ready_line"):
        L.append(f"- ringlb: `{fargate['ready_line']}`, idle RSS "
                 f"{fmt(fargate.get('rss_idle_kb', 0) / KIB_PER_MIB, 2)} MiB, cgroup memory "
                 f"peak {fmt((fargate.get('mem_peak_bytes') or 0) / 2**20, 1)} MiB (pages "
                 f"charged to the cgroup; shared libraries already cached are charged elsewhere)")
    if "error" in fargate:
        L.append(f"- ERROR: {fargate['error']}")
    a = fargate.get("at_200")
    if a:
        thr = a["nr_throttled_delta"]
        L.append(f"- {p['fg_idle_rate']} calls/s for {p['fg_idle_secs']:g} s: CPU "
                 f"{fmt(a['cpu_pct_of_quota'], 1)}% of the quota, nr_throttled delta {thr} "
                 f"({'PASS' if thr == 0 else 'FAIL'}: must be 0), p99 "
                 f"{fmt(a.get('p99_us', math.nan) / 1000, 2)} ms, "
                 f"{fmt(a.get('cpu_us_per_call'), 0)} us of CPU per call")
        peer = fargate.get("peer_at_200") or {}
        if "error" in peer:
            L.append(f"- peer {peer.get('target')} in the same limits: ERROR {peer['error']}")
        elif peer:
            ratio = (a["cpu_pct_of_quota"] / peer["cpu_pct_of_quota"]
                     if peer.get("cpu_pct_of_quota") else math.nan)
            L.append(f"- for scale, {peer['target']} in the same limits at the same rate: CPU "
                     f"{fmt(peer['cpu_pct_of_quota'], 1)}% of the quota "
                     f"({fmt(peer.get('cpu_us_per_call'), 0)} us per call), nr_throttled delta "
                     f"{peer.get('nr_throttled_delta')}; ringlb / {peer['target']} = "
                     f"{fmt(ratio, 2)}x. At this rate each call wakes the proxy from sleep, so "
                     f"both pay the machine's wake-up cost per call")
    if fargate.get("steps"):
        best = fargate.get("max_rate_p99_under_5ms")
        more = " (every step passed; the ceiling is higher)" if fargate.get(
            "all_steps_passed") else ""
        failed = [f"{x['rate']:,}" for x in fargate["steps"] if not x["pass"]]
        got = f"{fmt(best, 0)} calls/s" if best else "none of the steps"
        if best and failed:
            got += f" (steps that missed: {', '.join(failed)} calls/s)"
        L.append(f"- highest rate with p99 < {FARGATE_P99_MS:g} ms: {got}{more}")
        if direct_p99 is not None:
            L.append(f"- for scale, direct calls (no proxy, no limit) had p99 "
                     f"{direct_p99 / 1000:.2f} ms at 5,000 calls/s in this run")
        L.append("")
        L.append("| offered calls/s | achieved | p50 ms | p99 ms | p99.9 ms | CPU % of quota "
                 "| nr_throttled delta | p99 < 5 ms |")
        L.append("|---:|---:|---:|---:|---:|---:|---:|---|")
        for s in fargate["steps"]:
            L.append(f"| {s['rate']:,} | {fmt(s.get('achieved_rate'), 0)} "
                     f"| {fmt(s.get('p50_us', math.nan) / 1000, 2)} "
                     f"| {fmt(s.get('p99_us', math.nan) / 1000, 2)} "
                     f"| {fmt(s.get('p999_us', math.nan) / 1000, 2)} "
                     f"| {fmt(s['cpu_pct_of_quota'], 0)} | {s['nr_throttled_delta']} "
                     f"| {'PASS' if s['pass'] else 'FAIL'} |")
    if fargate.get("container") is not None:
        L += container_lines(p, fargate, fargate["container"])
    return L


def _mib(v: float | None, div: float = 2**20) -> str:
    return "n/a" if v is None else f"{v / div:.1f}"


def container_lines(p: dict, bare: dict, c: dict) -> list[str]:
    L = ["", "Container variant (the packaging/Dockerfile image under podman, 0.25 CPU, 512 MB, "
         f"a seccomp profile denying io_uring, access log {c.get('access_log', 'off')}):", ""]
    if "unavailable" in c:
        L.append(f"- not run: {c['unavailable']}")
        return L
    if c.get("image"):
        built = f", built in {c['build_s']:g} s" if "build_s" in c else ""
        L.append(f"- image {c['image']}: {c['image_bytes'] / 1e6:.1f} MB{built}; "
                 f"`podman run {c.get('podman_args', '')}`")
    if c.get("ready_line"):
        L.append(f"- ringlb: `{c['io_line']}`; `{c['ready_line']}`; {c.get('cgroup')}, "
                 f"quota {c.get('quota')}")
    if "error" in c:
        L.append(f"- ERROR: {c['error']}")
    a, b = c.get("at_200"), bare.get("at_200") or {}
    if a:
        def both(key: str, scale: float = 1.0, digits: int = 1) -> str:
            def one(d: dict) -> str:
                v = d.get(key)
                return "n/a" if v is None else fmt(v / scale, digits)
            return f"{one(b)} | {one(a)}"
        L += ["", f"| at {p['fg_idle_rate']} calls/s for {p['fg_idle_secs']:g} s "
              "| bare process in a cgroup | container |", "|---|---:|---:|",
              f"| CPU us per call | {both('cpu_us_per_call', 1, 0)} |",
              f"| CPU % of the quota | {both('cpu_pct_of_quota')} |",
              f"| nr_throttled delta | {both('nr_throttled_delta', 1, 0)} |",
              f"| p50 ms | {both('p50_us', 1000, 2)} |",
              f"| p99 ms | {both('p99_us', 1000, 2)} |",
              f"| RSS MiB, idle | {_mib(bare.get('rss_idle_kb'), 1024)} "
              f"| {_mib(c.get('rss_idle_kb'), 1024)} |",
              f"| RSS MiB, after the sweep | {_mib(bare.get('rss_end_kb'), 1024)} "
              f"| {_mib(c.get('rss_end_kb'), 1024)} |",
              f"| CPU % of the quota with no calls (3 s, before the warm-up) | n/a "
              f"| {fmt(c.get('idle_cpu_pct_of_quota'), 2)} |",
              f"| cgroup memory MiB: idle / peak | n/a / {_mib(bare.get('mem_peak_bytes'))} "
              f"| {_mib(c.get('mem_idle_bytes'))} / {_mib(c.get('mem_peak_bytes'))} |", ""]
    if c.get("steps"):
        carried, best = c.get("max_rate_all_below_passing"), c.get("max_rate_passing")
        n = len(c.get("sweeps", [])) or 1
        per = ", ".join(fmt(x, 0) if x else "none" for x in c.get("carried_per_sweep", []))
        L.append(f"- **one 0.25 vCPU container carries {fmt(carried, 0) if carried else 'none'} "
                 f"calls/s**: the highest step that passed, with every step below it passing "
                 f"(p99 < {c['p99_limit_ms']:g} ms, >= 95% of the offered rate, every call "
                 f"answered, <= {c['max_throttled_share'] * 100:g}% of CFS periods throttled)"
                 + (f" in a majority of {n} sweeps; each sweep alone: {per}" if n > 1 else "")
                 + f"; highest passing step {fmt(best, 0) if best else 'none'} calls/s")
        L.append("- each step: the same load straight at one backend first (direct p99: this "
                 "machine's floor at that rate), then up to 3 tries of the container (one stall of "
                 "a shared VM can fail a try; throttling fails them all); the passing try, or the "
                 "last, counts" + (f"; figures are medians over the {n} sweeps, throttled "
                                   "periods summed" if n > 1 else "")
                 + ". Steal: hypervisor time taken from this VM during the step (all CPUs)")
        L += ["", "| offered calls/s | achieved | p50 ms | p99 ms | p99.9 ms | direct p99 ms "
              "| CPU % of quota | CPU us/call | throttled periods | steal ms | memory MiB "
              "| passed | pass |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for s in c["steps"]:
            thr = (f"{s['nr_throttled_delta']}/{s['nr_periods_delta']}"
                   if s.get("nr_periods_delta") is not None else "n/a")
            L.append(f"| {s['rate']:,} | {fmt(s.get('achieved_rate'), 0)} "
                     f"| {fmt((s.get('p50_us') or math.nan) / 1000, 2)} "
                     f"| {fmt((s.get('p99_us') or math.nan) / 1000, 2)} "
                     f"| {fmt((s.get('p999_us') or math.nan) / 1000, 2)} "
                     f"| {fmt((s.get('direct_p99_us') or math.nan) / 1000, 2)} "
                     f"| {fmt(s['cpu_pct_of_quota'], 0)} | {fmt(s['cpu_us_per_call'], 1)} "
                     f"| {thr} | {fmt(s.get('steal_ms'), 0)} "
                     f"| {_mib(s.get('mem_current_bytes'))} "
                     f"| {s.get('passed', int(s['pass']))}/{s.get('runs', 1)} "
                     f"| {'PASS' if s['pass'] else 'FAIL'} |")
    return L


def plot(out_dir: Path, workdir: Path, targets: list[str], med_: dict, title: str) -> str | None:
    if not shutil.which("gnuplot"):
        return "gnuplot not installed: no plot"
    dat = workdir / "plot.dat"
    rows = []
    for t in targets:
        if t == "direct":
            continue
        m = med_[t]
        c = m["cpu_us_per_call"]
        a = m["added_p99_us"]
        cs = "?" if c is None else f"{c:.3f}"
        as_ = "?" if a is None else f"{a:.1f}"
        rows.append(f'"{t}" {cs} {as_}')
    dat.write_text("\n".join(rows) + "\n")
    png = out_dir / "latest.png"
    script = f"""
set datafile missing "?"
set terminal pngcairo size 1200,520 font ",10" noenhanced
set output "{png}"
set multiplot layout 1,2 title "{title}"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.75 border -1
set boxwidth 0.8
set xtics rotate by -25 nomirror
set grid ytics
set yrange [0:*]
set title "proxy CPU per call (lower is better)"
set ylabel "microseconds of CPU per call"
plot "{dat}" using 2:xtic(1) notitle linecolor rgb "#3b6ea8", \\
     "" using 0:2:(sprintf("%.1f", $2)) with labels offset 0,0.8 notitle
set yrange [*<0:*]
set title "added p99 latency at 5,000 calls/s (lower is better)"
set ylabel "microseconds over direct"
plot "{dat}" using 3:xtic(1) notitle linecolor rgb "#c0504d", \\
     "" using 0:3:(sprintf("%.0f", $3)) with labels offset 0,0.8 notitle
unset multiplot
"""
    r = subprocess.run(["gnuplot"], input=script, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        return f"gnuplot failed: {r.stderr.strip()[-300:]}"
    return None


def machine(env: Env) -> dict:
    model = ""
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        m = re.search(r"^Model name:\s*(.+)$", lscpu, re.M)
        model = m.group(1).strip() if m else ""
    except (OSError, subprocess.TimeoutExpired):
        pass
    return {"nproc": os.cpu_count(), "usable_cpus": sorted(os.sched_getaffinity(0)),
            "cpu_model": model, "kernel": os.uname().release,
            "proxy_cpu": env.proxy_cpu, "client_cpu": env.client_cpu}


def versions(env: Env) -> dict:
    def run(cmd):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return (r.stdout + r.stderr).strip().splitlines()[0]
        except (OSError, subprocess.TimeoutExpired, IndexError):
            return "n/a"
    git = run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    return {"ringlb": run([str(env.bin), "--version"]), "git": f"git {git}",
            "haproxy": re.sub(r" - https?://\S+", "", run(["haproxy", "-v"])),
            "nginx": run(["nginx", "-v"]).replace("nginx version: ", ""),
            "h2load": run(["h2load", "--version"])}
