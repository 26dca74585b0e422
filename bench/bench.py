#!/usr/bin/python3
"""Side-by-side proxy benchmark: Turnpike vs nginx vs HAProxy in front of one shared upstream, for
every shape of traffic users send.

Driven by bench/run.sh (which installs peers and tools, builds the binaries and creates the TLS
certificates in $CERTS); stdlib only. Starts one turnpike-echo upstream and the three proxies, each
with three loopback listeners (cleartext HTTP/1.1, h2c with prior knowledge, TLS), checks that each
answers every scenario's request correctly, then measures the scenarios (SCENARIOS below: small
body, 16 KiB and 256 KiB responses, 1 MiB upload, h2c 16x10 streams, HTTPS keep-alive, a new
connection per request) in interleaved rounds: per round every scenario, and within it every proxy
once, in an order rotated from round to round. For each run: requests/s, p50/p99 latency and the
proxy's own CPU time per request (utime+stime of all its processes from /proc/PID/stat over the
measured window). Writes a Markdown report with the worst Turnpike/peer ratio first, one table per
metric (a row per scenario), and the raw per-round numbers; keeps the other scripts' marked
sections of the file. With PROFILE=scenario[,scenario...] it profiles Turnpike instead (see
bench/profile_bench.py) and writes no report.

Every process it starts is stopped by PID at the end; the PIDs are also written to $WORKDIR/pids so
run.sh's trap can stop them if this process is killed outright. The helpers above "Scenarios" are
shared with bench/tls_bench.py, h2_bench.py, reload_bench.py and filters_bench.py.
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
import types

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
        res["socket_errors_detail"] = ", ".join(f"{k} {v}" for k, v in zip(("connect", "read", "write", "timeout"),
                                                                           m.groups()) if v != "0")
    m = re.search(r"^\s*\d+ requests in [\d.]+\w+, ([\d.]+)(B|KB|MB|GB|TB) read", out, re.M)
    if m:  # wrk prints binary units (1 KB = 1024 B)
        res["read_bytes"] = float(m.group(1)) * 1024 ** ("B KB MB GB TB".split().index(m.group(2)))
    m = re.search(r"^\s*Latency\s+\S+\s+\S+\s+(\S+)", out, re.M)
    if m:
        res["max_ms"] = parse_latency_ms(m.group(1))
    return res


def run_wrk(s, port, duration, proxy_proc, echo_proc, path=None, scheme="http", script=None):
    """wrk against 127.0.0.1:port (s.threads, s.connections), CPU of proxy, upstream and wrk over the run.
    path defaults to s.path; script is a wrk Lua script (bench/wrk-*.lua)."""
    url = f"{scheme}://127.0.0.1:{port}{s.path if path is None else path}"
    cmd = ["wrk", "-t", str(s.threads), "-c", str(s.connections), "-d", f"{duration}s", "--latency",
           "--timeout", "5s"] + (["-s", script] if script else []) + [url]
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
# bench/instructions.py: instructions per request of two builds, counted by callgrind.
INSTR_BEGIN = "<!-- instructions:begin -->"
INSTR_END = "<!-- instructions:end -->"
# Written by hand from PROFILE=<scenario> bench/run.sh: where Turnpike's microseconds go.
PROFILE_BEGIN = "<!-- profiles:begin -->"
PROFILE_END = "<!-- profiles:end -->"
# bench/failover_bench.py: an endpoint going bad and coming back.
FAILOVER_BEGIN = "<!-- failover:begin -->"
FAILOVER_END = "<!-- failover:end -->"
KEPT_SECTIONS = ((RELOAD_BEGIN, RELOAD_END), (TLS_BEGIN, TLS_END), (H2_BEGIN, H2_END),
                 (FILTERS_BEGIN, FILTERS_END), (INSTR_BEGIN, INSTR_END),
                 (PROFILE_BEGIN, PROFILE_END), (FAILOVER_BEGIN, FAILOVER_END))


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


def write_marked_section(out_path, begin, end, section):
    """Replaces the begin .. end block of out_path with `section` (marker lines included), or
    appends it; creates the file if needed."""
    try:
        with open(out_path) as f:
            old = f.read()
    except FileNotFoundError:
        old = ""
    found = marked_section(old, begin, end)
    if found:
        lines = old.splitlines()
        b = found[0]
        e = b + len(found[1].splitlines()) - 1
        text = "\n".join(lines[:b] + section.splitlines() + lines[e + 1:]) + "\n"
    elif old.strip():
        text = old.rstrip("\n") + "\n\n" + section + "\n"
    else:
        text = section + "\n"
    os.makedirs(os.path.dirname(out_path), exist_ok=True)
    with open(out_path + ".tmp", "w") as f:
        f.write(text)
    os.rename(out_path + ".tmp", out_path)


def reload_section(text):
    """The RELOAD_BEGIN .. RELOAD_END block of a report, marker lines included, or None."""
    found = marked_section(text, RELOAD_BEGIN, RELOAD_END)
    return found[1] if found else None


def kept_sections(text):
    """The marked sections (KEPT_SECTIONS) of a report, in the order they appear, or None."""
    found = sorted(s for s in (marked_section(text, b, e) for b, e in KEPT_SECTIONS) if s)
    return "\n\n".join(block for _, block in found) or None


class CertFiles:
    """The certificate files bench/certs.sh writes into `self.certs` (the names bench/h2_bench.py's
    configs use); a base of the scripts' Settings."""

    @property
    def ca(self):
        return os.path.join(self.certs, "ca.pem")

    @property
    def cert(self):
        return os.path.join(self.certs, "server.pem")

    @property
    def key(self):
        return os.path.join(self.certs, "server.key")

    @property
    def combined(self):
        return os.path.join(self.certs, "server-combined.pem")


# ----------------------------------------------------------------------------------------------
# Scenarios


class Scenario:
    """One shape of traffic. kind: "wrk" (HTTP/1.1, on the plain or TLS listener) or "h2load" (h2c)."""

    def __init__(self, name, short, label, kind, listener, path=None, script=None, body_bytes=None):
        self.name, self.short, self.label = name, short, label
        self.kind, self.listener, self.path, self.script, self.body_bytes = kind, listener, path, script, body_bytes


