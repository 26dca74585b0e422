#!/usr/bin/python3
"""Side-by-side proxy benchmark: Turnpike vs nginx vs HAProxy in front of one shared upstream.

Driven by bench/run.sh (which installs peers and builds the binaries); stdlib only.
Starts one turnpike-echo upstream and the three proxies on free loopback ports, checks that each
answers 200, then runs wrk against each proxy in interleaved rounds and measures requests/s,
p50/p99 latency and the proxy's own CPU time per request (utime+stime of all its processes from
/proc/PID/stat over the measured window). Writes a Markdown report with medians, ratios and the
raw per-round numbers. Every process it starts is stopped by PID at the end; the PIDs are also
written to $WORKDIR/pids so run.sh's trap can stop them if this process is killed outright.
"""

import datetime
import http.client
import json
import os
import platform
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CLK_TCK = os.sysconf("SC_CLK_TCK")
PROXIES = ("turnpike", "nginx", "haproxy")


def env_int(name, default):
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ----------------------------------------------------------------------------------------------
# Settings


class Settings:
    def __init__(self, argv):
        self.quick = "--quick" in argv
        self.rounds = env_int("ROUNDS", 1 if self.quick else 5)
        self.duration = env_int("DURATION", 3 if self.quick else 10)
        self.warmup = env_int("WARMUP", 1 if self.quick else 2)
        self.connections = env_int("CONNECTIONS", 64)
        self.threads = env_int("THREADS", 2)
        self.echo_threads = env_int("ECHO_THREADS", 1)
        self.path = os.environ.get("BENCH_PATH", "/")
        self.proxies = [p for p in os.environ.get("PROXIES", " ".join(PROXIES)).split() if p in PROXIES]
        self.turnpike_bin = os.environ["TURNPIKE_BIN"]
        self.echo_bin = os.environ["ECHO_BIN"]
        self.build_dir = os.environ.get("BUILD_DIR", "")
        self.workdir = os.environ["WORKDIR"]
        self.out = os.environ["OUT"]
        self.turnpike_build_error = os.environ.get("TURNPIKE_BUILD_ERROR", "")
        self.echo_cpus = os.environ.get("ECHO_CPUS", "")  # optional taskset CPU list for the upstream
        self.pause = 1.0  # seconds between runs, lets TIME_WAIT and CPU settle a little
        per_run = self.duration + self.pause + 2
        self.budget = (len(self.proxies) * (self.rounds * per_run + self.warmup + 30)) * 2 + 120


# ----------------------------------------------------------------------------------------------
# Processes


class Procs:
    """Every process we start, stopped by PID (and its descendants) in stop_all()."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.started = []  # (name, Popen)

    def start(self, name, cmd, logfile):
        out = open(logfile, "wb")
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        out.close()
        self.started.append((name, proc))
        with open(os.path.join(self.workdir, "pids"), "a") as f:
            f.write(f"{proc.pid}\n")
        log(f"started {name} pid {proc.pid}: {' '.join(cmd)}")
        return proc

    def stop(self, name, proc, timeout=10.0):
        if proc.poll() is not None:
            return
        family = [proc.pid] + descendants(proc.pid)
        try:
            os.kill(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log(f"{name} pid {proc.pid} did not stop on SIGTERM within {timeout:.0f}s; SIGKILL")
            proc.kill()
            proc.wait()
        for pid in family[1:]:  # e.g. nginx workers, should already be gone with their master
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def stop_all(self):
        for name, proc in reversed(self.started):
            self.stop(name, proc)
        self.started = []


def read_stat(pid):
    """(utime+stime, cutime+cstime) in seconds, and ppid, from /proc/PID/stat; None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    rest = data.rsplit(")", 1)[1].split()
    # rest[0] is field 3 (state): ppid=4, utime=14, stime=15, cutime=16, cstime=17
    ppid = int(rest[1])
    own = (int(rest[11]) + int(rest[12])) / CLK_TCK
    children = (int(rest[13]) + int(rest[14])) / CLK_TCK
    return own, children, ppid


def read_schedstat_ns(pid):
    """Nanoseconds on CPU summed over the process's threads (/proc/PID/task/*/schedstat)."""
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
                pass
    except (FileNotFoundError, ProcessLookupError):
        return 0
    return total


