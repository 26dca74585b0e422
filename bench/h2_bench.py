#!/usr/bin/python3
"""HTTP/2 downstream: Turnpike vs nginx vs HAProxy in front of one shared HTTP/1.1 upstream.

Driven by bench/h2.sh (which installs peers and h2load, builds the binaries and creates the
certificates in $CERTS); stdlib only. Reuses the helpers of bench/bench.py (process handling, CPU
accounting, config templates) and bench/tls_bench.py (CPU accounting over a client's run) and writes
its results as one section of docs/benchmarks.md, delimited by the lines `<!-- h2:begin -->` and
`<!-- h2:end -->` (replaced when present, appended otherwise; bench.py keeps that section when it
rewrites the file, tls_bench.py and reload_bench.py only replace their own).

Each proxy runs one process with two listeners: cleartext HTTP/2 with prior knowledge (h2c) and TLS
with ALPN h2 (the EC P-256 certificate of bench/tls.sh), and proxies over cleartext HTTP/1.1
keep-alive to one shared turnpike-echo, with the configs of bench/run.sh plus those listeners.
Scenarios, measured with h2load in interleaved rounds (per round: each scenario, every proxy in
rotated order):
  h2c        h2load -D DURATION --warm-up-time RUN_WARMUP -c16 -m10 -t2 http://127.0.0.1:PORT/:
             requests/s (h2load's, main phase only), p50/p99 from h2load's --log-file (per request,
             µs), proxy CPU per request over a window inside the main phase;
  h2tls      the same over TLS (ALPN h2), connections opened once (before the measured phase);
  hs         a new connection per request: back-to-back `h2load -n B -c B -m1` batches over TLS
             (B clients, one connection and one request each, so every request pays a TCP
             connect, a full TLS 1.3 handshake with ALPN h2, the HTTP/2 preface and SETTINGS)
             for DURATION seconds; handshakes/s and proxy CPU per handshake.
Every process it starts is stopped by PID at the end (also on SIGINT/SIGTERM); the long-running
ones are also written to $WORKDIR/pids so h2.sh's trap can stop them if this process is killed.
"""

import datetime
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench  # noqa: E402  (bench/bench.py: shared helpers)
from bench import (Procs, env_int, fmt, free_ports, parse_latency_ms, render, tail, wait_for_line,  # noqa: E402
                   wait_http_ok)
from tls_bench import measure_window  # noqa: E402

PROXIES = ("turnpike", "nginx", "haproxy")
BEGIN, END = bench.H2_BEGIN, bench.H2_END
MAX_STREAMS = 100  # SETTINGS_MAX_CONCURRENT_STREAMS on every proxy (HAProxy's default; nginx's is 128)
# name, label, kind, listener
SCENARIOS = (
    ("h2c", "h2c (cleartext, prior knowledge), keep-alive", "load", "h2c"),
    ("h2tls", "h2 over TLS (ALPN h2), keep-alive", "load", "tls"),
    ("hs", "h2 over TLS, new connection per request (full TLS 1.3 handshake)", "batch", "tls"),
)