UPLOAD_BYTES = 1024 * 1024
UPLOAD_BODY = b"0123456789abcdef" * (UPLOAD_BYTES // 16)  # exactly what bench/wrk-upload.lua sends
SCENARIOS = (
    Scenario("small", "small body", "small body: `GET /` (a JSON answer of about 400 bytes), HTTP/1.1 keep-alive",
             "wrk", "plain"),
    Scenario("16k", "16 KiB response", "16 KiB response body: `GET /bytes/16384`, HTTP/1.1 keep-alive",
             "wrk", "plain", "/bytes/16384", body_bytes=16384),
    Scenario("256k", "256 KiB response", "256 KiB response body: `GET /bytes/262144`, HTTP/1.1 keep-alive",
             "wrk", "plain", "/bytes/262144", body_bytes=262144),
    Scenario("upload", "1 MiB upload", "1 MiB upload: `POST /upload` with a 1,048,576-byte body (the upstream "
             "answers with its SHA-256, a small JSON), HTTP/1.1 keep-alive", "wrk", "plain", "/upload",
             "wrk-upload.lua"),
    Scenario("h2c", "h2c 16×10 streams", "h2c (cleartext HTTP/2 with prior knowledge): `GET /` on 16 connections "
             "× 10 concurrent streams", "h2load", "h2c"),
    Scenario("https", "HTTPS keep-alive", "HTTPS keep-alive: `GET /` over TLS 1.3, HTTP/1.1", "wrk", "tls"),
    Scenario("close", "new connection per request", "a new connection per request: `GET /` with `Connection: "
             "close`, HTTP/1.1 (one TCP connection per request)", "wrk", "plain", None, "wrk-close.lua"),
)
SCENARIO_NAMES = tuple(sc.name for sc in SCENARIOS)
# label, result key, better when, digits
METRICS = (("requests/s", "rate", "higher", 0), ("p50 latency (ms)", "p50_ms", "lower", 2),
           ("p99 latency (ms)", "p99_ms", "lower", 2), ("proxy CPU µs per request", "cpu_us", "lower", 1))
PEERS = ("nginx", "haproxy")
PEER_NAMES = {"nginx": "nginx", "haproxy": "HAProxy", "turnpike": "Turnpike"}


def pick_scenarios(value, what):
    names = [n for n in re.split(r"[\s,]+", value.strip()) if n]
    if not names or names == ["all"]:
        return list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIO_NAMES]
    if unknown:
        raise SystemExit(f"{what}: unknown scenario(s) {' '.join(unknown)}; known: {' '.join(SCENARIO_NAMES)}")
    return [sc for sc in SCENARIOS if sc.name in names]


class Settings(CertFiles):
    def __init__(self, argv):
        self.quick = "--quick" in argv
        self.rounds = env_int("ROUNDS", 1 if self.quick else 3)
        self.duration = max(2, env_int("DURATION", 3 if self.quick else 10))
        self.warmup = env_int("WARMUP", 1 if self.quick else 2)  # per proxy and scenario, not measured
        self.run_warmup = env_int("RUN_WARMUP", 1)  # h2load --warm-up-time of each h2c run
        self.connections = env_int("CONNECTIONS", 64)
        self.threads = env_int("THREADS", 2)
        self.h2_connections = env_int("H2_CONNECTIONS", 16)
        self.h2_streams = env_int("H2_STREAMS", 10)
        self.h2_threads = max(1, min(env_int("H2_THREADS", 2), self.h2_connections))
        self.echo_threads = env_int("ECHO_THREADS", 1)
        self.path = os.environ.get("BENCH_PATH", "/")
        self.proxies = [p for p in os.environ.get("PROXIES", " ".join(PROXIES)).split() if p in PROXIES]
        self.scenarios = pick_scenarios(os.environ.get("SCENARIOS", ""), "SCENARIOS")
        self.profile = (pick_scenarios(os.environ["PROFILE"], "PROFILE") if os.environ.get("PROFILE", "").strip()
                        else [])
        if self.profile:
            self.proxies, self.scenarios = ["turnpike"], self.profile
        self.turnpike_bin = os.environ["TURNPIKE_BIN"]
        self.echo_bin = os.environ["ECHO_BIN"]
        self.build_dir = os.environ.get("BUILD_DIR", "")
        self.workdir = os.environ["WORKDIR"]
        self.out = os.environ["OUT"]
        self.certs = os.environ.get("CERTS", "")
        self.turnpike_build_error = os.environ.get("TURNPIKE_BUILD_ERROR", "")
        self.echo_cpus = os.environ.get("ECHO_CPUS", "")  # optional taskset CPU list for the upstream
        self.pause = 1.0  # seconds before every measured run, lets TIME_WAIT and CPU settle a little
        per_round = sum(self.duration + self.pause + 3 + (self.run_warmup if sc.kind == "h2load" else 0)
                        for sc in self.scenarios)
        self.budget = (len(self.proxies) * (self.rounds * per_round + len(self.scenarios) * (self.warmup + 4) + 40)
                       ) * 2 + 120


    def scenario_path(self, sc):
        return sc.path if sc.path is not None else self.path


def tcp_opens():
    """(ActiveOpens, PassiveOpens) of this network namespace, from /proc/net/snmp."""
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Tcp:")]
    head, vals = rows[0], rows[1]
    return int(vals[head.index("ActiveOpens")]), int(vals[head.index("PassiveOpens")])


# ----------------------------------------------------------------------------------------------
# Proxies: one process each, three listeners (plain HTTP/1.1, h2c, TLS), the configs of bench/h2_bench.py
# (bench/*.in plus an h2c and a TLS listener) with run.sh's plain HTTP/1.1 listener added


def proxy_config(s, name, ports, admin, upstream):
    import h2_bench
    plain, h2c, tls = (f"127.0.0.1:{ports[k]}" for k in ("plain", "h2c", "tls"))
    if name == "turnpike":
        text = h2_bench.turnpike_config(s, h2c, tls, admin, upstream)
        return h2_bench.swap(text, "  - name: h2c\n", f"  - name: bench\n    listen: {plain}\n  - name: h2c\n",
                             "turnpike config")
    if name == "nginx":
        text = h2_bench.nginx_config(s, h2c, tls, upstream)
        return h2_bench.swap(text, f"listen {h2c} http2 ",
                             f"listen {plain} reuseport backlog=4096;\n        listen {h2c} http2 ", "nginx config")
    text = h2_bench.haproxy_config(s, h2c, tls, upstream)
    return h2_bench.swap(text, f"    bind {h2c} proto h2\n", f"    bind {plain}\n    bind {h2c} proto h2\n",
                         "haproxy config")