def descendants(root):
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        st = read_stat(int(entry))
        if st:
            children.setdefault(st[2], []).append(int(entry))
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def cpu_sample(root):
    """{pid: (own_cpu_s, schedstat_ns)} for root and descendants, plus root's reaped-children time."""
    sample = {}
    reaped = 0.0
    for pid in [root] + descendants(root):
        st = read_stat(pid)
        if st is None:
            continue
        sample[pid] = (st[0], read_schedstat_ns(pid))
        if pid == root:
            reaped = st[1]
    return sample, reaped


def cpu_delta(before, after):
    (b, b_reaped), (a, a_reaped) = before, after
    stat = a_reaped - b_reaped
    sched_ns = 0
    for pid, (own, ns) in a.items():
        b_own, b_ns = b.get(pid, (0.0, 0))
        stat += own - b_own
        sched_ns += ns - b_ns
    return stat, sched_ns / 1e9


def rss_kib(root):
    total = 0
    for pid in [root] + descendants(root):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total


def machine_busy_s():
    """Seconds of CPU time the whole machine spent busy (all CPUs), from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    busy = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy / CLK_TCK


def free_ports(n):
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def http_get(port, path, timeout=2.0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": f"127.0.0.1:{port}"})
        resp = conn.getresponse()
        body = resp.read()
        return resp.status, dict(resp.getheaders()), body
    finally:
        conn.close()


def wait_http_ok(port, path, proc, timeout):
    """Poll until GET path answers 200; returns (ok, detail)."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False, f"exited with status {proc.returncode} before answering ({last})"
        try:
            status, headers, body = http_get(port, path)
            if status == 200:
                return True, (headers, body)
            last = f"HTTP {status}: {body[:200]!r}"
        except (OSError, http.client.HTTPException) as e:
            last = f"{type(e).__name__}: {e}"
        time.sleep(0.1)
    return False, f"no 200 within {timeout:.0f}s (last: {last})"


def wait_for_line(logfile, pattern, proc, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(logfile, errors="replace") as f:
                for line in f:
                    m = re.search(pattern, line)
                    if m:
                        return m
        except FileNotFoundError:
            pass
        if proc.poll() is not None:
            return None
        time.sleep(0.05)
    return None


def tail(path, n=15):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:]).rstrip()
    except FileNotFoundError:
        return "(no log)"


def render(template, **values):
    with open(os.path.join(HERE, template)) as f:
        text = f.read()
    for k, v in values.items():
        text = text.replace(f"@{k}@", str(v))
    left = re.findall(r"@[A-Z_]+@", text)
    if left:
        raise RuntimeError(f"{template}: unfilled placeholders {left}")
    return text


def run_cmd(cmd, timeout=10):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        return (r.stdout + r.stderr).strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"({e})"


# ----------------------------------------------------------------------------------------------
# wrk

UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def parse_latency_ms(text):
    m = re.match(r"([\d.]+)(us|ms|s|m|h)$", text)
    return float(m.group(1)) * UNITS[m.group(2)] if m else None