def log(msg):
    print(f"[h2 {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Settings(bench.CertFiles):
    def __init__(self, argv):
        self.quick = "--quick" in argv
        self.rounds = env_int("ROUNDS", 1 if self.quick else 3)
        self.duration = max(2, env_int("DURATION", 3 if self.quick else 10))
        self.warmup = env_int("WARMUP", 1 if self.quick else 2)
        self.run_warmup = env_int("RUN_WARMUP", 1)
        self.connections = env_int("CONNECTIONS", 16)
        self.streams = env_int("STREAMS", 10)
        self.threads = max(1, min(env_int("THREADS", 2), self.connections))
        self.hs_batch = env_int("HS_BATCH", 64)
        self.hs_threads = max(1, min(env_int("HS_THREADS", 2), self.hs_batch))
        self.echo_threads = env_int("ECHO_THREADS", 1)
        self.echo_cpus = os.environ.get("ECHO_CPUS", "")
        self.path = os.environ.get("BENCH_PATH", "/")
        self.proxies = [p for p in os.environ.get("PROXIES", " ".join(PROXIES)).split() if p in PROXIES]
        self.turnpike_bin = os.environ["TURNPIKE_BIN"]
        self.echo_bin = os.environ["ECHO_BIN"]
        self.build_dir = os.environ.get("BUILD_DIR", "")
        self.workdir = os.environ["WORKDIR"]
        self.out = os.environ["OUT"]
        self.certs = os.environ["CERTS"]
        self.turnpike_build_error = os.environ.get("TURNPIKE_BUILD_ERROR", "")
        self.scenarios = list(SCENARIOS)
        self.pause = 1.0  # seconds before every measured run (TIME_WAIT, CPU settle)
        per_run = self.duration + self.run_warmup + self.pause + 3
        self.budget = (len(self.proxies) * (self.rounds * len(self.scenarios) * per_run + 3 * self.warmup + 40)) * 2 + 120


# ----------------------------------------------------------------------------------------------
# Configs: the bench/run.sh templates with an h2c and a TLS (ALPN h2) listener


def swap(text, old, new, what):
    if text.count(old) != 1:
        raise RuntimeError(f"{what}: expected exactly one '{old.strip()}' in the rendered template")
    return text.replace(old, new)


def turnpike_config(s, h2c, tls, admin, upstream):
    text = render("turnpike.yaml.in", LISTEN=h2c, ADMIN=admin, UPSTREAM=upstream)
    listeners = ("  - name: h2c\n"
                 f"    listen: {h2c}\n"
                 "    protocols: [http1, h2c]   # h2c with prior knowledge, by preface detection\n"
                 f"    http2: {{max_concurrent_streams: {MAX_STREAMS}}}\n"
                 "  - name: tls\n"
                 f"    listen: {tls}\n"
                 "    tls:\n"
                 "      certificates:\n"
                 f"        - {{cert: {s.cert}, key: {s.key}}}\n"
                 "    # protocols default to [http1, h2] on a TLS listener: ALPN offers h2, http/1.1\n"
                 f"    http2: {{max_concurrent_streams: {MAX_STREAMS}}}\n")
    return swap(text, f"  - name: bench\n    listen: {h2c}\n", listeners, "turnpike.yaml.in")


def nginx_config(s, h2c, tls, upstream):
    text = render("nginx.conf.in", LISTEN=h2c, UPSTREAM=upstream, WORKDIR=s.workdir)
    listen = (f"listen {h2c} http2 reuseport backlog=4096;        # h2c, prior knowledge only\n"
              f"        listen {tls} ssl http2 reuseport backlog=4096;    # ALPN h2, http/1.1\n"
              f"        ssl_certificate {s.cert};\n"
              f"        ssl_certificate_key {s.key};\n"
              "        ssl_protocols TLSv1.2 TLSv1.3;\n"
              "        ssl_session_tickets on;\n"
              f"        http2_max_concurrent_streams {MAX_STREAMS};")
    return swap(text, f"listen {h2c} reuseport backlog=4096;", listen, "nginx.conf.in")


def haproxy_config(s, h2c, tls, upstream):
    text = render("haproxy.cfg.in", LISTEN=h2c, UPSTREAM=upstream, WORKDIR=s.workdir)
    text = swap(text, "    tune.bufsize 16384\n",
                f"    tune.bufsize 16384\n    tune.h2.max-concurrent-streams {MAX_STREAMS}\n", "haproxy.cfg.in")
    text = swap(text, f"bind {h2c}\n",
                f"bind {h2c} proto h2\n"
                f"    bind {tls} ssl crt {s.combined} alpn h2,http/1.1 ssl-min-ver TLSv1.2\n", "haproxy.cfg.in")
    return swap(text, "    http-request set-header X-Forwarded-Proto http\n",
                "    http-request set-header X-Forwarded-Proto http if !{ ssl_fc }\n"
                "    http-request set-header X-Forwarded-Proto https if { ssl_fc }\n", "haproxy.cfg.in")


# ----------------------------------------------------------------------------------------------
# h2load


def parse_duration_s(text):
    ms = parse_latency_ms(text)
    return ms / 1e3 if ms is not None else None


def parse_h2load(out):
    res = {"finished_s": None, "rps": None, "total": None, "started": None, "done": None, "succeeded": None,
           "failed": None, "errored": None, "timeout": None, "s2xx": None, "s3xx": None, "s4xx": None,
           "s5xx": None, "bytes_total": None, "bytes_headers": None, "bytes_data": None, "hpack_savings": None,
           "protocol": None, "tls_protocol": None, "cipher": None, "temp_key": None}
    m = re.search(r"^finished in ([\d.]+\w+), ([\d.]+) req/s", out, re.M)
    if m:
        res["finished_s"] = parse_duration_s(m.group(1))
        res["rps"] = float(m.group(2))
    m = re.search(r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
                  r"(\d+) errored, (\d+) timeout", out, re.M)
    if m:
        for k, v in zip(("total", "started", "done", "succeeded", "failed", "errored", "timeout"), m.groups()):
            res[k] = int(v)
    m = re.search(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out, re.M)
    if m:
        for k, v in zip(("s2xx", "s3xx", "s4xx", "s5xx"), m.groups()):
            res[k] = int(v)
    m = re.search(r"^traffic: .*?\((\d+)\) total, .*?\((\d+)\) headers \(space savings ([\d.]+)%\), .*?\((\d+)\) data",
                  out, re.M)
    if m:
        res["bytes_total"], res["bytes_headers"] = int(m.group(1)), int(m.group(2))
        res["hpack_savings"], res["bytes_data"] = float(m.group(3)), int(m.group(4))
    for label, key in (("time for request", "req"), ("time for connect", "connect"), ("time to 1st byte", "ttfb")):
        m = re.search(rf"^{label}:\s+(\S+)\s+(\S+)\s+(\S+)", out, re.M)
        res[f"{key}_min_ms"], res[f"{key}_max_ms"], res[f"{key}_mean_ms"] = (
            (parse_latency_ms(m.group(1)), parse_latency_ms(m.group(2)), parse_latency_ms(m.group(3))) if m
            else (None, None, None))
    for pattern, key in ((r"^Application protocol: (\S+)", "protocol"), (r"^TLS Protocol: (\S+)", "tls_protocol"),
                         (r"^Cipher: (\S+)", "cipher"), (r"^Server Temp Key: (.+)$", "temp_key")):
        m = re.search(pattern, out, re.M)
        if m:
            res[key] = m.group(1).strip()
    return res


def h2load_problems(r, expect_protocol, expect_requests=None, in_flight=0):
    """What is wrong with one h2load run (parsed), as a list of strings. in_flight: by how many the 2xx
    count may differ from the completed requests (-D runs count the status of streams still open at the
    end, and count as succeeded, without a status, the streams whose headers came in the warm-up)."""
    problems = []
    if r["succeeded"] is None:
        return ["no h2load summary"]
    if r["protocol"] != expect_protocol:
        problems.append(f"application protocol {r['protocol']}, {expect_protocol} expected")
    if r["failed"] or r["errored"] or r["timeout"]:
        problems.append(f"{r['failed']} failed, {r['errored']} errored, {r['timeout']} timed out")
    if r["s3xx"] or r["s4xx"] or r["s5xx"] or not -in_flight <= (r["s2xx"] or 0) - r["succeeded"] <= in_flight:
        problems.append(f"{r['s2xx']} 2xx for {r['succeeded']} requests ({r['s3xx']} 3xx, {r['s4xx']} 4xx, "
                        f"{r['s5xx']} 5xx)")
    if expect_requests is not None and r["succeeded"] != expect_requests:
        problems.append(f"{r['succeeded']} of {expect_requests} requests succeeded")
    if not r["succeeded"]:
        problems.append("no request succeeded")
    return problems


def h2load_once(url, timeout=10):
    """One request on one connection: (parsed output, raw output)."""
    cmd = ["h2load", "-n", "1", "-c", "1", "-N", "5s", url]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        out = r.stdout + r.stderr
    except (OSError, subprocess.TimeoutExpired) as e:
        out = f"({type(e).__name__}: {e})"
    return parse_h2load(out), out


def wait_h2_ok(url, expect_protocol, proc, timeout):
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False, f"exited with status {proc.returncode} before answering ({last})"
        r, out = h2load_once(url)
        problems = h2load_problems(r, expect_protocol, 1)
        if not problems:
            return True, r
        last = "; ".join(problems)
        time.sleep(0.2)
    return False, f"no 200 over {expect_protocol} within {timeout:.0f}s (last: {last})"


def log_percentiles(path, durs=None):
    """p50/p99 (ms) of the per-request durations (µs) in an h2load --log-file, and the rows not 200.
    With durs, the file's durations are appended to that list and the percentiles are over all of it."""
    durs = [] if durs is None else durs
    rows = not_ok = no_status = 0
    try:
        if path:
            with open(path) as f:
                for line in f:
                    parts = line.split("\t")
                    if len(parts) < 3:
                        continue
                    rows += 1
                    if parts[1] == "0":  # -D runs: response headers seen in the warm-up, the end in the main phase
                        no_status += 1
                    elif parts[1] != "200":
                        not_ok += 1
                    durs.append(int(parts[2]))
    except FileNotFoundError:
        pass
    durs.sort()

    def pct(q):  # nearest rank
        return durs[min(len(durs) - 1, max(0, math.ceil(q * len(durs)) - 1))] / 1e3 if durs else None

    return {"log_rows": rows, "log_not_200": not_ok, "log_no_status": no_status, "p50_ms": pct(0.50),
            "p99_ms": pct(0.99)}


def sample(proxy_pid, echo_pid, client_pid):
    return {"t": time.monotonic(), "busy": bench.machine_busy_s(), "proxy": bench.cpu_sample(proxy_pid),
            "echo": bench.cpu_sample(echo_pid), "client": bench.cpu_sample(client_pid)}


def sleep_until(t, proc):
    while time.monotonic() < t and proc.poll() is None:
        time.sleep(min(0.05, max(0.0, t - time.monotonic())))


def run_load(s, url, expect_protocol, duration, warm, proxy_proc, echo_proc, tag):
    """h2load -D over keep-alive connections; CPU sampled over a window inside h2load's main phase."""
    log_path = os.path.join(s.workdir, f"h2load-{tag}.log")
    out_path = os.path.join(s.workdir, f"h2load-{tag}.txt")
    cmd = ["h2load", "-D", str(duration)] + (["--warm-up-time", str(warm)] if warm > 0 else []) + [
        "-c", str(s.connections), "-m", str(s.streams), "-t", str(s.threads), "--log-file", log_path, url]
    margin = min(0.25, duration / 10)
    a = b = None
    try:
        os.remove(log_path)  # h2load appends to its --log-file
    except FileNotFoundError:
        pass
    with open(out_path, "w") as f:
        t0 = time.monotonic()
        h2 = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            sleep_until(t0 + warm + margin, h2)
            if h2.poll() is None:
                a = sample(proxy_proc.pid, echo_proc.pid, h2.pid)
                sleep_until(t0 + warm + duration - margin, h2)
                if h2.poll() is None:
                    b = sample(proxy_proc.pid, echo_proc.pid, h2.pid)
            h2.wait(timeout=duration + warm + 30)
        except subprocess.TimeoutExpired:
            h2.kill()
            h2.wait()
            f.write("\n(h2load killed: did not finish in time)\n")
        except BaseException:
            h2.kill()
            h2.wait()
            raise
    with open(out_path, errors="replace") as f:
        raw = f.read()
    res = parse_h2load(raw)
    res["raw"] = raw
    res["client_exit"] = h2.returncode
    res["alive"] = proxy_proc.poll() is None
    res.update(log_percentiles(log_path))
    if os.environ.get("KEEP", "0") != "1":
        try:
            os.remove(log_path)  # up to a few MB per run; the percentiles are in the results
        except FileNotFoundError:
            pass
    res["count"] = res["succeeded"]
    res["rate"] = res["rps"]
    problems = h2load_problems(res, expect_protocol, in_flight=s.connections * s.streams)
    if res["client_exit"] != 0:
        problems.append(f"h2load exit {res['client_exit']}")
    if res["done"] is not None and res["log_rows"] != res["done"]:
        problems.append(f"{res['log_rows']} log rows for {res['done']} requests")
    if res["log_not_200"] or res["log_no_status"] > s.connections * s.streams:
        problems.append(f"{res['log_not_200']} logged requests not 200, {res['log_no_status']} without a status")
    if a is None or b is None:
        problems.append("h2load ended before the CPU window")
    else:
        window = b["t"] - a["t"]
        res["window_s"] = window
        res["cpu_s"], res["cpu_sched_s"] = bench.cpu_delta(a["proxy"], b["proxy"])
        res["echo_cpu_s"], _ = bench.cpu_delta(a["echo"], b["echo"])
        res["client_cpu_s"], _ = bench.cpu_delta(a["client"], b["client"])
        busy = b["busy"] - a["busy"]
        res["proxy_cpus"] = res["cpu_s"] / window
        res["echo_cpus"] = res["echo_cpu_s"] / window
        res["client_cpus"] = res["client_cpu_s"] / window
        res["foreign_cpus"] = max(0.0, busy - res["cpu_s"] - res["echo_cpu_s"] - res["client_cpu_s"]) / window
        if res["rps"]:  # CPUs busy in the window / requests per second = CPU seconds per request
            res["cpu_us"] = res["proxy_cpus"] / res["rps"] * 1e6
            res["cpu_sched_us"] = res["cpu_sched_s"] / window / res["rps"] * 1e6
            res["echo_cpu_us"] = res["echo_cpus"] / res["rps"] * 1e6
            res["client_cpu_us"] = res["client_cpus"] / res["rps"] * 1e6
    if not res["alive"]:
        problems.append("proxy died")
    res["problems"] = problems
    res["ok"] = not problems and res.get("cpu_us") is not None and res["p99_ms"] is not None
    return res


def run_batches(s, url, duration, proxy_proc, echo_proc, tag):
    """Back-to-back `h2load -n B -c B -m 1` batches over TLS for `duration` seconds: one connection
    (TCP connect, full TLS handshake, ALPN h2, preface, SETTINGS) per request."""
    log_path = os.path.join(s.workdir, f"h2load-{tag}.log")
    cmd = ["h2load", "-n", str(s.hs_batch), "-c", str(s.hs_batch), "-m", "1", "-t", str(s.hs_threads),
           "-N", "5s", "--log-file", log_path, url]

    def go():
        batches, raws, durs = [], [], []
        end = time.monotonic() + duration
        while time.monotonic() < end:
            try:
                os.remove(log_path)  # h2load appends to its --log-file
            except FileNotFoundError:
                pass
            try:
                r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
                out, code = r.stdout + r.stderr, r.returncode
            except subprocess.TimeoutExpired as e:  # run() has killed it
                out, code = f"(h2load killed after {e.timeout} s)", None
            b = parse_h2load(out)
            b["exit"] = code
            b["problems"] = h2load_problems(b, "h2", s.hs_batch) + ([f"h2load exit {code}"] if code != 0 else [])
            lp = log_percentiles(log_path, durs)
            if lp["log_rows"] != b["done"] or lp["log_not_200"] or lp["log_no_status"]:
                b["problems"].append(f"{lp['log_rows']} log rows for {b['done']} requests, {lp['log_not_200']} not 200,"
                                     f" {lp['log_no_status']} without a status")
            batches.append(b)
            if b["problems"]:
                raws.append(out[-600:])
                break
        res = log_percentiles(None, durs)
        res.update(batches=batches, raw="\n".join(raws))
        return res

    res = measure_window(proxy_proc, echo_proc, go)
    bs = res.pop("batches")
    res["batches"] = len(bs)
    res["count"] = sum(b["succeeded"] or 0 for b in bs)
    active = sum(b["finished_s"] or 0.0 for b in bs)
    res["active_s"] = active
    res["rate"] = res["count"] / active if active else None  # over the time the batches ran
    res["rate_wall"] = res["count"] / res["wall_s"] if res["wall_s"] else None  # incl. the gaps between them
    # h2load's mean "time for connect" (connect() to the TLS handshake done) per batch, weighted.
    with_connect = [b for b in bs if b["connect_mean_ms"] is not None and b["succeeded"]]
    n = sum(b["succeeded"] for b in with_connect)
    if n:
        res["connect_ms"] = sum(b["connect_mean_ms"] * b["succeeded"] for b in with_connect) / n
    res["connect_max_ms"] = max((b["connect_max_ms"] for b in bs if b["connect_max_ms"] is not None), default=None)
    if os.environ.get("KEEP", "0") != "1":
        try:
            os.remove(log_path)
        except FileNotFoundError:
            pass
    res["tls_protocol"] = next((b["tls_protocol"] for b in bs if b["tls_protocol"]), None)
    res["protocol"] = next((b["protocol"] for b in bs if b["protocol"]), None)
    n = res["count"]
    if n:
        res["cpu_us"] = res["cpu_s"] / n * 1e6
        res["cpu_sched_us"] = res["cpu_sched_s"] / n * 1e6
        res["echo_cpu_us"] = res["echo_cpu_s"] / n * 1e6
        res["client_cpu_us"] = res["client_cpu_s"] / n * 1e6
    problems = [p for b in bs for p in b["problems"]]
    if not bs:
        problems.append("no batch ran")
    if not res["alive"]:
        problems.append("proxy died")
    res["problems"] = problems
    res["ok"] = not problems and bool(n)
    return res


# ----------------------------------------------------------------------------------------------
# Report


def med(rs, key):
    vals = [r[key] for r in rs if r.get("ok") and r.get(key) is not None]
    return statistics.median(vals) if vals else None


def ratio(a, b):
    return a / b if a is not None and b else None


def render_section(s, info, vers, status, probes, results, elapsed):
    L = [BEGIN, "## HTTP/2\n"]
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    mode = "quick smoke run (`bench/h2.sh --quick`)" if s.quick else "full run (`bench/h2.sh`)"
    L.append(f"Generated by `bench/h2.sh` — {mode} — on {now}, in {elapsed:.0f} s, on {info['nproc']} CPUs "
             f"({info['cpu']}, load average at start {' '.join(info['loadavg_at_start'])}). Versions: "
             f"`{vers.get('turnpike')}`, `{vers.get('nginx')}`, `{vers.get('haproxy')}`, `{vers.get('h2load')}`, "
             f"`{vers.get('openssl')}`, git `{vers.get('git')}`, build `{vers.get('build')}`. Regenerate with "
             "`bench/h2.sh`; `bench/run.sh`, `bench/tls.sh` and `bench/reload.sh` keep this section.\n")
    L.append("### Method\n")
    L.append(f"- **Setup.** As the main benchmark (`bench/run.sh`): one shared `turnpike-echo --threads {s.echo_threads}` "
             "upstream over cleartext **HTTP/1.1 keep-alive** (every proxy translates HTTP/2 to HTTP/1.1), and each "
             "proxy with its `bench/*.in` config, plus two loopback listeners in the same process: cleartext HTTP/2 "
             "with prior knowledge (h2c) and TLS with ALPN h2, with the certificate of `bench/tls.sh` (EC P-256, "
             f"ECDSA-SHA256, made with the `openssl` CLI for this run). `SETTINGS_MAX_CONCURRENT_STREAMS` {MAX_STREAMS} "
             "on all three.")
    L.append("  - Turnpike: `{name: h2c, protocols: [http1, h2c]}` (prior knowledge, by preface detection) and "
             "`{name: tls, tls: {certificates: [{cert, key}]}}` (ALPN h2, http/1.1 by default), both with "
             f"`http2: {{max_concurrent_streams: {MAX_STREAMS}}}`.")
    L.append("  - nginx: `listen … http2 reuseport` (h2c, prior knowledge only) and `listen … ssl http2 reuseport`, "
             f"`ssl_certificate`, `ssl_protocols TLSv1.2 TLSv1.3`, `http2_max_concurrent_streams {MAX_STREAMS}`.")
    L.append("  - HAProxy: `bind … proto h2` (h2c, prior knowledge only) and `bind … ssl crt <cert+key PEM> "
             f"alpn h2,http/1.1 ssl-min-ver TLSv1.2`, `tune.h2.max-concurrent-streams {MAX_STREAMS}`, "
             "`X-Forwarded-Proto` http or https by `ssl_fc`.")
    L.append(f"- **h2c / h2 over TLS, keep-alive**: `h2load -D {s.duration} --warm-up-time {s.run_warmup} "
             f"-c {s.connections} -m {s.streams} -t {s.threads} --log-file F URL` with `http://` (h2c, prior "
             "knowledge) or `https://` (ALPN h2): "
             f"{s.connections} connections opened once, up to {s.streams} concurrent streams on each. requests/s is "
             "h2load's (requests of the main phase / its duration; the warm-up is not counted). p50 and p99 are "
             "computed from the `--log-file` (one row per request of the main phase: start, status, µs to the "
             "end of the response; h2load 1.52 prints no percentiles), nearest rank; every row must be a 200 "
             "(or status 0, which h2load logs for a stream whose response headers came in the warm-up and its end "
             "in the main phase: at most one per stream slot).")
    L.append(f"- **New connection per request**: back-to-back `h2load -n {s.hs_batch} -c {s.hs_batch} -m 1 "
             f"-t {s.hs_threads} https://…` batches for {s.duration} s. With `-n` = `-c` each h2load client "
             "makes exactly one request on its own connection, so every request pays a TCP connect, a full TLS 1.3 "
             "handshake with ALPN h2 (h2load never offers a session or ticket: a fresh `SSL` per connection), the "
             "HTTP/2 preface and SETTINGS exchange, one proxied request and the close; every request of every "
             "batch must be a 200 over h2. handshakes/s = Σ requests / Σ h2load's own *finished in* times "
             "(the idle gaps between batches, one h2load start each, are excluded; *per s (wall)* in the raw "
             "table includes them). *connect + TLS handshake ms* is h2load's *time for connect* (from "
             "`connect()` to the handshake done, with ALPN h2), mean over all connections (h2load prints no "
             "percentiles of it; with a batch's connections all started at once it includes their queueing). "
             "*request p50/p99* are from the `--log-file` over all batches: one row per request, from sending "
             "its HEADERS on the fresh connection to the end of the response. No resumption: checked while "
             "writing this script with nginx logging `$ssl_session_reused` (192 requests: 192 connections, "
             "none reused). (`openssl s_time -new`, as in `bench/tls.sh`, offers no ALPN, so it would "
             "measure HTTP/1.x; hence h2load.)")
    L.append("- **proxy CPU µs/request**: utime+stime of all the proxy's processes (`/proc/PID/stat`, as in the "
             "main benchmark). Keep-alive scenarios: sampled over a window inside h2load's main phase (from "
             "0.25 s after the warm-up to 0.25 s before the end), CPUs busy in the window / h2load's requests/s; "
             "handshake scenario: over all the batches / their requests. *upstream* and *client* CPU likewise "
             "for turnpike-echo and h2load.")
    L.append(f"- **Shared cores.** This machine has {info['nproc']} CPUs, shared, unpinned, by h2load, the proxy "
             "(2 workers / 2 threads) and the upstream; the *CPUs used* columns split the box. requests/s is "
             "the rate of this box, not of the proxy alone; proxy CPU per request is the figure to compare first.")
    L.append(f"- **Rounds**: {s.rounds} round(s); in each round every scenario, and within it every proxy once, "
             f"order rotated from round to round; {s.pause:.0f} s pause before each run; a {s.warmup} s warm-up "
             "per proxy (h2c, TLS, handshake batches) is not counted. Medians over the good rounds; ratios are to nginx.")
    L.append("")

    # Probe
    L.append("### Proxies and what h2load negotiates\n")
    L.append("| proxy | status | listener | protocol | TLS | cipher | server temp key | one request: status | "
             "header bytes | data bytes |")
    L.append("|---|---|---|---|---|---|---|---|---:|---:|")
    for p in s.proxies:
        pr = probes.get(p)
        if not pr:
            L.append(f"| {p} | {status[p]['state']}: {status[p].get('detail', '').replace('|', '/')[:200]} "
                     "| | | | | | | | |")
            continue
        for i, lst in enumerate(("h2c", "tls")):
            d = pr[lst]
            L.append(f"| {p} | {status[p]['state'] if i == 0 else ''} | {lst} | {d.get('protocol') or '—'} | "
                     f"{d.get('tls_protocol') or '—'} | {d.get('cipher') or '—'} | {d.get('temp_key') or '—'} | "
                     f"{'200' if d.get('s2xx') == 1 else 'not 2xx'} | {d.get('bytes_headers', '—')} | "
                     f"{d.get('bytes_data', '—')} |")
    L.append("")
    L.append("One `h2load -n 1 -c 1` per listener: the negotiated protocol, and h2load's traffic count for one "
             "response (header bytes after HPACK, data bytes as h2load counts them): the answers differ a "
             "little between proxies (each adds its own response headers; the echo body reflects the "
             "forwarded request headers).\n")

    # Medians
    L.append(f"### Results: medians over {s.rounds} round(s)\n")
    meds = {}
    for name, label, kind, _ in s.scenarios:
        L.append(f"**{label}**\n")
        if kind == "load":
            L.append("| proxy | requests/s ↑ | p50 ms ↓ | p99 ms ↓ | proxy CPU µs/req ↓ | upstream CPU µs/req | "
                     "client CPU µs/req | CPUs used: proxy / upstream / client / other | good runs |")
        else:
            L.append("| proxy | handshakes/s ↑ | connect + TLS handshake ms (mean) ↓ | request p50 ms | "
                     "request p99 ms ↓ | proxy CPU µs/handshake ↓ | upstream CPU µs/handshake | "
                     "client CPU µs/handshake | CPUs used: proxy / upstream / client / other | good runs |")
        L.append("|---|" + "---:|" * (8 if kind == "load" else 9))
        for p in s.proxies:
            rs = [r for r in results.get(p, []) if r["scenario"] == name]
            keys = ("rate", "p50_ms", "p99_ms", "cpu_us", "echo_cpu_us", "client_cpu_us", "proxy_cpus", "echo_cpus",
                    "client_cpus", "foreign_cpus", "connect_ms")
            m = {k: med(rs, k) for k in keys}
            meds.setdefault(p, {})[name] = m
            good = sum(1 for r in rs if r.get("ok"))
            cpus = (f"{fmt(m['proxy_cpus'], 2)} / {fmt(m['echo_cpus'], 2)} / {fmt(m['client_cpus'], 2)} / "
                    f"{fmt(m['foreign_cpus'], 2)}")
            if not good:
                why = status[p].get("detail", "") if not status[p]["state"].startswith("ok") else "no good run"
                L.append(f"| {p} | failed: {why.replace('|', '/')[:150]} |" + " — |" * (7 if kind == "load" else 8))
            elif kind == "load":
                L.append(f"| {p} | {fmt(m['rate'], 0)} | {fmt(m['p50_ms'], 2)} | {fmt(m['p99_ms'], 2)} | "
                         f"{fmt(m['cpu_us'], 1)} | {fmt(m['echo_cpu_us'], 1)} | {fmt(m['client_cpu_us'], 1)} | "
                         f"{cpus} | {good}/{len(rs)} |")
            else:
                L.append(f"| {p} | {fmt(m['rate'], 0)} | {fmt(m['connect_ms'], 2)} | {fmt(m['p50_ms'], 2)} | "
                         f"{fmt(m['p99_ms'], 2)} | "
                         f"{fmt(m['cpu_us'], 1)} | {fmt(m['echo_cpu_us'], 1)} | {fmt(m['client_cpu_us'], 1)} | "
                         f"{cpus} | {good}/{len(rs)} |")
        L.append("")
    foreign = [r["foreign_cpus"] for p in s.proxies for r in results.get(p, []) if r.get("foreign_cpus") is not None]
    if foreign:
        L.append(f"Other load on the machine during the measured runs: median {statistics.median(foreign):.2f} CPUs, "
                 f"max {max(foreign):.2f} CPUs (of {info['nproc']})." + (
                     " **The machine was busy with other work; the numbers are noisy** — rerun `bench/h2.sh` on "
                     "an idle machine for numbers to publish." if statistics.median(foreign) > 0.2 else "") + "\n")

    # Ratios
    L.append("### Ratios to nginx (from the medians; in brackets: paired, the ratio within each round, median over rounds)\n")
    others = [p for p in s.proxies if p != "nginx"]
    L.append("| scenario | metric | better when | " + " | ".join(f"{p} / nginx" for p in others) + " |")
    L.append("|---|---|---|" + "---:|" * len(others))

    def paired(p, name, key):
        by = {}
        for q in (p, "nginx"):
            for r in results.get(q, []):
                if r["scenario"] == name and r.get("ok") and r.get(key) is not None:
                    by.setdefault(r["round"], {})[q] = r[key]
        vals = [v[p] / v["nginx"] for v in by.values() if p in v and v.get("nginx")]
        return statistics.median(vals) if vals else None

    for name, label, kind, _ in s.scenarios:
        rows = ([("requests/s", "rate", "higher"), ("p50 latency", "p50_ms", "lower"), ("p99 latency", "p99_ms", "lower"),
                 ("proxy CPU per request", "cpu_us", "lower")] if kind == "load" else
                [("handshakes/s", "rate", "higher"), ("mean connect + TLS handshake", "connect_ms", "lower"),
                 ("request p99 latency", "p99_ms", "lower"),
                 ("proxy CPU per handshake", "cpu_us", "lower")])
        for metric, key, better in rows:
            cells = []
            for p in others:
                r = ratio(meds.get(p, {}).get(name, {}).get(key), meds.get("nginx", {}).get(name, {}).get(key))
                pr = paired(p, name, key)
                cells.append(f"{fmt(r, 3)}" + (f" ({pr:.3f})" if pr is not None and s.rounds > 1 else ""))
            L.append(f"| {label} | {metric} | {better} | " + " | ".join(cells) + " |")
    if "nginx" not in s.proxies:
        L.append("\n(nginx was not measured in this run: no ratios.)")
    L.append("")

    # Raw
    L.append("### Raw per-round numbers\n")
    L.append("| round | scenario | order | proxy | requests | per s | per s (wall) | p50 ms | p99 ms | connect ms | "
             "batches | proxy CPU µs | proxy CPU µs (schedstat) | upstream CPU µs | client CPU µs | "
             "CPUs: proxy / upstream / client / other | ok |")
    L.append("|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
    runs = sorted((r for p in s.proxies for r in results.get(p, [])), key=lambda r: (r["round"], r["seq"]))
    for r in runs:
        if r.get("skipped"):
            L.append(f"| {r['round']} | {r['scenario']} | {r['order']} | {r['proxy']} |" + " — |" * 12
                     + f" skipped: {r['skipped']} |")
            continue
        okcell = "yes" if r.get("ok") else "NO; " + "; ".join(r.get("problems", [])).replace("|", "/")
        hs = r["scenario"] == "hs"
        L.append(f"| {r['round']} | {r['scenario']} | {r['order']} | {r['proxy']} | {r.get('count') or '—'} | "
                 f"{fmt(r.get('rate'), 0)} | {fmt(r.get('rate_wall'), 0) if hs else '—'} | "
                 f"{fmt(r.get('p50_ms'), 2)} | {fmt(r.get('p99_ms'), 2)} | {fmt(r.get('connect_ms'), 2)} | "
                 f"{r.get('batches', '—')} | {fmt(r.get('cpu_us'), 1)} | {fmt(r.get('cpu_sched_us'), 1)} | "
                 f"{fmt(r.get('echo_cpu_us'), 1)} | {fmt(r.get('client_cpu_us'), 1)} | "
                 f"{fmt(r.get('proxy_cpus'), 2)} / {fmt(r.get('echo_cpus'), 2)} / {fmt(r.get('client_cpus'), 2)} / "
                 f"{fmt(r.get('foreign_cpus'), 2)} | {okcell} |")
    L.append("")
    notes = [f"- **{p}**: {status[p]['note']}" for p in s.proxies if status[p].get("note")]
    if notes:
        L.append("### Notes\n")
        L.extend(notes)
        L.append("")
    L.append(END)
    return "\n".join(L), meds


def write_section(out_path, section):
    """Replace the marked section in out_path, or append it (creating the file if needed)."""
    bench.write_marked_section(out_path, BEGIN, END, section)


# ----------------------------------------------------------------------------------------------
# Main


def start_proxy(s, procs, name, up_addr, status):
    """Start one proxy with an h2c and a TLS listener; returns (proc, {"h2c": url, "tls": url}, probe)
    once both answer 200 over HTTP/2, else None."""
    h2c_port, tls_port, admin_port = free_ports(3)
    h2c, tls = f"127.0.0.1:{h2c_port}", f"127.0.0.1:{tls_port}"
    urls = {"h2c": f"http://{h2c}{s.path}", "tls": f"https://{tls}{s.path}"}
    logfile = os.path.join(s.workdir, f"{name}.log")
    try:
        if name == "turnpike":
            if not os.access(s.turnpike_bin, os.X_OK):
                status[name] = {"state": "failed", "detail": "binary not built",
                                "note": "not built: " + (s.turnpike_build_error or s.turnpike_bin)}
                return None
            cfg = os.path.join(s.workdir, "turnpike.yaml")
            with open(cfg, "w") as f:
                f.write(turnpike_config(s, h2c, tls, f"127.0.0.1:{admin_port}", up_addr))
            check = subprocess.run([s.turnpike_bin, "check", "-c", cfg], capture_output=True, text=True, timeout=20)
            if check.returncode != 0:
                status[name] = {"state": "failed", "detail": "`turnpike check` rejected the HTTP/2 bench config",
                                "note": f"`turnpike check` exited with status {check.returncode}:\n\n```\n"
                                        + ((check.stdout + check.stderr).strip()[-800:] or "(no output)") + "\n```"}
                return None
            cmd = [s.turnpike_bin, "-c", cfg]
        elif name == "nginx":
            for d in ("client-body", "proxy-temp", "fastcgi-temp", "uwsgi-temp", "scgi-temp"):
                os.makedirs(os.path.join(s.workdir, f"nginx-{d}"), exist_ok=True)
            cfg = os.path.join(s.workdir, "nginx.conf")
            with open(cfg, "w") as f:
                f.write(nginx_config(s, h2c, tls, up_addr))
            cmd = ["nginx", "-c", cfg, "-p", s.workdir, "-e", os.path.join(s.workdir, "nginx-error.log")]
        else:
            cfg = os.path.join(s.workdir, "haproxy.cfg")
            with open(cfg, "w") as f:
                f.write(haproxy_config(s, h2c, tls, up_addr))
            cmd = ["haproxy", "-db", "-f", cfg]
        proc = procs.start(name, cmd, logfile)
    except (OSError, subprocess.SubprocessError, RuntimeError) as e:
        status[name] = {"state": "failed", "detail": f"could not start: {e}"}
        return None
    probe = {}
    for lst, proto in (("h2c", "h2c"), ("tls", "h2")):
        ok, detail = wait_h2_ok(urls[lst], proto, proc, timeout=15)
        if not ok:
            status[name] = {"state": "failed", "detail": f"{lst} listener: {detail}",
                            "note": f"log tail:\n\n```\n{tail(logfile)}\n```"}
            procs.stop(name, proc)
            return None
        probe[lst] = detail
    status[name] = {"state": "ok", "detail": "200 over h2c and over h2 (TLS)"}
    log(f"{name} ready on {urls['h2c']} and {urls['tls']}")
    return proc, urls, probe


def main():
    s = Settings(sys.argv[1:])
    t_start = time.monotonic()
    procs = Procs(s.workdir)

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    info = bench.machine_info()
    vers = bench.versions(s)
    vers["openssl"] = bench.run_cmd(["openssl", "version"])
    vers["h2load"] = bench.run_cmd(["h2load", "--version"])
    status = {p: {"state": "not started"} for p in s.proxies}
    results = {p: [] for p in s.proxies}
    probes = {}
    deadline = t_start + s.budget
    try:
        # The shared upstream (cleartext HTTP/1.1).
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

        # The proxies, each checked over h2c and h2 (TLS).
        running = {}
        for name in s.proxies:
            started = start_proxy(s, procs, name, up_addr, status)
            if not started:
                log(f"{name}: {status[name]['detail']}")
                continue
            proc, urls, probes[name] = started
            running[name] = (proc, urls)
            log(f"{name} probe: " + "; ".join(
                f"{lst} {d['protocol']}" + (f" {d['tls_protocol']} {d['cipher']} {d['temp_key']}" if d["tls_protocol"] else "")
                + f", {d['bytes_headers']} header + {d['bytes_data']} data bytes" for lst, d in probes[name].items()))

        # Warm-up, not counted.
        for name, (proc, urls) in running.items():
            if s.warmup > 0:
                r1 = run_load(s, urls["h2c"], "h2c", s.warmup, 0, proc, echo, f"warmup-h2c-{name}")
                r2 = run_load(s, urls["tls"], "h2", s.warmup, 0, proc, echo, f"warmup-tls-{name}")
                r3 = run_batches(s, urls["tls"], s.warmup, proc, echo, f"warmup-hs-{name}")
                log(f"warm-up {name}: {fmt(r1.get('rate'), 0)} req/s h2c, {fmt(r2.get('rate'), 0)} req/s h2, "
                    f"{fmt(r3.get('rate'), 0)} handshakes/s")

        # Interleaved rounds: per round, every scenario; within it every proxy, order rotated.
        names = [p for p in s.proxies if p in running]
        for rnd in range(1, s.rounds + 1):
            k = (rnd - 1) % max(1, len(names))
            order = names[k:] + names[:k]
            seq = 0
            for name, label, kind, lst in s.scenarios:
                for pos, p in enumerate(order, 1):
                    seq += 1
                    proc, urls = running[p]
                    entry = {"round": rnd, "scenario": name, "order": pos, "seq": seq, "proxy": p}
                    if proc.poll() is not None:
                        entry["skipped"] = f"proxy exited (status {proc.returncode})"
                        status[p]["state"] = "died"
                        status[p]["note"] = (f"exited with status {proc.returncode} during the rounds; log tail:"
                                             f"\n\n```\n{tail(os.path.join(s.workdir, p + '.log'))}\n```")
                    elif time.monotonic() + s.duration + s.run_warmup + 8 > deadline:
                        entry["skipped"] = "time budget exhausted"
                    else:
                        time.sleep(s.pause)
                        tag = f"{rnd}-{name}-{p}"
                        if kind == "load":
                            r = run_load(s, urls[lst], "h2c" if lst == "h2c" else "h2", s.duration, s.run_warmup,
                                         proc, echo, tag)
                        else:
                            r = run_batches(s, urls[lst], s.duration, proc, echo, tag)
                        raw = r.pop("raw", "")
                        if not r["ok"]:
                            entry["raw_tail"] = raw[-600:]
                        entry.update(r)
                        log(f"round {rnd}/{s.rounds} {name:5s} {p:8s}: {fmt(r.get('rate'), 0)}/s"
                            + (f", p50 {fmt(r.get('p50_ms'), 2)} ms, p99 {fmt(r.get('p99_ms'), 2)} ms" if kind == "load"
                               else f", {r.get('batches')} batches, connect {fmt(r.get('connect_ms'), 2)} ms, "
                                    f"request p99 {fmt(r.get('p99_ms'), 2)} ms")
                            + f", proxy CPU {fmt(r.get('cpu_us'), 1)} µs, CPUs proxy/upstream/client/other "
                            f"{fmt(r.get('proxy_cpus'), 2)}/{fmt(r.get('echo_cpus'), 2)}/{fmt(r.get('client_cpus'), 2)}/"
                            f"{fmt(r.get('foreign_cpus'), 2)}"
                            + ("" if r["ok"] else f"  FAILED: {'; '.join(r.get('problems', []))}"))
                    results[p].append(entry)
        for p in names:
            bad = [e for e in results[p] if not e.get("ok") and not e.get("skipped")]
            if bad and status[p]["state"] == "ok":
                status[p]["state"] = f"ok, {len(bad)} failed run(s)"
                first = next((e for e in bad if e.get("raw_tail")), bad[0])
                status[p]["note"] = (f"first failed run ({first['scenario']}, round {first['round']}): "
                                     + "; ".join(first.get("problems", []))
                                     + (f"\n\n```\n{first['raw_tail']}\n```" if first.get("raw_tail") else ""))
    finally:
        procs.stop_all()

    elapsed = time.monotonic() - t_start
    section, meds = render_section(s, info, vers, status, probes, results, elapsed)
    write_section(s.out, section)
    with open(os.path.join(s.workdir, "h2-results.json"), "w") as f:
        json.dump({"settings": vars(s), "machine": info, "versions": vers, "status": status, "probes": probes,
                   "results": results, "medians": meds}, f, indent=2, default=str)
    log(f"report section written to {s.out} ({elapsed:.0f} s)")
    for p, m in meds.items():
        log(f"  {p:9s} " + "; ".join(f"{n} {fmt(v.get('rate'), 0)}/s"
                                     + f" p99 {fmt(v.get('p99_ms'), 2)} ms"
                                     + f" {fmt(v.get('cpu_us'), 1)} µs" for n, v in m.items()))
    tp_failed = any(not r.get("ok") and not r.get("skipped") for r in results.get("turnpike", [])) \
        or status.get("turnpike", {}).get("state") not in (None, "ok")
    if tp_failed:
        log("Turnpike had failed runs (see the report)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