def start_proxy(s, procs, name, up_addr, status, wrap=None, ready_timeout=15):
    """Start one proxy; returns (proc, ports) once its plain listener answers 200, else None.
    wrap: a command prefix for Turnpike (valgrind, for bench/profile_bench.py)."""
    plain, h2c, tls, admin_port = free_ports(4)
    ports = {"plain": plain, "h2c": h2c, "tls": tls, "admin": admin_port}
    logfile = os.path.join(s.workdir, f"{name}.log")
    try:
        cfg_ext = {"turnpike": "yaml", "nginx": "conf", "haproxy": "cfg"}[name]
        cfg = os.path.join(s.workdir, f"{name}.{cfg_ext}")
        if name == "turnpike" and not os.access(s.turnpike_bin, os.X_OK):
            status[name] = {"state": "failed", "detail": "binary not built",
                            "note": "not built: " + (s.turnpike_build_error or s.turnpike_bin)}
            return None
        if name == "nginx":
            for d in ("client-body", "proxy-temp", "fastcgi-temp", "uwsgi-temp", "scgi-temp"):
                os.makedirs(os.path.join(s.workdir, f"nginx-{d}"), exist_ok=True)
        with open(cfg, "w") as f:
            f.write(proxy_config(s, name, ports, f"127.0.0.1:{admin_port}", up_addr))
        if name == "turnpike":
            check = subprocess.run([s.turnpike_bin, "check", "-c", cfg], capture_output=True, text=True, timeout=20)
            if check.returncode != 0:
                status[name] = {"state": "failed", "detail": "`turnpike check` rejected the bench config",
                                "note": f"`turnpike check` exited with status {check.returncode}:\n\n```\n"
                                        + ((check.stdout + check.stderr).strip()[-800:] or "(no output)") + "\n```"}
                return None
            cmd = (wrap or []) + [s.turnpike_bin, "-c", cfg]
        elif name == "nginx":
            cmd = ["nginx", "-c", cfg, "-p", s.workdir, "-e", os.path.join(s.workdir, "nginx-error.log")]
        else:
            cmd = ["haproxy", "-db", "-f", cfg]
        if not shutil_which(cmd[0]) and not os.path.exists(cmd[0]):
            status[name] = {"state": "failed", "detail": f"{cmd[0]} not installed"}
            return None
        proc = procs.start(name, cmd, logfile)
    except (OSError, subprocess.SubprocessError, RuntimeError) as e:
        status[name] = {"state": "failed", "detail": f"could not start: {e}"}
        return None
    ok, detail = wait_http_ok(plain, s.path, proc, timeout=ready_timeout)
    if not ok:
        status[name] = {"state": "failed", "detail": detail, "note": f"log tail:\n\n```\n{tail(logfile)}\n```"}
        procs.stop(name, proc)
        return None
    headers, body = detail
    has_rid = any(k.lower() == "x-request-id" for k in headers)
    status[name] = {"state": "ok", "detail": f"200 on `GET {s.path}`, {len(body)} body bytes, "
                                             f"X-Request-Id {'present' if has_rid else 'absent'}"}
    if name == "turnpike":
        try:
            st, _, _ = http_get(admin_port, "/ready")
            status[name]["detail"] += f", admin /ready {st}"
        except (OSError, http.client.HTTPException) as e:
            status[name]["detail"] += f", admin /ready unreachable ({type(e).__name__})"
    log(f"{name} ready: plain :{plain}, h2c :{h2c}, TLS :{tls}")
    return proc, ports


# ----------------------------------------------------------------------------------------------
# Probes: one request per scenario, sent as its load generator sends it, and checked


def _request(s, sc, ports, timeout=10.0):
    """(status, headers {lower: value}, body, protocol description) of one HTTP/1.1 request."""
    import ssl
    path = s.scenario_path(sc)
    port = ports["tls" if sc.listener == "tls" else "plain"]
    headers = {"Host": f"127.0.0.1:{port}"}
    method, body = "GET", None
    if sc.name == "upload":
        method, body = "POST", UPLOAD_BODY
        headers["Content-Type"] = "application/octet-stream"
    if sc.listener == "tls":
        ctx = ssl.create_default_context(cafile=s.ca)  # verifies the chain and the IP SAN; offers no ALPN, as wrk
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=ctx)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers)
        proto = "HTTP/1.1"
        if sc.listener == "tls":
            proto += (f", {conn.sock.version()} {conn.sock.cipher()[0]}, "
                      + (f"ALPN {conn.sock.selected_alpn_protocol()}" if conn.sock.selected_alpn_protocol()
                         else "no ALPN"))
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data, proto
    finally:
        conn.close()


def _close_request(s, sc, ports, timeout=5.0):
    """`GET` with `Connection: close` on a raw socket, read to EOF: (status, headers, body, closed)."""
    port = ports["plain"]
    req = (f"GET {s.scenario_path(sc)} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n").encode()
    data, closed = b"", False
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(req)
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    closed = True
                    break
                data += chunk
        except socket.timeout:
            pass
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode(errors="replace").split("\r\n")
    status = int(lines[0].split()[1]) if lines and len(lines[0].split()) > 1 else 0
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, body, closed


def probe(s, sc, ports, proc):
    """{"ok", "status", "bytes", "proto", "note"} for one request as the scenario's load sends it."""
    import h2_bench
    import hashlib
    res = {"ok": False, "status": None, "bytes": None, "proto": None, "note": ""}
    try:
        if sc.kind == "h2load":
            ok, d = h2_bench.wait_h2_ok(f"http://127.0.0.1:{ports['h2c']}{s.scenario_path(sc)}", "h2c", proc, timeout=10)
            if not ok:
                res["note"] = d
                return res
            res.update(ok=True, status=200, bytes=d.get("bytes_data"), proto=d.get("protocol"))
            return res
        if sc.name == "close":
            status, headers, body, closed = _close_request(s, sc, ports)
            res.update(status=status, bytes=len(body), proto="HTTP/1.1")
            problems = []
            if headers.get("connection", "").lower() != "close":
                problems.append(f"answer without `Connection: close` ({headers.get('connection', 'none')})")
            if not closed:
                problems.append("the proxy did not close the connection within 5 s")
            try:
                upstream_conn = json.loads(body).get("headers", {}).get("connection")
                res["note"] = ("the upstream saw `Connection: close`" if upstream_conn == "close"
                               else "upstream connection kept alive")
            except ValueError:
                pass
        else:
            status, headers, body, proto = _request(s, sc, ports)
            res.update(status=status, bytes=len(body), proto=proto)
            problems = []
            if sc.body_bytes is not None and len(body) != sc.body_bytes:
                problems.append(f"{len(body)} body bytes, {sc.body_bytes} expected")
            if sc.name == "upload":
                try:
                    echo = json.loads(body)
                    want = hashlib.sha256(UPLOAD_BODY).hexdigest()
                    if echo.get("body_bytes") != UPLOAD_BYTES or echo.get("body_sha256") != want:
                        problems.append(f"the upstream got {echo.get('body_bytes')} bytes, SHA-256 "
                                        f"{str(echo.get('body_sha256'))[:12]}…, not the 1 MiB sent")
                    else:
                        res["note"] = "the upstream got all 1,048,576 bytes (SHA-256 checked)"
                except ValueError:
                    problems.append("the answer is not the upstream's JSON")
            if sc.listener == "tls" and "TLSv1.3" not in proto:
                problems.append(f"not TLS 1.3: {proto}")
        if status != 200:
            problems.insert(0, f"HTTP {status}")
        if problems:
            res["note"] = "; ".join(problems)
        else:
            res["ok"] = True
    except (OSError, http.client.HTTPException, ValueError) as e:
        res["note"] = f"{type(e).__name__}: {e}"
    return res