def parse_wrk(out):
    res = {"requests": None, "rps": None, "p50_ms": None, "p99_ms": None, "non2xx": 0,
           "socket_errors": 0}
    m = re.search(r"^\s*(\d+) requests in ([\d.]+\w+)", out, re.M)
    if m:
        res["requests"] = int(m.group(1))
    m = re.search(r"^Requests/sec:\s*([\d.]+)", out, re.M)
    if m:
        res["rps"] = float(m.group(1))
    for pct, key in (("50", "p50_ms"), ("99", "p99_ms")):
        m = re.search(rf"^\s*{pct}(?:\.000)?%\s+(\S+)", out, re.M)
        if m:
            res[key] = parse_latency_ms(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    if m:
        res["non2xx"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        res["socket_errors"] = sum(int(x) for x in m.groups())
    return res


def run_wrk(s, port, duration, proxy_proc, echo_proc):
    url = f"http://127.0.0.1:{port}{s.path}"
    cmd = ["wrk", "-t", str(s.threads), "-c", str(s.connections), "-d", f"{duration}s", "--latency",
           "--timeout", "5s", url]
    before = cpu_sample(proxy_proc.pid)
    echo_before = cpu_sample(echo_proc.pid)
    busy_before = machine_busy_s()
    ru_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    wrk = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = wrk.communicate(timeout=duration + 20)
    except subprocess.TimeoutExpired:
        wrk.kill()
        out, _ = wrk.communicate()
        out += "\n(wrk killed: did not finish in time)"
    except BaseException:
        wrk.kill()
        wrk.wait()
        raise
    wall = time.monotonic() - t0
    after = cpu_sample(proxy_proc.pid)
    echo_after = cpu_sample(echo_proc.pid)
    busy = machine_busy_s() - busy_before
    ru_after = resource.getrusage(resource.RUSAGE_CHILDREN)  # communicate() reaped wrk
    wrk_cpu = (ru_after.ru_utime + ru_after.ru_stime) - (ru_before.ru_utime + ru_before.ru_stime)
    res = parse_wrk(out)
    res["wall_s"] = wall
    res["cpu_s"], res["cpu_sched_s"] = cpu_delta(before, after)
    res["echo_cpu_s"], _ = cpu_delta(echo_before, echo_after)
    res["wrk_cpu_s"] = wrk_cpu
    # CPU the rest of the machine used meanwhile (other users of a shared box), in CPUs.
    res["foreign_cpus"] = max(0.0, busy - res["cpu_s"] - res["echo_cpu_s"] - wrk_cpu) / wall if wall else None
    res["alive"] = proxy_proc.poll() is None
    res["wrk_exit"] = wrk.returncode
    res["raw"] = out
    if res["requests"]:
        res["cpu_us_per_req"] = res["cpu_s"] / res["requests"] * 1e6
        res["cpu_sched_us_per_req"] = res["cpu_sched_s"] / res["requests"] * 1e6
        res["echo_cpu_us_per_req"] = res["echo_cpu_s"] / res["requests"] * 1e6
    ok = (res["requests"] and res["rps"] is not None and res["p99_ms"] is not None and res["alive"]
          and res["non2xx"] == 0 and wrk.returncode == 0)
    res["ok"] = bool(ok)
    return res


# ----------------------------------------------------------------------------------------------
# Report


def machine_info():
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except FileNotFoundError:
        pass
    mem = ""
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
            mem = f"{kb / 1024 / 1024:.1f} GiB"
    except (FileNotFoundError, ValueError):
        pass
    try:
        with open("/etc/debian_version") as f:
            debian = f.read().strip()
    except FileNotFoundError:
        debian = "?"
    return {
        "nproc": run_cmd(["nproc"]),
        "cpu": model,
        "kernel": platform.release(),
        "os": f"Debian {debian}",
        "memory": mem,
        "loadavg_at_start": open("/proc/loadavg").read().split()[:3],
    }


def versions(s):
    v = {}
    v["turnpike"] = run_cmd([s.turnpike_bin, "--version"]) if os.path.exists(s.turnpike_bin) else "(not built)"
    v["nginx"] = run_cmd(["nginx", "-v"])
    hv = run_cmd(["haproxy", "-v"])
    v["haproxy"] = hv.splitlines()[0] if hv else "?"
    v["wrk"] = run_cmd(["wrk", "-v"]).splitlines()[0] if run_cmd(["wrk", "-v"]) else "?"
    compiler, build_type = "?", "?"
    cache = os.path.join(s.build_dir, "CMakeCache.txt")
    if os.path.exists(cache):
        with open(cache) as f:
            for line in f:
                if line.startswith("CMAKE_CXX_COMPILER:"):
                    compiler = run_cmd([line.split("=", 1)[1].strip(), "--version"]).splitlines()[0]
                elif line.startswith("CMAKE_BUILD_TYPE:"):
                    build_type = line.split("=", 1)[1].strip()
                elif line.startswith("CMAKE_CXX_FLAGS_RELWITHDEBINFO:") and build_type == "RelWithDebInfo":
                    build_type += f" ({line.split('=', 1)[1].strip()})"
    v["compiler"] = compiler
    v["build"] = build_type
    commit = run_cmd(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"])
    dirty = run_cmd(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"])
    v["git"] = commit + (" (with uncommitted changes)" if dirty and not dirty.startswith("(") else "")
    return v


def med(rounds, key):
    vals = [r[key] for r in rounds if r.get("ok") and r.get(key) is not None]
    return statistics.median(vals) if vals else None


def fmt(x, digits=1):
    if x is None:
        return "—"
    return f"{x:,.{digits}f}"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


# bench/reload_bench.py writes its results as one block of the report, between these exact lines;
# write_report keeps that block when it rewrites the file.
RELOAD_BEGIN = "<!-- reload:begin -->"
RELOAD_END = "<!-- reload:end -->"


# bench/tls_bench.py does the same with its TLS section.
TLS_BEGIN = "<!-- tls:begin -->"
TLS_END = "<!-- tls:end -->"
# bench/h2_bench.py does the same with its HTTP/2 section.
H2_BEGIN = "<!-- h2:begin -->"
H2_END = "<!-- h2:end -->"
# bench/filters_bench.py: the filter chain's cost.
FILTERS_BEGIN = "<!-- filters:begin -->"
FILTERS_END = "<!-- filters:end -->"
KEPT_SECTIONS = ((RELOAD_BEGIN, RELOAD_END), (TLS_BEGIN, TLS_END), (H2_BEGIN, H2_END),
                 (FILTERS_BEGIN, FILTERS_END))


def marked_section(text, begin, end):
    """(line index, the begin .. end block of a report, marker lines included), or None."""
    lines = text.splitlines()
    stripped = [line.rstrip() for line in lines]
    if begin not in stripped:
        return None
    b = stripped.index(begin)
    if end not in stripped[b:]:
        return None
    e = stripped.index(end, b)
    return b, "\n".join(lines[b:e + 1])


def reload_section(text):
    """The RELOAD_BEGIN .. RELOAD_END block of a report, marker lines included, or None."""
    found = marked_section(text, RELOAD_BEGIN, RELOAD_END)
    return found[1] if found else None


def kept_sections(text):
    """The marked sections (KEPT_SECTIONS) of a report, in the order they appear, or None."""
    found = sorted(s for s in (marked_section(text, b, e) for b, e in KEPT_SECTIONS) if s)
    return "\n\n".join(block for _, block in found) or None


def write_report(s, info, vers, status, results, response_info, out_path, elapsed):
    L = []
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    mode = "quick smoke run (`bench/run.sh --quick`)" if s.quick else "full run (`bench/run.sh`)"
    L.append("# Benchmarks\n")
    L.append(f"Generated by `bench/run.sh` — {mode} — on {now}, in {elapsed:.0f} s. "
             "Regenerate with `bench/run.sh`; do not edit the numbers by hand.\n")
    L.append("## Machine\n")
    L.append("| | |\n|---|---|")
    L.append(f"| CPUs (nproc) | {info['nproc']} |")
    L.append(f"| CPU model | {info['cpu']} |")
    L.append(f"| Kernel | {info['kernel']} |")
    L.append(f"| OS | {info['os']} |")
    L.append(f"| Memory | {info['memory']} |")
    L.append(f"| Load average at start | {' '.join(info['loadavg_at_start'])} |")
    L.append("")
    L.append("## Versions\n")
    L.append("| | |\n|---|---|")
    for k in ("turnpike", "nginx", "haproxy", "wrk", "compiler", "build", "git"):
        L.append(f"| {k} | `{vers.get(k, '?')}` |")
    L.append("")
    L.append("## Method\n")
    L.append(f"- One shared upstream, `turnpike-echo --threads {s.echo_threads}`"
             + (f" pinned to CPUs {s.echo_cpus}" if s.echo_cpus else "")
             + f", and in front of it, side by side, each on its own free loopback port: Turnpike "
             "(`workers: 2`), nginx (`worker_processes 2`, `reuseport`, upstream `keepalive 64`, "
             "`proxy_http_version 1.1`) and HAProxy (`nbthread 2`, server keep-alive, `http-reuse safe`). "
             "Access logs are off on all three. Each proxy adds X-Forwarded-For/-Proto/-Host and an "
             "X-Request-Id (to the upstream request and the response), so they do comparable work. "
             "The exact configs are `bench/turnpike.yaml.in`, `bench/nginx.conf.in`, `bench/haproxy.cfg.in`.")
    L.append(f"- Load: `wrk -t {s.threads} -c {s.connections} -d {s.duration}s --latency` on "
             f"`GET {s.path}` over HTTP/1.1 keep-alive, {s.rounds} round(s); in each round every proxy "
             "is measured once, and the order rotates from round to round (interleaved, so drift in the "
             f"machine hits all proxies alike). A {s.warmup} s warm-up per proxy precedes the rounds and "
             "is not counted. Each proxy must answer 200 before it is measured; a run with non-2xx "
             "answers, wrk errors or a dead proxy is marked failed and left out of the medians.")
    L.append("- **requests/s**, **p50**, **p99**: as wrk reports them (wrk latency is measured from the "
             "client, so it includes wrk's own scheduling delays).")
    L.append("- **proxy CPU µs/request**: utime+stime of *all* the proxy's processes (nginx master and "
             "workers; Turnpike's and HAProxy's threads are one process), read from `/proc/PID/stat` "
             "just before and just after the wrk run, plus time of reaped children, divided by the "
             f"requests wrk completed. `/proc` counts in ticks of 1/{CLK_TCK} s; the raw table also "
             "shows the same figure from `/proc/PID/task/*/schedstat` (nanoseconds) as a cross-check. "
             "It is the steadiest figure on a shared machine, much less sensitive to other load than "
             "requests/s and latency, but not immune to it: CPU caches and SMT siblings are shared, so "
             "under other load every process (the upstream included) spends more CPU per request. The "
             "*upstream CPU µs/req* column, the same work in every run, shows how much.")
    L.append(f"- **Shared cores**: this machine has {info['nproc']} CPUs, and wrk ({s.threads} threads), "
             f"the proxy (2 workers) and the upstream ({s.echo_threads} thread) all share them, unpinned"
             + (" (except the upstream)" if s.echo_cpus else "")
             + ". Requests/s and latency are therefore those of the whole box, in which the upstream and "
             "wrk take a large share; they compare the proxies fairly (same box, same upstream, "
             "interleaved) but are not the proxy's stand-alone capacity. CPU per request is the number "
             "to compare first.")
    L.append("- **other load**: CPU the rest of the machine used during each measured window (busy time from "
             "`/proc/stat` minus proxy, upstream and wrk), in CPUs. Near 0 means the box was ours; a run "
             "with other load well above 0 had to share the cores with something else (its requests/s and "
             "latency suffer; its CPU per request less so).")
    L.append("")

    # Status and response check
    L.append("## Proxies\n")
    L.append("| proxy | status | response checked before measuring |\n|---|---|---|")
    for p in s.proxies:
        L.append(f"| {p} | {status[p]['state']} | {status[p].get('detail', '').replace('|', '/')} |")
    L.append("")

    # Medians
    L.append(f"## Results: medians over {s.rounds} round(s)\n")
    L.append("| proxy | requests/s ↑ | p50 ms ↓ | p99 ms ↓ | proxy CPU µs/req ↓ | upstream CPU µs/req | "
             "proxy RSS MiB | good rounds |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    meds = {}
    for p in s.proxies:
        rs = results.get(p, [])
        m = {k: med(rs, k) for k in ("rps", "p50_ms", "p99_ms", "cpu_us_per_req", "echo_cpu_us_per_req",
                                      "rss_mib")}
        meds[p] = m
        good = sum(1 for r in rs if r.get("ok"))
        if status[p]["state"] != "ok" and not good:
            L.append(f"| {p} | failed | — | — | — | — | — | 0/{s.rounds} |")
            continue
        L.append(f"| {p} | {fmt(m['rps'], 0)} | {fmt(m['p50_ms'], 2)} | {fmt(m['p99_ms'], 2)} | "
                 f"{fmt(m['cpu_us_per_req'], 1)} | {fmt(m['echo_cpu_us_per_req'], 1)} | "
                 f"{fmt(m['rss_mib'], 1)} | {good}/{s.rounds} |")
    foreign = [r["foreign_cpus"] for p in s.proxies for r in results.get(p, [])
               if r.get("ok") and r.get("foreign_cpus") is not None]
    if foreign:
        L.append(f"\nOther load during the measured runs: median {statistics.median(foreign):.2f} CPUs, "
                 f"max {max(foreign):.2f} CPUs (of {info['nproc']}).")
        if statistics.median(foreign) > 0.2:
            L.append("\n**Warning: the machine was busy with other work during this run** (see *other load* in "
                     "the raw table). The comparison is still interleaved and like for like, but absolute "
                     "requests/s and p99 are depressed and noisy; rerun `bench/run.sh` on an idle machine "
                     "for numbers to publish.")
    L.append("")

    # Ratios
    L.append("## Ratios (Turnpike / peer, from the medians)\n")
    L.append("| metric | better when | turnpike / nginx | turnpike / haproxy |\n|---|---|---:|---:|")
    rows = (("requests/s", "rps", "higher (> 1)"), ("p50 latency", "p50_ms", "lower (< 1)"),
            ("p99 latency", "p99_ms", "lower (< 1)"), ("proxy CPU per request", "cpu_us_per_req", "lower (< 1)"))
    tp = meds.get("turnpike", {})
    for label, key, better in rows:
        cells = []
        for peer in ("nginx", "haproxy"):
            r = ratio(tp.get(key), meds.get(peer, {}).get(key)) if peer in meds else None
            cells.append(f"{r:.3f}" if r is not None else "—")
        L.append(f"| {label} | {better} | {cells[0]} | {cells[1]} |")
    L.append("")
    # Paired: the ratio within each round (runs seconds apart), then the median over rounds.
    # Slow drift in the machine's load cancels out of each pair.
    def paired(peer, key):
        by_round = {}
        for p in ("turnpike", peer):
            for r in results.get(p, []):
                if r.get("ok") and r.get(key) is not None:
                    by_round.setdefault(r["round"], {})[p] = r[key]
        vals = [v["turnpike"] / v[peer] for v in by_round.values() if "turnpike" in v and peer in v and v[peer]]
        return (statistics.median(vals), len(vals)) if vals else (None, 0)
    if "turnpike" in results and any(results.get(p) for p in ("nginx", "haproxy")):
        L.append("Paired ratios (Turnpike / peer within each round, then the median over rounds; "
                 "less sensitive to load that drifts between rounds):\n")
        L.append("| metric | better when | turnpike / nginx | turnpike / haproxy |\n|---|---|---:|---:|")
        for label, key, better in rows:
            cells = []
            for peer in ("nginx", "haproxy"):
                v, n = paired(peer, key) if peer in s.proxies else (None, 0)
                cells.append(f"{v:.3f} ({n} rounds)" if v is not None else "—")
            L.append(f"| {label} | {better} | {cells[0]} | {cells[1]} |")
        L.append("")
    # Target check (issue 2): rps >= nginx, CPU/req <= nginx, p99 <= nginx.
    if tp.get("rps") and meds.get("nginx", {}).get("rps"):
        n = meds["nginx"]
        checks = [("requests/s ≥ nginx", tp["rps"] >= n["rps"]),
                  ("CPU per request ≤ nginx", tp["cpu_us_per_req"] is not None and n["cpu_us_per_req"] is not None
                   and tp["cpu_us_per_req"] <= n["cpu_us_per_req"]),
                  ("p99 ≤ nginx", tp["p99_ms"] is not None and n["p99_ms"] is not None and tp["p99_ms"] <= n["p99_ms"])]
        L.append("Target (issue 2, 2 workers, HTTP/1.1 keep-alive, small body): "
                 + "; ".join(f"{name}: {'met' if ok else 'NOT met'}" for name, ok in checks) + ".\n")
    else:
        L.append("Target (issue 2): not evaluated — Turnpike produced no measurement in this run.\n")

    # Raw
    L.append("## Raw per-round numbers\n")
    L.append("| round | order | proxy | requests | requests/s | p50 ms | p99 ms | proxy CPU s | "
             "CPU µs/req (stat) | CPU µs/req (schedstat) | upstream CPU µs/req | wrk CPU s | other load (CPUs) | "
             "non-2xx | socket errors | ok |")
    L.append("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    all_runs = sorted((r for p in s.proxies for r in results.get(p, [])), key=lambda r: (r["round"], r["order"]))
    for r in all_runs:
        if r.get("skipped"):
            L.append(f"| {r['round']} | {r['order']} | {r['proxy']} | — | — | — | — | — | — | — | — | — | — | — | — | "
                     f"skipped: {r['skipped']} |")
            continue
        L.append(f"| {r['round']} | {r['order']} | {r['proxy']} | {r.get('requests') or '—'} | "
                 f"{fmt(r.get('rps'), 0)} | {fmt(r.get('p50_ms'), 2)} | {fmt(r.get('p99_ms'), 2)} | "
                 f"{fmt(r.get('cpu_s'), 2)} | {fmt(r.get('cpu_us_per_req'), 1)} | "
                 f"{fmt(r.get('cpu_sched_us_per_req'), 1)} | {fmt(r.get('echo_cpu_us_per_req'), 1)} | "
                 f"{fmt(r.get('wrk_cpu_s'), 2)} | {fmt(r.get('foreign_cpus'), 2)} | "
                 f"{r.get('non2xx', '—')} | {r.get('socket_errors', '—')} | {'yes' if r.get('ok') else 'NO'} |")
    L.append("")
    notes = [f"- **{p}**: {status[p]['note']}" for p in s.proxies if status[p].get("note")]
    if notes:
        L.append("## Notes\n")
        L.extend(notes)
        L.append("")
    text = "\n".join(L)
    try:  # keep the hot-reload, TLS and HTTP/2 sections (bench/reload_bench.py, tls_bench.py, h2_bench.py)
        with open(out_path) as f:
            kept = kept_sections(f.read())
    except (FileNotFoundError, UnicodeDecodeError):
        kept = None
    if kept:
        text = text.rstrip("\n") + "\n\n" + kept + "\n"
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    with open(out_path, "w") as f:
        f.write(text)
    with open(os.path.join(s.workdir, "results.json"), "w") as f:
        json.dump({"settings": {k: v for k, v in vars(s).items()}, "machine": info, "versions": vers,
                   "status": status, "results": results, "medians": meds, "responses": response_info},
                  f, indent=2, default=str)
    return meds


# ----------------------------------------------------------------------------------------------
# Main


def start_proxies(s, procs, up_addr, status):
    """Start each proxy; returns {name: (proc, port)} for the ones answering 200."""
    running = {}
    ports = free_ports(len(s.proxies) + 1)
    admin_port = ports.pop()
    for name in s.proxies:
        port = ports.pop(0)
        listen = f"127.0.0.1:{port}"
        logfile = os.path.join(s.workdir, f"{name}.log")
        try:
            if name == "turnpike":
                if not os.access(s.turnpike_bin, os.X_OK):
                    status[name] = {"state": "failed", "detail": "binary not built",
                                    "note": "not built: " + (s.turnpike_build_error or s.turnpike_bin)}
                    continue
                cfg = os.path.join(s.workdir, "turnpike.yaml")
                with open(cfg, "w") as f:
                    f.write(render("turnpike.yaml.in", LISTEN=listen, ADMIN=f"127.0.0.1:{admin_port}",
                                   UPSTREAM=up_addr))
                check = subprocess.run([s.turnpike_bin, "check", "-c", cfg], capture_output=True, text=True,
                                       timeout=20)
                if check.returncode != 0:
                    status[name] = {"state": "failed", "detail": "`turnpike check` rejected the bench config",
                                    "note": f"`turnpike check` exited with status {check.returncode}:\n\n```\n"
                                            + ((check.stdout + check.stderr).strip()[-800:] or "(no output)")
                                            + "\n```"}
                    continue
                cmd = [s.turnpike_bin, "-c", cfg]
            elif name == "nginx":
                for d in ("client-body", "proxy-temp", "fastcgi-temp", "uwsgi-temp", "scgi-temp"):
                    os.makedirs(os.path.join(s.workdir, f"nginx-{d}"), exist_ok=True)
                cfg = os.path.join(s.workdir, "nginx.conf")
                with open(cfg, "w") as f:
                    f.write(render("nginx.conf.in", LISTEN=listen, UPSTREAM=up_addr, WORKDIR=s.workdir))
                cmd = ["nginx", "-c", cfg, "-p", s.workdir, "-e", os.path.join(s.workdir, "nginx-error.log")]
            else:
                cfg = os.path.join(s.workdir, "haproxy.cfg")
                with open(cfg, "w") as f:
                    f.write(render("haproxy.cfg.in", LISTEN=listen, UPSTREAM=up_addr, WORKDIR=s.workdir))
                cmd = ["haproxy", "-db", "-f", cfg]
            if not shutil_which(cmd[0]) and not os.path.exists(cmd[0]):
                status[name] = {"state": "failed", "detail": f"{cmd[0]} not installed"}
                continue
            proc = procs.start(name, cmd, logfile)
        except (OSError, subprocess.SubprocessError, RuntimeError) as e:
            status[name] = {"state": "failed", "detail": f"could not start: {e}"}
            continue
        ok, detail = wait_http_ok(port, s.path, proc, timeout=15)
        if not ok:
            status[name] = {"state": "failed", "detail": detail,
                            "note": f"log tail:\n\n```\n{tail(logfile)}\n```"}
            procs.stop(name, proc)
            continue
        headers, body = detail
        has_rid = any(k.lower() == "x-request-id" for k in headers)
        status[name] = {"state": "ok", "detail": f"200, {len(body)} body bytes, "
                                                 f"X-Request-Id {'present' if has_rid else 'absent'}"}
        if name == "turnpike":
            try:
                st, _, _ = http_get(admin_port, "/ready")
                status[name]["detail"] += f", admin /ready {st}"
            except (OSError, http.client.HTTPException) as e:
                status[name]["detail"] += f", admin /ready unreachable ({type(e).__name__})"
        running[name] = (proc, port)
        log(f"{name} ready on {listen}: {status[name]['detail']}")
    return running


def shutil_which(cmd):
    import shutil
    return shutil.which(cmd)


def main():
    s = Settings(sys.argv[1:])
    t_start = time.monotonic()
    procs = Procs(s.workdir)

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    info = machine_info()
    vers = versions(s)
    status = {p: {"state": "not started"} for p in s.proxies}
    results = {p: [] for p in s.proxies}
    response_info = {}
    try:
        # 1. The shared upstream.
        echo_port = free_ports(1)[0]
        up_addr = f"127.0.0.1:{echo_port}"
        echo_log = os.path.join(s.workdir, "echo.log")
        cmd = [s.echo_bin, "--listen", up_addr, "--name", "bench-upstream", "--threads", str(s.echo_threads)]
        if s.echo_cpus:
            cmd = ["taskset", "-c", s.echo_cpus] + cmd
        echo = procs.start("turnpike-echo", cmd, echo_log)
        if not wait_for_line(echo_log, r"listening", echo, timeout=10):
            log(f"upstream did not print 'listening' within 10 s:\n{tail(echo_log)}")
            return 2
        ok, detail = wait_http_ok(echo_port, s.path, echo, timeout=5)
        if not ok:
            log(f"upstream does not answer 200 on {s.path}: {detail}")
            return 2
        log(f"upstream ready on {up_addr}, {len(detail[1])} body bytes for GET {s.path}")

        # 2. The proxies.
        running = start_proxies(s, procs, up_addr, status)
        if not running:
            log("no proxy answered 200; nothing to measure")
        deadline = t_start + s.budget

        # 3. Warm-up (fills pools, faults in pages), not counted.
        for name, (proc, port) in running.items():
            if s.warmup > 0:
                r = run_wrk(s, port, s.warmup, proc, echo)
                log(f"warm-up {name}: {fmt(r.get('rps'), 0)} req/s")

        # 4. Interleaved rounds, order rotated each round.
        names = [p for p in s.proxies if p in running]
        for rnd in range(1, s.rounds + 1):
            k = (rnd - 1) % max(1, len(names))
            order = names[k:] + names[:k]
            for pos, name in enumerate(order, 1):
                proc, port = running[name]
                entry = {"round": rnd, "order": pos, "proxy": name}
                if proc.poll() is not None:
                    entry["skipped"] = f"proxy exited (status {proc.returncode})"
                    status[name]["state"] = "died"
                    status[name]["note"] = (f"exited with status {proc.returncode} during the rounds; log tail:"
                                            f"\n\n```\n{tail(os.path.join(s.workdir, name + '.log'))}\n```")
                elif time.monotonic() + s.duration + 5 > deadline:
                    entry["skipped"] = "time budget exhausted"
                else:
                    time.sleep(s.pause)
                    r = run_wrk(s, port, s.duration, proc, echo)
                    r["rss_mib"] = rss_kib(proc.pid) / 1024
                    entry.update(r)
                    raw = entry.pop("raw")
                    with open(os.path.join(s.workdir, f"wrk-{rnd}-{name}.txt"), "w") as f:
                        f.write(raw)
                    if not r["ok"]:
                        entry["raw_tail"] = raw[-600:]
                    log(f"round {rnd}/{s.rounds} {name}: {fmt(r.get('rps'), 0)} req/s, "
                        f"p50 {fmt(r.get('p50_ms'), 2)} ms, p99 {fmt(r.get('p99_ms'), 2)} ms, "
                        f"CPU {fmt(r.get('cpu_us_per_req'), 1)} µs/req"
                        + ("" if r["ok"] else f"  FAILED (non-2xx {r['non2xx']}, socket errors "
                                              f"{r['socket_errors']}, alive {r['alive']}, wrk exit {r['wrk_exit']})"))
                results[name].append(entry)
        for name in names:
            bad = [e for e in results[name] if not e.get("ok")]
            if bad and status[name]["state"] == "ok":
                status[name]["state"] = f"ok, {len(bad)} failed run(s)"
                first = next((e for e in bad if e.get("raw_tail")), None)
                if first:
                    status[name]["note"] = f"first failed run's wrk output:\n\n```\n{first['raw_tail']}\n```"
    finally:
        procs.stop_all()

    elapsed = time.monotonic() - t_start
    meds = write_report(s, info, vers, status, results, response_info, s.out, elapsed)
    log(f"report written to {s.out} ({elapsed:.0f} s)")
    for p in s.proxies:
        m = meds.get(p, {})
        log(f"  {p:9s} {status[p]['state']:12s} rps {fmt(m.get('rps'), 0):>9s}  p50 {fmt(m.get('p50_ms'), 2):>6s} ms"
            f"  p99 {fmt(m.get('p99_ms'), 2):>6s} ms  CPU {fmt(m.get('cpu_us_per_req'), 1):>6s} µs/req")
    return 0


if __name__ == "__main__":
    sys.exit(main())