# ----------------------------------------------------------------------------------------------
# Load


def run_scenario(s, sc, ports, proxy_proc, echo_proc, duration, tag, warm=None):
    """One run of a scenario's load against one proxy; a dict with the same keys for every kind:
    count, rate, p50_ms, p99_ms, max_ms, cpu_us, cpu_sched_us, echo_cpu_us, client_cpu_us, foreign_cpus,
    non2xx, errors, accepts_per_req, read_per_req, ok, problems, raw."""
    import h2_bench
    opens_before = tcp_opens()
    if sc.kind == "h2load":
        shim = types.SimpleNamespace(workdir=s.workdir, connections=s.h2_connections, streams=s.h2_streams,
                                     threads=s.h2_threads)
        url = f"http://127.0.0.1:{ports['h2c']}{s.scenario_path(sc)}"
        r = h2_bench.run_load(shim, url, "h2c", duration, s.run_warmup if warm is None else warm, proxy_proc,
                              echo_proc, tag)
        r["non2xx"] = sum(r.get(k) or 0 for k in ("s3xx", "s4xx", "s5xx"))
        r["errors"] = sum(r.get(k) or 0 for k in ("failed", "errored", "timeout"))
        r["max_ms"] = r.get("req_max_ms")
        if r.get("count") and r.get("bytes_total") is not None:
            r["read_per_req"] = r["bytes_total"] / r["count"]
    else:
        script = os.path.join(HERE, sc.script) if sc.script else None
        w = run_wrk(s, ports["tls" if sc.listener == "tls" else "plain"], duration, proxy_proc, echo_proc,
                    path=s.scenario_path(sc), scheme="https" if sc.listener == "tls" else "http", script=script)
        n = w.get("requests")
        r = {"count": n, "rate": w.get("rps"), "p50_ms": w.get("p50_ms"), "p99_ms": w.get("p99_ms"),
             "max_ms": w.get("max_ms"), "cpu_s": w.get("cpu_s"), "cpu_us": w.get("cpu_us_per_req"),
             "cpu_sched_us": w.get("cpu_sched_us_per_req"), "echo_cpu_us": w.get("echo_cpu_us_per_req"),
             "client_cpu_us": w["wrk_cpu_s"] / n * 1e6 if n else None, "foreign_cpus": w.get("foreign_cpus"),
             "non2xx": w.get("non2xx", 0), "errors": w.get("socket_errors", 0), "alive": w.get("alive"),
             "read_per_req": w["read_bytes"] / n if n and w.get("read_bytes") is not None else None,
             "echo_cpus": w["echo_cpu_s"] / w["wall_s"] if w.get("wall_s") else None,
             "raw": w.get("raw", "")}
        problems = []
        if not n or w.get("rps") is None or w.get("p99_ms") is None:
            problems.append("no wrk summary")
        if r["non2xx"]:
            problems.append(f"{r['non2xx']} non-2xx answers")
        if r["errors"]:
            problems.append(f"socket errors: {w.get('socket_errors_detail')}")
        if w.get("wrk_exit") != 0:
            problems.append(f"wrk exit {w.get('wrk_exit')}")
        if not w.get("alive"):
            problems.append("proxy died")
        if sc.body_bytes and r["read_per_req"] is not None and r["read_per_req"] < sc.body_bytes * 0.99:
            problems.append(f"{r['read_per_req']:.0f} bytes read per request, the body alone is {sc.body_bytes}")
        r["problems"] = problems
        r["ok"] = not problems
    if r.get("count"):
        passive = tcp_opens()[1] - opens_before[1]
        r["accepts_per_req"] = passive / r["count"]  # accept()s on the machine: client->proxy and proxy->upstream
    return r


# ----------------------------------------------------------------------------------------------
# Report


def paired_ratio(results, peer, sc, key):
    """Turnpike / peer within each round, median over the rounds where both had a good run."""
    by = {}
    for p in ("turnpike", peer):
        for r in results.get(p, []):
            if r["scenario"] == sc and r.get("ok") and r.get(key) is not None:
                by.setdefault(r["round"], {})[p] = r[key]
    vals = [v["turnpike"] / v[peer] for v in by.values() if "turnpike" in v and v.get(peer)]
    return (statistics.median(vals), len(vals)) if vals else (None, 0)


def badness(r, better):
    """How far a Turnpike/peer ratio is on the wrong side of 1 (1 = parity, 2 = twice as bad)."""
    return (1 / r if r else float("inf")) if better == "higher" else r


def write_report(s, info, vers, status, probes, results, elapsed):
    L = []
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    mode = (f"quick smoke run (`bench/run.sh --quick`: {s.rounds} round(s) × {s.duration} s per scenario and proxy — "
            "indicative only)" if s.quick
            else f"full run (`bench/run.sh`: {s.rounds} round(s) × {s.duration} s per scenario and proxy)")
    scen = s.scenarios
    L.append("# Benchmarks\n")
    L.append(f"Generated by `bench/run.sh` — {mode} — on {now}, in {elapsed:.0f} s. Scenarios: "
             + ", ".join(f"`{sc.name}`" for sc in scen) + ". Regenerate with `bench/run.sh`; do not edit the "
             "numbers by hand.\n")

    meds = {}
    for p in s.proxies:
        for sc in scen:
            rs = [r for r in results.get(p, []) if r["scenario"] == sc.name]
            meds.setdefault(p, {})[sc.name] = {k: med(rs, k) for k in (
                "rate", "p50_ms", "p99_ms", "cpu_us", "echo_cpu_us", "client_cpu_us", "accepts_per_req",
                "read_per_req", "max_ms", "echo_cpus")}
    tp = meds.get("turnpike", {})
    peers = [p for p in PEERS if p in s.proxies]

    def r_of(peer, sc, key):
        return ratio(tp.get(sc.name, {}).get(key), meds.get(peer, {}).get(sc.name, {}).get(key))

    # Worst case first
    L.append("## Worst case first\n")
    tp_good = {sc.name: sum(1 for r in results.get("turnpike", []) if r["scenario"] == sc.name and r.get("ok"))
               for sc in scen}
    tp_runs = {sc.name: [r for r in results.get("turnpike", []) if r["scenario"] == sc.name] for sc in scen}
    missing = [sc for sc in scen if "turnpike" in s.proxies and not tp_good[sc.name]]
    partial = [sc for sc in scen if tp_good[sc.name] and tp_good[sc.name] < len(tp_runs[sc.name])]
    if "turnpike" not in s.proxies or not peers:
        L.append("Turnpike and at least one peer must be measured for ratios; this run measured "
                 + ", ".join(s.proxies) + ".\n")
    else:
        if missing:
            L.append("**Turnpike has no good run in: " + ", ".join(f"{sc.short}" for sc in missing)
                     + "** (see *Proxies and probes* and *Notes*); these scenarios are the worst case and are "
                     "not in the ratios below.\n")
        if partial:
            L.append("Turnpike had failed runs (left out of the medians) in: "
                     + ", ".join(f"{sc.short} ({len(tp_runs[sc.name]) - tp_good[sc.name]} of "
                                 f"{len(tp_runs[sc.name])})" for sc in partial) + ".\n")
        worst_all = None
        rows = []
        for label, key, better, _ in METRICS:
            cells = []
            for peer in peers:
                cands = [(r_of(peer, sc, key), sc) for sc in scen if r_of(peer, sc, key) is not None]
                if not cands:
                    cells.append("— | —")
                    continue
                w, wsc = max(cands, key=lambda c: badness(c[0], better))
                cells.append(f"**{w:.3f}** | {wsc.short}")
                b = badness(w, better)
                if worst_all is None or b > worst_all[0]:
                    worst_all = (b, label, peer, w, wsc, better)
            rows.append(f"| {label} | {better} is better | " + " | ".join(cells) + " |")
        if worst_all:
            b, label, peer, w, wsc, better = worst_all
            L.append(f"**Worst ratio over the {len(scen)} scenario(s): {label} in *{wsc.short}*, Turnpike / "
                     f"{PEER_NAMES[peer]} = {w:.3f}**"
                     + (" (no metric of any scenario is worse than parity)" if b <= 1 else "") + ".\n")
        L.append("The worst Turnpike / peer ratio of each metric over the scenarios (from the medians; for "
                 "requests/s below 1 is worse, for latency and CPU above 1 is worse):\n")
        L.append("| metric | | " + " | ".join(f"worst Turnpike / {PEER_NAMES[p]} | in scenario" for p in peers) + " |")
        L.append("|---|---|" + "---:|---|" * len(peers))
        L.extend(rows)
        L.append("")
        if s.quick or s.rounds < 3:
            L.append(f"*{s.rounds} round(s) of {s.duration} s: single runs, noisy; a full run (`bench/run.sh`) "
                     "gives medians over rounds.*\n")

    # Machine, versions
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
    for k in ("turnpike", "nginx", "haproxy", "wrk", "h2load", "openssl", "compiler", "build", "git"):
        L.append(f"| {k} | `{vers.get(k, '?')}` |")
    L.append("")

    # Method
    L.append("## Method\n")
    L.append(f"- **Setup.** One shared upstream, `turnpike-echo --threads {s.echo_threads}`"
             + (f" pinned to CPUs {s.echo_cpus}" if s.echo_cpus else "")
             + ", cleartext HTTP/1.1 keep-alive, and in front of it, one at a time under load, Turnpike "
             "(`workers: 2`), nginx (`worker_processes 2`, `reuseport`, upstream `keepalive 64`, "
             "`proxy_http_version 1.1`) and HAProxy (`nbthread 2`, server keep-alive, `http-reuse safe`). All three "
             "run for the whole benchmark, each one process with three loopback listeners: cleartext HTTP/1.1, "
             "h2c (HTTP/2 with prior knowledge) and TLS. The configs are `bench/turnpike.yaml.in`, "
             "`bench/nginx.conf.in` and `bench/haproxy.cfg.in` with the h2c and TLS listeners of `bench/h2_bench.py` "
             "(the same code builds them) and the cleartext listener added; the certificate (EC P-256, "
             "ECDSA-SHA256) is made by `bench/certs.sh` for the run, as for `bench/tls.sh` and `bench/h2.sh`. "
             "Access logs are off on all three. Each proxy adds X-Forwarded-For/-Proto/-Host and an X-Request-Id "
             "(to the upstream request and the response), so they do comparable work.")
    L.append("- **Bodies stream through all three.** Turnpike streams both ways with back-pressure; HAProxy "
             "streams (no `option http-buffer-request`); nginx is set to stream as well (`proxy_request_buffering "
             "off`: the 1 MiB upload is not spooled to a temp file first; `proxy_max_temp_file_size 0`: a response "
             "larger than its in-memory proxy buffers waits for the client instead of going to disk; "
             "`client_max_body_size 16m`, its default 1m being the upload's size). These are no-ops for small bodies.")
    L.append("- **Scenarios** (HTTP/1.1 ones with `wrk -t {t} -c {c} -d {d}s --latency --timeout 5s`):".format(
        t=s.threads, c=s.connections, d=s.duration))
    for sc in scen:
        if sc.kind == "h2load":
            how = (f"`h2load -D {s.duration} --warm-up-time {s.run_warmup} -c {s.h2_connections} -m {s.h2_streams} "
                   f"-t {s.h2_threads} --log-file F http://…{s.scenario_path(sc)}` (bench/h2_bench.py's `run_load`): "
                   "requests/s of the main phase, p50/p99 from the per-request log, CPU over a window inside the "
                   "main phase")
        elif sc.listener == "tls":
            how = (f"wrk on `https://…{s.scenario_path(sc)}` (connections opened once; wrk offers no ALPN, so "
                   "HTTP/1.1 on all three; TLS 1.3 checked by the probe)")
        elif sc.script:
            how = f"wrk `-s bench/{sc.script}` on `http://…{s.scenario_path(sc)}`"
        else:
            how = f"wrk on `http://…{s.scenario_path(sc)}`"
        L.append(f"  - `{sc.name}` — {sc.label}: {how}.")
    L.append("  For `close`, every answer must carry `Connection: close` and the proxy must close (checked by the "
             "probe); wrk then reconnects for the next request. wrk's latency starts when the request is written, "
             "so for `close` it excludes the TCP connect; requests/s and CPU include it. *TCP accepts/request* in "
             "the raw table (PassiveOpens of `/proc/net/snmp` over the run / requests; machine-wide, so it counts "
             "accepts at the proxy and at the upstream) shows 1 for a new client connection per request, plus 1 "
             "if the proxy also opens a new upstream connection per request.")
    L.append("- **Probe.** Before the rounds, each proxy must answer every scenario's request, sent as its load "
             "sends it, correctly: a 200; `/bytes/N` bodies of exactly N bytes; for the upload the upstream's "
             "reported size and SHA-256 of the body it received must match what was sent; TLS 1.3 on the TLS "
             "listener; `Connection: close` answered and the connection closed; a 200 over h2c. A proxy failing a "
             "probe is not measured in that scenario.")
    L.append(f"- **Rounds.** {s.rounds} round(s); in each round every scenario, and within it every proxy once, in "
             f"an order rotated from round to round (interleaved, so drift in the machine hits all proxies alike); "
             f"{s.pause:.0f} s pause before each run; a {s.warmup} s warm-up per proxy and scenario precedes the rounds "
             "and is not counted. A run with any non-2xx answer, socket error, short answer or a dead proxy is "
             "marked failed and left out of the medians. Medians over the good runs; *Turnpike / peer* ratios are "
             "from the medians, and, with more than one round, in brackets the paired ratio (within each round, "
             "then the median over the rounds).")
    L.append("- **requests/s**, **p50**, **p99**: as wrk reports them (measured from the client, so they include "
             "the client's own scheduling delays), or from h2load's per-request log (nearest rank) for h2c.")
    L.append("- **proxy CPU µs/request**: utime+stime of *all* the proxy's processes (nginx master and workers; "
             "Turnpike's and HAProxy's threads are one process), from `/proc/PID/stat` before and after the run "
             f"(plus reaped children), divided by the requests completed; `/proc` counts in ticks of 1/{CLK_TCK} s, "
             "and the raw table shows the same from `/proc/PID/task/*/schedstat` as a cross-check. It is the "
             "steadiest figure on a shared machine; the *upstream CPU µs/req* column, the same work for every "
             "proxy, shows how much other load inflates it.")
    L.append(f"- **Shared cores.** This machine has {info['nproc']} CPUs, shared, unpinned, by the load generator "
             f"({s.threads} wrk threads or {s.h2_threads} h2load threads), the proxy (2 workers / 2 threads) and the "
             f"upstream ({s.echo_threads} thread). requests/s and latency are those of the whole box; they compare "
             "the proxies fairly (same box, same upstream, interleaved) but are not the proxy's stand-alone "
             "capacity. CPU per request is the number to compare first. *other load*: CPU the rest of the machine "
             "used during each run (`/proc/stat` busy time minus proxy, upstream and client), in CPUs.")
    L.append("- **Where Turnpike's microseconds go**: `PROFILE=<scenario> bench/run.sh` runs the same scenario against "
             "Turnpike alone under `perf record` (or callgrind where perf cannot sample) and writes its top functions, "
             "with µs per request, to `profile-<scenario>.txt` (see `bench/profile_bench.py`).")
    L.append("")

    # Probes
    L.append("## Proxies and probes\n")
    L.append("| proxy | status | first check |\n|---|---|---|")
    for p in s.proxies:
        L.append(f"| {p} | {status[p]['state']} | {status[p].get('detail', '').replace('|', '/')} |")
    L.append("")
    L.append("What each proxy answered to one request of each scenario before the rounds, and its good runs:\n")
    L.append("| scenario | " + " | ".join(s.proxies) + " |")
    L.append("|---|" + "---|" * len(s.proxies))
    for sc in scen:
        cells = []
        for p in s.proxies:
            pr = probes.get(p, {}).get(sc.name)
            rs = [r for r in results.get(p, []) if r["scenario"] == sc.name]
            good = sum(1 for r in rs if r.get("ok"))
            if pr is None:
                cells.append("not probed")
            elif not pr["ok"]:
                cells.append(f"**FAILED**: {pr['note']}".replace("|", "/"))
            else:
                cells.append(f"{pr['status']}, {fmt(pr['bytes'], 0)} B, {pr['proto']}"
                             + (f"; {pr['note']}" if pr.get("note") else "") + f"; {good}/{len(rs)} good runs")
        L.append(f"| {sc.short} | " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    L.append("")

    # One table per metric
    L.append(f"## Results: medians over {s.rounds} round(s)\n")
    for label, key, better, digits in METRICS:
        L.append(f"### {label} ({better} is better)\n")
        L.append("| scenario | " + " | ".join(s.proxies) + " | "
                 + " | ".join(f"Turnpike / {PEER_NAMES[p]}" for p in peers) + " |")
        L.append("|---|" + "---:|" * (len(s.proxies) + len(peers)))
        for sc in scen:
            cells = [fmt(meds[p][sc.name][key], digits) for p in s.proxies]
            for peer in peers:
                rr = r_of(peer, sc, key)
                pr, n = paired_ratio(results, peer, sc.name, key)
                cells.append(fmt(rr, 3) + (f" ({pr:.3f})" if pr is not None and s.rounds > 1 else ""))
            L.append(f"| {sc.short} | " + " | ".join(cells) + " |")
        L.append("")
    L.append("### Context: the upstream and the connections\n")
    L.append("Medians, each cell " + " / ".join(s.proxies) + ". *Upstream CPU µs/req* is the same work behind "
             "every proxy (a gauge of noise, and of extra upstream connections); *upstream CPUs busy* near 1 means the "
             f"single-threaded upstream (`--threads {s.echo_threads}`) was the bottleneck, so requests/s says little "
             "about the proxy there; *TCP accepts/req* counts accept()s on the machine (the client's connections to "
             "the proxy and the proxy's to the upstream, the load generator's initial connections included) per "
             "request: about 1 for a new client connection per request, about 2 if the proxy also opens a new upstream "
             "connection for it.\n")
    L.append("| scenario | upstream CPU µs/req | upstream CPUs busy | TCP accepts/req |\n|---|---:|---:|---:|")
    for sc in scen:
        cells = [" / ".join(fmt(meds[p][sc.name][k], d) for p in s.proxies)
                 for k, d in (("echo_cpu_us", 1), ("echo_cpus", 2), ("accepts_per_req", 2))]
        L.append(f"| {sc.short} | " + " | ".join(cells) + " |")
    L.append("")
    foreign = [r["foreign_cpus"] for p in s.proxies for r in results.get(p, [])
               if r.get("ok") and r.get("foreign_cpus") is not None]
    if foreign:
        L.append(f"Other load during the measured runs: median {statistics.median(foreign):.2f} CPUs, "
                 f"max {max(foreign):.2f} CPUs (of {info['nproc']})."
                 + (" **The machine was busy with other work during this run**: the comparison is still "
                    "interleaved and like for like, but absolute requests/s and p99 are depressed and noisy; "
                    "rerun `bench/run.sh` on an idle machine for numbers to publish." if statistics.median(foreign) > 0.2
                    else "") + "\n")
    small = next((sc for sc in scen if sc.name == "small"), None)
    n = meds.get("nginx", {}).get("small", {})
    t = tp.get("small", {})
    if small and t.get("rate") and n.get("rate"):
        checks = [("requests/s ≥ nginx", t["rate"] >= n["rate"]),
                  ("CPU per request ≤ nginx", t["cpu_us"] is not None and n["cpu_us"] is not None
                   and t["cpu_us"] <= n["cpu_us"]),
                  ("p99 ≤ nginx", t["p99_ms"] is not None and n["p99_ms"] is not None and t["p99_ms"] <= n["p99_ms"])]
        L.append("Target (issue 2, 2 workers, HTTP/1.1 keep-alive, small body): "
                 + "; ".join(f"{name}: {'met' if ok else 'NOT met'}" for name, ok in checks) + ".\n")

    # Raw
    L.append("## Raw per-round numbers\n")
    L.append("| round | scenario | order | proxy | requests | requests/s | p50 ms | p99 ms | max ms | proxy CPU µs/req | "
             "(schedstat) | upstream CPU µs/req | client CPU µs/req | TCP accepts/req | KiB read/req | other load (CPUs) | "
             "non-2xx | errors | ok |")
    L.append("|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    runs = sorted((r for p in s.proxies for r in results.get(p, [])), key=lambda r: (r["round"], r["seq"]))
    for r in runs:
        if r.get("skipped"):
            L.append(f"| {r['round']} | {r['scenario']} | {r['order']} | {r['proxy']} |" + " — |" * 14
                     + f" skipped: {r['skipped'].replace('|', '/')} |")
            continue
        okcell = "yes" if r.get("ok") else "NO: " + "; ".join(r.get("problems", [])).replace("|", "/")
        rpr = r.get("read_per_req")
        L.append(f"| {r['round']} | {r['scenario']} | {r['order']} | {r['proxy']} | {r.get('count') or '—'} | "
                 f"{fmt(r.get('rate'), 0)} | {fmt(r.get('p50_ms'), 2)} | {fmt(r.get('p99_ms'), 2)} | "
                 f"{fmt(r.get('max_ms'), 1)} | {fmt(r.get('cpu_us'), 1)} | {fmt(r.get('cpu_sched_us'), 1)} | "
                 f"{fmt(r.get('echo_cpu_us'), 1)} | {fmt(r.get('client_cpu_us'), 1)} | "
                 f"{fmt(r.get('accepts_per_req'), 2)} | {fmt(rpr / 1024 if rpr is not None else None, 1)} | "
                 f"{fmt(r.get('foreign_cpus'), 2)} | {r.get('non2xx', '—')} | {r.get('errors', '—')} | {okcell} |")
    L.append("")
    notes = [f"- **{p}**: {status[p]['note']}" for p in s.proxies if status[p].get("note")]
    if notes:
        L.append("## Notes\n")
        L.extend(notes)
        L.append("")
    text = "\n".join(L)
    try:  # keep the other scripts' sections (bench/reload_bench.py, tls_bench.py, h2_bench.py, filters_bench.py)
        with open(s.out) as f:
            kept = kept_sections(f.read())
    except (FileNotFoundError, UnicodeDecodeError):
        kept = None
    if kept:
        text = text.rstrip("\n") + "\n\n" + kept + "\n"
    os.makedirs(os.path.dirname(s.out), exist_ok=True)
    tmp = s.out + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, s.out)
    return meds


# ----------------------------------------------------------------------------------------------
# Main


def shutil_which(cmd):
    import shutil
    return shutil.which(cmd)


def start_echo(s, procs):
    """The shared upstream; (proc, "127.0.0.1:port") or None."""
    echo_port = free_ports(1)[0]
    up_addr = f"127.0.0.1:{echo_port}"
    echo_log = os.path.join(s.workdir, "echo.log")
    cmd = [s.echo_bin, "--listen", up_addr, "--name", "bench-upstream", "--threads", str(s.echo_threads)]
    if s.echo_cpus:
        cmd = ["taskset", "-c", s.echo_cpus] + cmd
    echo = procs.start("turnpike-echo", cmd, echo_log)
    if not wait_for_line(echo_log, r"listening", echo, timeout=10):
        log(f"upstream did not print 'listening' within 10 s:\n{tail(echo_log)}")
        return None
    ok, detail = wait_http_ok(echo_port, s.path, echo, timeout=5)
    if not ok:
        log(f"upstream does not answer 200 on {s.path}: {detail}")
        return None
    log(f"upstream ready on {up_addr}, {len(detail[1])} body bytes for GET {s.path}")
    return echo, up_addr


def all_versions(s):
    v = versions(s)
    v["h2load"] = run_cmd(["h2load", "--version"])
    v["openssl"] = run_cmd(["openssl", "version"])
    if v.get("compiler") == "?" and os.path.exists(s.turnpike_bin):  # prebuilt binary: its .comment section
        m = re.search(r"GCC: \(([^)]*)\) (\S+)", run_cmd(["readelf", "-p", ".comment", s.turnpike_bin]))
        if m:
            v["compiler"] = f"GCC {m.group(2)} ({m.group(1)}), from the binary's .comment"
    return v


def describe(r):
    return (f"{fmt(r.get('rate'), 0)} req/s, p50 {fmt(r.get('p50_ms'), 2)} ms, p99 {fmt(r.get('p99_ms'), 2)} ms, "
            f"CPU {fmt(r.get('cpu_us'), 1)} µs/req, accepts/req {fmt(r.get('accepts_per_req'), 2)}, "
            f"other load {fmt(r.get('foreign_cpus'), 2)}")


def main():
    s = Settings(sys.argv[1:])
    if s.profile:
        import profile_bench
        return profile_bench.main(s)
    t_start = time.monotonic()
    procs = Procs(s.workdir)

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    info = machine_info()
    vers = all_versions(s)
    status = {p: {"state": "not started"} for p in s.proxies}
    results = {p: [] for p in s.proxies}
    probes = {}
    deadline = t_start + s.budget
    log(f"scenarios: {' '.join(sc.name for sc in s.scenarios)}; proxies: {' '.join(s.proxies)}; "
        f"{s.rounds} round(s) × {s.duration} s; time budget {s.budget:.0f} s")
    try:
        started = start_echo(s, procs)
        if not started:
            return 2
        echo, up_addr = started

        running = {}
        for name in s.proxies:
            st = start_proxy(s, procs, name, up_addr, status)
            if not st:
                log(f"{name}: {status[name]['detail']}")
                continue
            proc, ports = st
            running[name] = st
            probes[name] = {}
            for sc in s.scenarios:
                pr = probes[name][sc.name] = probe(s, sc, ports, proc)
                log(f"probe {name} {sc.name}: " + (f"ok, {pr['status']}, {pr['bytes']} B, {pr['proto']}"
                                                   + (f", {pr['note']}" if pr["note"] else "")
                                                   if pr["ok"] else f"FAILED: {pr['note']}"))

        # Warm-up (fills pools, faults in pages), not counted.
        if s.warmup > 0:
            for name, (proc, ports) in running.items():
                for sc in s.scenarios:
                    if probes[name][sc.name]["ok"] and proc.poll() is None:
                        r = run_scenario(s, sc, ports, proc, echo, s.warmup, f"warmup-{sc.name}-{name}", warm=0)
                        log(f"warm-up {name} {sc.name}: {fmt(r.get('rate'), 0)} req/s"
                            + ("" if r.get("ok") else f" ({'; '.join(r.get('problems', []))})"))

        # Interleaved rounds: per round every scenario, within it every proxy once, order rotated.
        names = [p for p in s.proxies if p in running]
        for rnd in range(1, s.rounds + 1):
            k = (rnd - 1) % max(1, len(names))
            order = names[k:] + names[:k]
            seq = 0
            for sc in s.scenarios:
                for pos, p in enumerate(order, 1):
                    seq += 1
                    proc, ports = running[p]
                    entry = {"round": rnd, "scenario": sc.name, "order": pos, "seq": seq, "proxy": p}
                    extra = s.run_warmup if sc.kind == "h2load" else 0
                    if proc.poll() is not None:
                        entry["skipped"] = f"proxy exited (status {proc.returncode})"
                        status[p]["state"] = "died"
                        status[p]["note"] = (f"exited with status {proc.returncode} during the rounds; log tail:"
                                             f"\n\n```\n{tail(os.path.join(s.workdir, p + '.log'))}\n```")
                    elif not probes[p][sc.name]["ok"]:
                        entry["skipped"] = f"probe failed: {probes[p][sc.name]['note']}"
                    elif time.monotonic() + s.duration + extra + 8 > deadline:
                        entry["skipped"] = "time budget exhausted"
                    else:
                        time.sleep(s.pause)
                        r = run_scenario(s, sc, ports, proc, echo, s.duration, f"{rnd}-{sc.name}-{p}")
                        raw = r.pop("raw", "")
                        with open(os.path.join(s.workdir, f"out-{rnd}-{sc.name}-{p}.txt"), "w") as f:
                            f.write(raw)
                        if not r["ok"]:
                            entry["raw_tail"] = raw[-600:]
                        entry.update(r)
                        log(f"round {rnd}/{s.rounds} {sc.name:6s} {p:8s}: {describe(r)}"
                            + ("" if r["ok"] else f"  FAILED: {'; '.join(r.get('problems', []))}"))
                    if entry.get("skipped"):
                        log(f"round {rnd}/{s.rounds} {sc.name:6s} {p:8s}: skipped, {entry['skipped']}")
                    results[p].append(entry)
        for p in names:
            bad = [e for e in results[p] if not e.get("ok") and not e.get("skipped")]
            if bad and status[p]["state"] == "ok":
                status[p]["state"] = f"ok, {len(bad)} failed run(s)"
                first = next((e for e in bad if e.get("raw_tail")), bad[0])
                status[p]["note"] = (f"first failed run ({first['scenario']}, round {first['round']}): "
                                     + "; ".join(first.get("problems", []))
                                     + (f"\n\n```\n{first['raw_tail']}\n```" if first.get("raw_tail") else ""))
            failed_probes = [sc.name for sc in s.scenarios if not probes[p][sc.name]["ok"]]
            if failed_probes:
                status[p]["state"] += f", probe failed: {' '.join(failed_probes)}"
    finally:
        procs.stop_all()

    elapsed = time.monotonic() - t_start
    meds = write_report(s, info, vers, status, probes, results, elapsed)
    with open(os.path.join(s.workdir, "results.json"), "w") as f:
        json.dump({"settings": {k: (v if not isinstance(v, list) or not v or not isinstance(v[0], Scenario)
                                    else [sc.name for sc in v]) for k, v in vars(s).items()},
                   "machine": info, "versions": vers, "status": status, "probes": probes, "results": results,
                   "medians": meds}, f, indent=2, default=str)
    log(f"report written to {s.out} ({elapsed:.0f} s)")
    for sc in s.scenarios:
        log(f"  {sc.name}:")
        for p in s.proxies:
            m = meds.get(p, {}).get(sc.name, {})
            log(f"    {p:9s} rps {fmt(m.get('rate'), 0):>9s}  p50 {fmt(m.get('p50_ms'), 2):>7s} ms  "
                f"p99 {fmt(m.get('p99_ms'), 2):>7s} ms  CPU {fmt(m.get('cpu_us'), 1):>7s} µs/req")
    tp_failed = "turnpike" in s.proxies and (
        status["turnpike"]["state"] != "ok"
        or any(not r.get("ok") for r in results.get("turnpike", [])))
    if tp_failed:
        log("Turnpike had failed or skipped runs (see the report)")
        return 1
    return 0


if __name__ == "__main__":
    # bench/h2_bench.py and profile_bench.py `import bench`: let them get this module, not a second copy.
    sys.modules.setdefault("bench", sys.modules["__main__"])
    sys.exit(main())
