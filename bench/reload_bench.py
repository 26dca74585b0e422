#!/usr/bin/python3
"""Cost of hot reload: Turnpike vs nginx vs HAProxy, and Turnpike's file-write-to-serving latency.

Driven by bench/reload.sh (which installs peers and builds the binaries); stdlib only. Reuses the
helpers of bench/bench.py (process handling, wrk runner and parser, config templates, report
helpers) and writes its results as one section of docs/benchmarks.md, delimited by the lines
`<!-- reload:begin -->` and `<!-- reload:end -->` (replaced when present, appended otherwise;
bench.py keeps that section when it rewrites the file).

1. Throughput under reloads: one shared turnpike-echo upstream, each proxy on its own loopback
   port with the same config as bench/run.sh. In interleaved rounds each proxy is measured with
   wrk once WITHOUT reloads and once WITH RELOAD_RATE (default 5) reloads per second, alternating
   between two valid configs that differ in one timeout:
     Turnpike  write-temp-then-rename of its config file (inotify watch, debounce 20 ms); the
               applied count in GET /config/status must match the writes, or the run fails;
     nginx     config file rewritten the same way, then SIGHUP to the master; reloads counted
               from the "reconfiguring" notices in its error log;
     HAProxy   master-worker mode (-W), config rewritten, then SIGUSR2 to the master; reloads
               counted from the master's "Reexecuting Master process" notices.
   Any non-2xx answer or wrk socket error fails a Turnpike run; the peers' errors are reported.
2. File-write-to-serving latency: a `respond` route on GET /version whose body changes on every
   reload; time from just before the rename (or before sending POST /reload) to the first answer
   with the new body, polled over persistent connections. Scenarios: watch with debounce 20 ms,
   watch with the default debounce (100 ms), and watch off + POST /reload on the admin listener.
Every process it starts is stopped by PID at the end (also on SIGINT/SIGTERM); the PIDs are also
written to $WORKDIR/pids so reload.sh's trap can stop them if this process is killed outright.
"""

import datetime
import http.client
import json
import math
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench  # noqa: E402  (bench/bench.py: shared helpers)
from bench import (Procs, descendants, env_int, fmt, free_ports, http_get, render, run_wrk,  # noqa: E402
                   tail, wait_for_line, wait_http_ok)

PROXIES = ("turnpike", "nginx", "haproxy")
BEGIN, END = bench.RELOAD_BEGIN, bench.RELOAD_END
LATENCY_SCENARIOS = (
    # name, reload block, trigger, label
    ("file-20ms", "reload: {watch: true, debounce: 20ms}", "file", "file watch, `debounce: 20ms`"),
    ("file-default", "reload: {watch: true}", "file", "file watch, default debounce"),
    ("admin-post", "reload: {watch: false}", "admin", "`POST /reload` (watch off)"),
)


def log(msg):
    print(f"[reload {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Settings:
    def __init__(self, argv):
        self.quick = "--quick" in argv
        self.rounds = env_int("ROUNDS", 1 if self.quick else 3)
        self.duration = env_int("DURATION", 3 if self.quick else 10)
        self.warmup = env_int("WARMUP", 1 if self.quick else 2)
        self.reload_rate = env_int("RELOAD_RATE", 5)  # reloads per second during the WITH runs
        self.latency_n = env_int("LATENCY_N", 10 if self.quick else 50)
        self.connections = env_int("CONNECTIONS", 64)
        self.threads = env_int("THREADS", 2)
        self.echo_threads = env_int("ECHO_THREADS", 1)
        self.echo_cpus = os.environ.get("ECHO_CPUS", "")
        self.path = "/"
        self.proxies = [p for p in os.environ.get("PROXIES", " ".join(PROXIES)).split() if p in PROXIES]
        self.turnpike_bin = os.environ["TURNPIKE_BIN"]
        self.echo_bin = os.environ["ECHO_BIN"]
        self.build_dir = os.environ.get("BUILD_DIR", "")
        self.workdir = os.environ["WORKDIR"]
        self.out = os.environ["OUT"]
        self.turnpike_build_error = os.environ.get("TURNPIKE_BUILD_ERROR", "")
        self.debounce = "20ms"  # reload.debounce of the Turnpike under wrk load
        self.pause = 1.0  # seconds before every measured run
        self.poll_sleep = 0.0005  # seconds between polls in the latency phase
        self.poll_conns = 4  # persistent connections polled round-robin in the latency phase
        self.latency_timeout = 5.0  # seconds an iteration may wait for the new body
        per_run = self.duration + self.pause + 8  # + settling after reloads
        self.budget = (len(self.proxies) * (2 * self.rounds * per_run + self.warmup + 30)
                       + len(LATENCY_SCENARIOS) * (self.latency_n * 0.5 + 30)) * 2 + 120


# ----------------------------------------------------------------------------------------------
# Config files


def write_atomic(path, text):
    """Write text to a temp file in the same directory, then rename it over path."""
    tmp = os.path.join(os.path.dirname(path), "." + os.path.basename(path) + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


def swap(text, old, new, what):
    if text.count(old) != 1:
        raise RuntimeError(f"{what}: expected exactly one '{old}' in the rendered template")
    return text.replace(old, new)


def turnpike_configs(listen, admin, upstream, reload_block):
    a = render("turnpike.yaml.in", LISTEN=listen, ADMIN=admin, UPSTREAM=upstream)
    a = a.rstrip("\n") + "\n" + reload_block + "\n"
    b = swap(a, "    timeout: 15s\n", "    timeout: 16s\n", "turnpike.yaml.in")
    return [a, b]


def nginx_configs(listen, upstream, workdir):
    a = render("nginx.conf.in", LISTEN=listen, UPSTREAM=upstream, WORKDIR=workdir)
    # notice level: nginx logs "signal 1 (SIGHUP) received ..., reconfiguring" for each reload.
    a = swap(a, "nginx-error.log warn;", "nginx-error.log notice;", "nginx.conf.in")
    b = swap(a, "proxy_read_timeout 15s;", "proxy_read_timeout 16s;", "nginx.conf.in")
    return [a, b]


def haproxy_configs(listen, upstream, workdir):
    a = render("haproxy.cfg.in", LISTEN=listen, UPSTREAM=upstream, WORKDIR=workdir)
    b = swap(a, "timeout server 15s", "timeout server 16s", "haproxy.cfg.in")
    return [a, b]


def latency_config(listen, admin, upstream, reload_block, body):
    text = render("turnpike.yaml.in", LISTEN=listen, ADMIN=admin, UPSTREAM=upstream)
    route = f'routes:\n  - name: version\n    match: {{path: /version}}\n    respond: {{status: 200, body: "{body}"}}\n'
    text = swap(text, "routes:\n", route, "turnpike.yaml.in")
    return text.rstrip("\n") + "\n" + reload_block + "\n"


def count_in_file(path, pattern):
    try:
        with open(path, errors="replace") as f:
            return len(re.findall(pattern, f.read(), re.M))
    except FileNotFoundError:
        return 0


def admin_json(port, method, path, timeout=3.0):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, headers={"Host": f"127.0.0.1:{port}", "Content-Length": "0"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"null")
    finally:
        conn.close()


# ----------------------------------------------------------------------------------------------
# Proxies under reload


class Proxy:
    """A running proxy, its two alternating configs, how to reload it and how to count reloads."""

    def __init__(self, name, proc, port, cfg, texts, logfile, admin_port=None):
        self.name, self.proc, self.port, self.cfg, self.texts = name, proc, port, cfg, texts
        self.logfile, self.admin_port = logfile, admin_port
        self.current = 0  # which of texts is in the file now

    def write_next(self):
        self.current ^= 1
        write_atomic(self.cfg, self.texts[self.current])

    def trigger(self):
        """Reload once: rewrite the file, and signal the peers."""
        self.write_next()
        if self.name == "nginx":
            os.kill(self.proc.pid, signal.SIGHUP)
        elif self.name == "haproxy":
            os.kill(self.proc.pid, signal.SIGUSR2)
        # Turnpike: the inotify watch picks up the rename.

    def counters(self):
        """{'applied': n, 'rejected': n, ...} as far as the proxy tells."""
        if self.name == "turnpike":
            try:
                st, body = admin_json(self.admin_port, "GET", "/config/status")
                r = body["reloads"]
                return {"applied": r["applied"], "rejected": r["rejected"], "unchanged": r["unchanged"],
                        "generation": body["generation"]}
            except (OSError, http.client.HTTPException, ValueError, KeyError, TypeError) as e:
                return {"error": f"{type(e).__name__}: {e}"}
        if self.name == "nginx":  # one "signal 1 (SIGHUP) received" and one ": reconfiguring" per reload
            return {"applied": count_in_file(self.logfile, r": reconfiguring$"),
                    "rejected": count_in_file(self.logfile, r"\[emerg\]")}
        # HAProxy master: "Reloading HAProxy" when it handles SIGUSR2, "Loading success." once the new
        # worker runs (also once at start-up; only differences are used).
        return {"applied": count_in_file(self.logfile, r"Loading success"),
                "received": count_in_file(self.logfile, r"Reloading HAProxy"),
                "rejected": count_in_file(self.logfile, r"\[ALERT\].*(?:[Ff]ail|[Ee]rror)")}

    def settle(self, before, sent, timeout=8.0):
        """Wait until the reloads we sent are acknowledged (or, for the peers, the count has stopped
        moving for 0.5 s: they may coalesce signals) and the peers' old workers are gone."""
        deadline = time.monotonic() + timeout
        last, still_since = None, time.monotonic()
        while True:
            now = self.counters()
            applied = now.get("applied", 0) - before.get("applied", 0)
            if now != last:
                last, still_since = now, time.monotonic()
            done = applied >= sent or (self.name != "turnpike" and time.monotonic() - still_since >= 0.5)
            old_gone = True
            if self.name == "nginx":  # master + 2 workers
                old_gone = len(descendants(self.proc.pid)) <= 2
            elif self.name == "haproxy":  # master + 1 worker
                old_gone = len(descendants(self.proc.pid)) <= 1
            if (done and old_gone) or time.monotonic() > deadline or self.proc.poll() is not None:
                return now
            time.sleep(0.05)


def proxy_cpu_delta(before, after):
    """CPU seconds of a process tree between two bench.cpu_sample()s, counting processes that
    exited in between (reaped by the root) only with their CPU time after `before`."""
    (b, b_reaped), (a, a_reaped) = before, after
    total = a_reaped - b_reaped
    for pid, (own, _ns) in a.items():
        total += own - b.get(pid, (0.0, 0))[0]
    for pid, (own, _ns) in b.items():
        if pid not in a:
            total -= own
    return total


class Reloader(threading.Thread):
    """Reloads `proxy` `rate` times a second until `stop_at` (monotonic) or stop()."""

    def __init__(self, proxy, rate, stop_at):
        super().__init__(daemon=True)
        self.proxy, self.interval, self.stop_at = proxy, 1.0 / rate, stop_at
        self.sent, self.errors, self.late = 0, [], 0
        self._halt = threading.Event()

    def run(self):
        nxt = time.monotonic() + self.interval
        while not self._halt.is_set() and nxt < self.stop_at:
            if self._halt.wait(max(0.0, nxt - time.monotonic())):
                break
            if time.monotonic() - nxt > self.interval / 2:
                self.late += 1
            try:
                self.proxy.trigger()
                self.sent += 1
            except OSError as e:
                self.errors.append(f"{type(e).__name__}: {e}")
                if len(self.errors) > 5:
                    break
            nxt += self.interval

    def stop(self):
        self._halt.set()
        self.join(timeout=5)


def start_proxy(s, procs, name, up_addr, status):
    """Start one proxy with its first config; returns a Proxy answering 200, or None."""
    port, admin_port = free_ports(2)
    listen = f"127.0.0.1:{port}"
    logfile = os.path.join(s.workdir, f"{name}.log")
    try:
        if name == "turnpike":
            if not os.access(s.turnpike_bin, os.X_OK):
                status[name] = {"state": "failed", "detail": "not built: " + (s.turnpike_build_error or s.turnpike_bin)}
                return None
            d = os.path.join(s.workdir, "turnpike-reload")  # own directory: the watch sees only this file
            os.makedirs(d, exist_ok=True)
            cfg = os.path.join(d, "turnpike.yaml")
            texts = turnpike_configs(listen, f"127.0.0.1:{admin_port}", up_addr,
                                     f"reload: {{watch: true, debounce: {s.debounce}}}")
            for i, t in enumerate(texts):
                write_atomic(cfg, t)
                chk = subprocess.run([s.turnpike_bin, "check", "-c", cfg], capture_output=True, text=True, timeout=20)
                if chk.returncode != 0:
                    status[name] = {"state": "failed", "detail": f"`turnpike check` rejected config {'AB'[i]}: "
                                    + (chk.stdout + chk.stderr).strip()[-400:].replace("\n", " ")}
                    return None
            write_atomic(cfg, texts[0])
            cmd = [s.turnpike_bin, "-c", cfg]
        elif name == "nginx":
            for sub in ("client-body", "proxy-temp", "fastcgi-temp", "uwsgi-temp", "scgi-temp"):
                os.makedirs(os.path.join(s.workdir, f"nginx-{sub}"), exist_ok=True)
            cfg = os.path.join(s.workdir, "nginx.conf")
            texts = nginx_configs(listen, up_addr, s.workdir)
            write_atomic(cfg, texts[0])
            logfile = os.path.join(s.workdir, "nginx-error.log")
            cmd = ["nginx", "-c", cfg, "-p", s.workdir, "-e", logfile]
        else:
            cfg = os.path.join(s.workdir, "haproxy.cfg")
            texts = haproxy_configs(listen, up_addr, s.workdir)
            write_atomic(cfg, texts[0])
            cmd = ["haproxy", "-W", "-db", "-f", cfg]
        if not bench.shutil_which(cmd[0]) and not os.path.exists(cmd[0]):
            status[name] = {"state": "failed", "detail": f"{cmd[0]} not installed"}
            return None
        proc = procs.start(name, cmd, logfile if name != "nginx" else os.path.join(s.workdir, "nginx.out"))
    except (OSError, subprocess.SubprocessError, RuntimeError) as e:
        status[name] = {"state": "failed", "detail": f"could not start: {e}"}
        return None
    ok, detail = wait_http_ok(port, s.path, proc, timeout=15)
    if not ok:
        status[name] = {"state": "failed", "detail": f"{detail}; log tail: {tail(logfile, 5)}"}
        procs.stop(name, proc)
        return None
    p = Proxy(name, proc, port, cfg, texts, logfile, admin_port if name == "turnpike" else None)
    status[name] = {"state": "ok", "detail": f"200 on GET {s.path}"}
    log(f"{name} ready on {listen}")
    return p


def measure(s, p, echo, mode, rnd, order):
    """One wrk run against proxy p, with (mode 'with') or without reloads."""
    entry = {"round": rnd, "order": order, "proxy": p.name, "mode": mode}
    if p.proc.poll() is not None:
        entry["skipped"] = f"proxy exited (status {p.proc.returncode})"
        return entry
    time.sleep(s.pause)
    before = p.counters()
    reloader = None
    if mode == "with":
        reloader = Reloader(p, s.reload_rate, time.monotonic() + s.duration - 0.15)
        reloader.start()
    cpu_before, busy_before = bench.cpu_sample(p.proc.pid), bench.machine_busy_s()
    try:
        r = run_wrk(s, p.port, s.duration, p.proc, echo)
    finally:
        if reloader:
            reloader.stop()
    cpu_after, busy_after = bench.cpu_sample(p.proc.pid), bench.machine_busy_s()
    # bench.cpu_delta counts a worker that exits during the run (reaped into its master's child
    # time) with all the CPU it used before the run too; take that pre-run part out again.
    cpu = proxy_cpu_delta(cpu_before, cpu_after)
    if cpu is not None and r.get("requests"):
        r["cpu_s"] = cpu
        r["cpu_us_per_req"] = cpu / r["requests"] * 1e6
        if r.get("wall_s"):
            r["foreign_cpus"] = max(0.0, (busy_after - busy_before) - cpu - r.get("echo_cpu_s", 0)
                                    - r.get("wrk_cpu_s", 0)) / r["wall_s"]
    sent = reloader.sent if reloader else 0
    after = p.settle(before, sent) if reloader else p.counters()
    raw = r.pop("raw")
    with open(os.path.join(s.workdir, f"wrk-{rnd}-{p.name}-{mode}.txt"), "w") as f:
        f.write(raw)
    entry.update(r)
    entry["sent"] = sent
    entry["applied"] = after.get("applied", 0) - before.get("applied", 0) if "error" not in after else None
    entry["rejected"] = after.get("rejected", 0) - before.get("rejected", 0) if "error" not in after else None
    if "received" in after:
        entry["received"] = after["received"] - before.get("received", 0)
    entry["counter_error"] = after.get("error")
    entry["reloader_errors"] = reloader.errors if reloader else []
    entry["reloader_late"] = reloader.late if reloader else 0
    # A measurement exists (peers' runs count even with errors, which are reported) ...
    entry["valid"] = bool(r.get("requests") and r.get("rps") is not None and r.get("p99_ms") is not None
                          and r.get("alive"))
    entry["clean"] = bool(r.get("non2xx") == 0 and r.get("socket_errors") == 0 and r.get("wrk_exit") == 0)
    problems = []
    if not entry["valid"]:
        problems.append("no valid wrk measurement" + ("" if r.get("alive") else " (proxy died)"))
    if not entry["clean"]:
        problems.append(f"non-2xx {r.get('non2xx')}, socket errors {r.get('socket_errors')}, wrk exit {r.get('wrk_exit')}")
    if mode == "with":
        if entry["applied"] != sent:
            problems.append(f"{sent} reloads sent, {entry['applied']} applied"
                            + (f" (master handled {entry['received']} SIGUSR2)" if "received" in entry else ""))
        if entry["rejected"]:
            problems.append(f"{entry['rejected']} rejected")
        if entry["reloader_errors"]:
            problems.append("reloader: " + "; ".join(entry["reloader_errors"][:2]))
    if entry["counter_error"]:
        problems.append("status: " + entry["counter_error"])
    # ... but a Turnpike run with any error fails.
    entry["ok"] = entry["valid"] and (p.name != "turnpike" or not problems)
    entry["problems"] = problems
    if problems:
        entry["raw_tail"] = raw[-600:]
    log(f"round {rnd} {p.name:8s} {mode:7s}: {fmt(r.get('rps'), 0)} req/s, p99 {fmt(r.get('p99_ms'), 2)} ms"
        + (f", reloads sent {sent} applied {entry['applied']}" if mode == "with" else "")
        + (f"  [{'FAILED' if not entry['ok'] else 'note'}: {'; '.join(problems)}]" if problems else ""))
    return entry


# ----------------------------------------------------------------------------------------------
# File-write-to-serving latency


class Poller:
    """Persistent connections to GET /version, polled round-robin."""

    def __init__(self, port, n):
        self.port = port
        self.conns = [self._new() for _ in range(n)]

    def _new(self):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2.0)
        c.connect()
        return c

    def get(self, i):
        for attempt in (0, 1):
            try:
                c = self.conns[i]
                c.request("GET", "/version", headers={"Host": f"127.0.0.1:{self.port}"})
                resp = c.getresponse()
                body = resp.read()
                return resp.status, body
            except (OSError, http.client.HTTPException):
                self.conns[i].close()
                self.conns[i] = self._new()
                if attempt:
                    raise
        return None, b""

    def close(self):
        for c in self.conns:
            c.close()


def percentile(vals, q):
    """Nearest-rank percentile (q in 0..100)."""
    v = sorted(vals)
    return v[max(0, math.ceil(q / 100 * len(v)) - 1)] if v else None


def latency_scenario(s, procs, up_addr, name, reload_block, trigger, rng):
    res = {"name": name, "trigger": trigger, "reload_block": reload_block, "first_ms": [], "all_ms": [],
           "post_ms": [], "timeouts": 0, "non200": 0, "n": s.latency_n}
    port, admin_port = free_ports(2)
    d = os.path.join(s.workdir, f"latency-{name}")
    os.makedirs(d, exist_ok=True)
    cfg = os.path.join(d, "turnpike.yaml")
    mk = lambda body: latency_config(f"127.0.0.1:{port}", f"127.0.0.1:{admin_port}", up_addr, reload_block, body)
    write_atomic(cfg, mk("v0"))
    logfile = os.path.join(s.workdir, f"turnpike-latency-{name}.log")
    proc = procs.start(f"turnpike ({name})", [s.turnpike_bin, "-c", cfg], logfile)
    poller = None
    try:
        ok, detail = wait_http_ok(port, "/version", proc, timeout=15)
        if not ok or detail[1] != b"v0":
            res["error"] = f"did not serve v0 on /version: {detail if not ok else detail[1][:100]!r}"
            return res
        st, effective = admin_json(admin_port, "GET", "/config")
        res["debounce_effective"] = (effective.get("config", {}).get("reload", {}).get("debounce")
                                     if isinstance(effective, dict) else None)
        res["watch_effective"] = (effective.get("config", {}).get("reload", {}).get("watch")
                                  if isinstance(effective, dict) else None)
        before = admin_json(admin_port, "GET", "/config/status")[1]["reloads"]
        poller = Poller(port, s.poll_conns)
        admin = http.client.HTTPConnection("127.0.0.1", admin_port, timeout=5.0)
        for i in range(1, s.latency_n + 1):
            if proc.poll() is not None:
                res["error"] = f"turnpike exited with status {proc.returncode}: {tail(logfile, 5)}"
                return res
            new = f"v{i}".encode()
            text = mk(f"v{i}")
            if trigger == "file":
                tmp = os.path.join(d, ".turnpike.yaml.tmp")
                with open(tmp, "w") as f:
                    f.write(text)
                    f.flush()
                    os.fsync(f.fileno())
                t0 = time.perf_counter()
                os.rename(tmp, cfg)
            else:
                write_atomic(cfg, text)  # watch is off: nothing happens until the POST
                t0 = time.perf_counter()
                admin.request("POST", "/reload", headers={"Host": f"127.0.0.1:{admin_port}", "Content-Length": "0"})
                resp = admin.getresponse()
                body = json.loads(resp.read() or b"null")
                res["post_ms"].append((time.perf_counter() - t0) * 1e3)
                if resp.status != 200 or (body or {}).get("last_reload", {}).get("result") != "applied":
                    res.setdefault("post_errors", []).append(f"HTTP {resp.status}: {str(body)[:200]}")
            seen = set()
            first = None
            deadline = t0 + s.latency_timeout
            k = 0
            while time.perf_counter() < deadline:
                j = k % s.poll_conns
                k += 1
                status, body = poller.get(j)
                now = time.perf_counter()
                if status != 200:
                    res["non200"] += 1
                elif body == new:
                    if first is None:
                        first = now - t0
                    seen.add(j)
                    if len(seen) == s.poll_conns:
                        break
                time.sleep(s.poll_sleep)
            if first is None:
                res["timeouts"] += 1
            else:
                res["first_ms"].append(first * 1e3)
                if len(seen) == s.poll_conns:
                    res["all_ms"].append((time.perf_counter() - t0) * 1e3)
            time.sleep(0.05 + rng.random() * 0.05)  # quiet gap; jitter so we do not phase-lock with timers
        admin.close()
        # Let a late reload land before counting.
        time.sleep(0.3)
        after = admin_json(admin_port, "GET", "/config/status")[1]["reloads"]
        res["applied"] = after["applied"] - before["applied"]
        res["rejected"] = after["rejected"] - before["rejected"]
        res["unchanged"] = after["unchanged"] - before["unchanged"]
    except (OSError, http.client.HTTPException, ValueError, KeyError, TypeError) as e:
        res["error"] = f"{type(e).__name__}: {e}"
    finally:
        if poller:
            poller.close()
        procs.stop(f"turnpike ({name})", proc)
    res["ok"] = (not res.get("error") and res["timeouts"] == 0 and res["non200"] == 0
                 and res.get("applied") == s.latency_n and not res.get("rejected") and not res.get("post_errors"))
    f = res["first_ms"]
    log(f"latency {name}: n={len(f)} median {fmt(statistics.median(f) if f else None, 1)} ms, "
        f"p99 {fmt(percentile(f, 99), 1)} ms, max {fmt(max(f) if f else None, 1)} ms, applied "
        f"{res.get('applied')}/{s.latency_n}, debounce {res.get('debounce_effective')}"
        + ("" if res["ok"] else f"  FAILED ({res.get('error') or ''} timeouts {res['timeouts']} non-200 {res['non200']} "
                                f"post errors {len(res.get('post_errors', []))})"))
    return res


# ----------------------------------------------------------------------------------------------
# Report


def med(rs, key):
    vals = [r[key] for r in rs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def ratio(a, b):
    return a / b if a is not None and b else None


def render_section(s, info, vers, status, results, lat, elapsed):
    L = [BEGIN, "## Hot reload\n"]
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    mode = "quick smoke run (`bench/reload.sh --quick`)" if s.quick else "full run (`bench/reload.sh`)"
    L.append(f"Generated by `bench/reload.sh` — {mode} — on {now}, in {elapsed:.0f} s, on {info['nproc']} CPUs "
             f"({info['cpu']}, load average at start {' '.join(info['loadavg_at_start'])}). Versions: "
             f"`{vers.get('turnpike')}`, `{vers.get('nginx')}`, `{vers.get('haproxy')}`, `{vers.get('wrk')}`, "
             f"git `{vers.get('git')}`, build `{vers.get('build')}`. Regenerate with `bench/reload.sh`; "
             "`bench/run.sh` keeps this section.\n")
    L.append("### Method\n")
    L.append(f"- **Throughput under reloads.** Same setup as the main benchmark (`bench/run.sh`): one `turnpike-echo --threads {s.echo_threads}` "
             "upstream and each proxy with its `bench/*.in` config on its own loopback port. "
             f"`wrk -t{s.threads} -c{s.connections} -d{s.duration}s --latency` on `GET {s.path}`; {s.rounds} "
             "round(s), in each round every proxy is measured once *without* and once *with* reloads (proxy "
             "order rotated each round, the without/with order flipped each round), 1 s pause before each "
             f"run; a {s.warmup} s warm-up per proxy is not counted. During a *with* run the driver reloads "
             f"the proxy {s.reload_rate} times a second (from 0.2 s after the start until 0.15 s before the "
             "end), alternating between two valid configs that differ in one timeout, so every reload "
             "really changes the configuration:")
    L.append(f"  - Turnpike: `reload: {{watch: true, debounce: {s.debounce}}}`; route `timeout: 15s` ↔ `16s`; "
             "the file is written to a temp file in the same directory and renamed over the config "
             "(the inotify watch triggers the reload; no signal). After the run the applied-reload count in "
             "`GET /config/status` must equal the number of writes, with none rejected.")
    L.append("  - nginx: `proxy_read_timeout 15s` ↔ `16s`, same write-temp-then-rename, then SIGHUP to the "
             "master (what `nginx -s reload` sends); reloads counted from the `reconfiguring` notices "
             "in its error log (level `notice` for this benchmark).")
    L.append("  - HAProxy: master-worker mode (`haproxy -W -db -f cfg`), `timeout server 15s` ↔ `16s`, same "
             "write, then SIGUSR2 to the master; reloads counted from the master's `Loading success.` "
             "notices (a new worker is running). The master coalesces SIGUSR2s that arrive while it is "
             "still reloading, so fewer reloads than signals is expected there.")
    L.append("  After a *with* run the driver waits (up to 8 s, not measured) until every reload is acknowledged "
             "and the peers' old workers have exited. A Turnpike run with any non-2xx answer, wrk socket "
             "error or a reload count mismatch is **failed** and left out of the medians. nginx and HAProxy "
             "runs count even with errors; their errors are reported as measured.")
    L.append("- **File write to serving.** A Turnpike (same config plus a route `match: {path: /version}`, "
             "`respond: {status: 200, body: \"v<N>\"}`) is reloaded "
             f"{s.latency_n} times per scenario, each time with a new body; the driver then polls "
             f"`GET /version` over {s.poll_conns} persistent keep-alive connections, round-robin, with "
             f"{s.poll_sleep * 1e3:.1f} ms sleeps between polls (no other load), until the new body comes back. "
             "*first* is the time from just before the `rename()` (file scenarios) or just before sending "
             "`POST /reload` (admin scenario; watch off, the file is rewritten first, untimed) to the first "
             f"answer with the new body; *all conns* is until all {s.poll_conns} connections (spread over "
             "the 2 workers by `SO_REUSEPORT`) have seen it. 50–100 ms random quiet gap between "
             "iterations. The applied count must equal the iterations.")
    L.append("- **proxy CPU µs/req**: as in the main benchmark, utime+stime of all the proxy's processes over the "
             "run, divided by the requests wrk completed; the reload work (config parsing, new workers) is "
             "included. nginx/HAProxy workers that exit during the run are counted through the master's "
             "reaped-children time, minus what they had used before the run.")
    L.append("- p99 is nearest-rank: with fewer than 100 samples it is the largest sample.")
    L.append("")

    # Throughput
    L.append(f"### Throughput with and without {s.reload_rate} reloads/s (medians over {s.rounds} round(s))\n")
    L.append("| proxy | requests/s without | requests/s with | ratio with/without | p99 ms without | p99 ms with | "
             "ratio with/without | proxy CPU µs/req without / with | reloads sent / applied | "
             "non-2xx / socket errors with reloads | good runs |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    meds = {}
    for p in s.proxies:
        rs = results.get(p, [])
        if not rs or status[p]["state"] == "failed":
            L.append(f"| {p} | failed: {status[p].get('detail', '?').replace('|', '/')[:200]} | — | — | — | — | — | — | — | — | 0 |")
            continue
        wo = [r for r in rs if r["mode"] == "without" and r.get("ok")]
        wi = [r for r in rs if r["mode"] == "with" and r.get("ok")]
        m = {"rps_wo": med(wo, "rps"), "rps_wi": med(wi, "rps"), "p99_wo": med(wo, "p99_ms"), "p99_wi": med(wi, "p99_ms"),
             "cpu_wo": med(wo, "cpu_us_per_req"), "cpu_wi": med(wi, "cpu_us_per_req")}
        meds[p] = m
        all_wi = [r for r in rs if r["mode"] == "with" and not r.get("skipped")]
        sent = sum(r.get("sent", 0) for r in all_wi)
        applied = sum(r.get("applied") or 0 for r in all_wi)
        n2 = sum(r.get("non2xx") or 0 for r in all_wi)
        se = sum(r.get("socket_errors") or 0 for r in all_wi)
        good = sum(1 for r in rs if r.get("ok"))
        L.append(f"| {p} | {fmt(m['rps_wo'], 0)} | {fmt(m['rps_wi'], 0)} | {fmt(ratio(m['rps_wi'], m['rps_wo']), 3)} | "
                 f"{fmt(m['p99_wo'], 2)} | {fmt(m['p99_wi'], 2)} | {fmt(ratio(m['p99_wi'], m['p99_wo']), 3)} | "
                 f"{fmt(m['cpu_wo'], 1)} / {fmt(m['cpu_wi'], 1)} | {sent} / {applied} | {n2} / {se} | {good}/{2 * s.rounds} |")
    L.append("")
    # Paired ratios within each round.
    L.append("Paired ratios (with/without within each round, then the median over rounds):\n")
    L.append("| proxy | requests/s with/without | p99 with/without |\n|---|---:|---:|")
    for p in s.proxies:
        cells = []
        for key in ("rps", "p99_ms"):
            by = {}
            for r in results.get(p, []):
                if r.get("ok") and r.get(key) is not None:
                    by.setdefault(r["round"], {})[r["mode"]] = r[key]
            vals = [v["with"] / v["without"] for v in by.values() if "with" in v and v.get("without")]
            cells.append(f"{statistics.median(vals):.3f} ({len(vals)} rounds)" if vals else "—")
        L.append(f"| {p} | {cells[0]} | {cells[1]} |")
    L.append("")
    foreign = [r["foreign_cpus"] for p in s.proxies for r in results.get(p, []) if r.get("foreign_cpus") is not None]
    if foreign:
        L.append(f"Other load on the machine during the measured runs: median {statistics.median(foreign):.2f} CPUs, "
                 f"max {max(foreign):.2f} CPUs." + (" **The machine was busy with other work; the numbers are "
                                                    "noisy.**" if statistics.median(foreign) > 0.2 else "") + "\n")

    # Latency
    L.append("### File write to serving (Turnpike)\n")
    L.append("| trigger | debounce (effective) | samples | first: median ms | p90 ms | p99 ms | max ms | "
             "all conns: median ms | p99 ms | POST answer: median ms | applied | timeouts / non-200 |")
    L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in lat:
        label = next(l for n, _, _, l in LATENCY_SCENARIOS if n == r["name"])
        f, a, pm = r["first_ms"], r["all_ms"], r["post_ms"]
        deb = r.get("debounce_effective") if r.get("watch_effective") else "— (watch off)"
        L.append(f"| {label} | {deb or '?'} | {len(f)}/{r['n']} | {fmt(statistics.median(f) if f else None, 1)} | "
                 f"{fmt(percentile(f, 90), 1)} | {fmt(percentile(f, 99), 1)} | {fmt(max(f) if f else None, 1)} | "
                 f"{fmt(statistics.median(a) if a else None, 1)} | {fmt(percentile(a, 99), 1)} | "
                 f"{fmt(statistics.median(pm) if pm else None, 1)} | {r.get('applied', '—')}/{r['n']} | "
                 f"{r['timeouts']} / {r['non200']} |")
    if not lat:
        L.append("| not measured (Turnpike not built or not selected) | | | | | | | | | | | |")
    L.append("")
    L.append("With a file watch the latency is the debounce (quiet time after the last change) plus reading, "
             "validating and handing the new snapshot to the workers; the admin trigger has no debounce.\n")

    # Raw
    L.append("### Raw per-round numbers (throughput)\n")
    L.append("| round | order | proxy | reloads | requests | requests/s | p50 ms | p99 ms | proxy CPU µs/req | sent | "
             "applied | non-2xx | socket errors | other load (CPUs) | ok |")
    L.append("|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    runs = sorted((r for p in s.proxies for r in results.get(p, [])), key=lambda r: (r["round"], r["order"]))
    for r in runs:
        if r.get("skipped"):
            L.append(f"| {r['round']} | {r['order']} | {r['proxy']} | {r['mode']} | — | — | — | — | — | — | — | — | — | — | "
                     f"skipped: {r['skipped']} |")
            continue
        okcell = "yes" if r.get("ok") and not r.get("problems") else ("counted; " if r.get("ok") else "NO; ") \
            + "; ".join(r.get("problems", []))
        wi = r["mode"] == "with"
        L.append(f"| {r['round']} | {r['order']} | {r['proxy']} | {r['mode']} | {r.get('requests') or '—'} | "
                 f"{fmt(r.get('rps'), 0)} | {fmt(r.get('p50_ms'), 2)} | {fmt(r.get('p99_ms'), 2)} | "
                 f"{fmt(r.get('cpu_us_per_req'), 1)} | {r.get('sent') if wi else '—'} | {r.get('applied') if wi else '—'} | {r.get('non2xx', '—')} | "
                 f"{r.get('socket_errors', '—')} | {fmt(r.get('foreign_cpus'), 2)} | {okcell.replace('|', '/')} |")
    L.append("")
    L.append("Raw file-write-to-serving samples (*first*, ms, in order):\n")
    for r in lat:
        label = next(l for n, _, _, l in LATENCY_SCENARIOS if n == r["name"])
        L.append(f"- {label}: " + (", ".join(f"{x:.1f}" for x in r["first_ms"]) or "—")
                 + (f" — **error**: {r['error']}" if r.get("error") else ""))
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
    status = {p: {"state": "not started"} for p in s.proxies}
    results = {p: [] for p in s.proxies}
    lat = []
    rng = random.Random(1)
    deadline = t_start + s.budget
    try:
        # The shared upstream.
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

        # 1. Throughput with and without reloads.
        running = {}
        for name in s.proxies:
            p = start_proxy(s, procs, name, up_addr, status)
            if p:
                running[name] = p
        for name, p in running.items():
            if s.warmup > 0:
                r = run_wrk(s, p.port, s.warmup, p.proc, echo)
                log(f"warm-up {name}: {fmt(r.get('rps'), 0)} req/s")
        names = [p for p in s.proxies if p in running]
        for rnd in range(1, s.rounds + 1):
            k = (rnd - 1) % max(1, len(names))
            order = names[k:] + names[:k]
            modes = ("without", "with") if rnd % 2 else ("with", "without")
            pos = 0
            for name in order:
                for mode in modes:
                    pos += 1
                    if time.monotonic() + s.duration + 10 > deadline:
                        results[name].append({"round": rnd, "order": pos, "proxy": name, "mode": mode,
                                              "skipped": "time budget exhausted"})
                        continue
                    results[name].append(measure(s, running[name], echo, mode, rnd, pos))
        for name, p in running.items():
            if p.proc.poll() is not None:
                status[name]["state"] = "died"
                status[name]["note"] = f"exited with status {p.proc.returncode}; log tail:\n\n```\n{tail(p.logfile)}\n```"
            bad = [e for e in results[name] if e.get("problems")]
            if bad:
                status[name]["note"] = (status[name].get("note", "") + f"{len(bad)} run(s) with errors; first: "
                                        + "; ".join(bad[0]["problems"])
                                        + (f"; wrk output tail:\n\n```\n{bad[0]['raw_tail']}\n```"
                                           if bad[0].get("raw_tail") and name == "turnpike" else ""))
            procs.stop(name, p.proc)

        # 2. File write to serving (Turnpike only, nothing else running but the upstream).
        if "turnpike" in s.proxies and os.access(s.turnpike_bin, os.X_OK):
            for name, block, trigger, _ in LATENCY_SCENARIOS:
                if time.monotonic() + s.latency_n * 0.5 + 20 > deadline:
                    lat.append({"name": name, "first_ms": [], "all_ms": [], "post_ms": [], "timeouts": 0,
                                "non200": 0, "n": s.latency_n, "error": "time budget exhausted", "ok": False})
                    continue
                lat.append(latency_scenario(s, procs, up_addr, name, block, trigger, rng))
    finally:
        procs.stop_all()

    elapsed = time.monotonic() - t_start
    section, meds = render_section(s, info, vers, status, results, lat, elapsed)
    write_section(s.out, section)
    with open(os.path.join(s.workdir, "reload-results.json"), "w") as f:
        json.dump({"settings": vars(s), "machine": info, "versions": vers, "status": status,
                   "results": results, "latency": lat, "medians": meds}, f, indent=2, default=str)
    log(f"report section written to {s.out} ({elapsed:.0f} s)")
    for p, m in meds.items():
        log(f"  {p:9s} rps without {fmt(m['rps_wo'], 0):>8s} with {fmt(m['rps_wi'], 0):>8s} "
            f"ratio {fmt(ratio(m['rps_wi'], m['rps_wo']), 3)}; p99 without {fmt(m['p99_wo'], 2)} with "
            f"{fmt(m['p99_wi'], 2)} ms ratio {fmt(ratio(m['p99_wi'], m['p99_wo']), 3)}")
    for r in lat:
        f = r["first_ms"]
        log(f"  latency {r['name']:12s} median {fmt(statistics.median(f) if f else None, 1)} ms, "
            f"p99 {fmt(percentile(f, 99), 1)} ms, max {fmt(max(f) if f else None, 1)} ms")
    tp_failed = any(not r.get("ok") and not r.get("skipped") for r in results.get("turnpike", [])) \
        or any(not r.get("ok") for r in lat) or status.get("turnpike", {}).get("state") not in (None, "ok")
    if tp_failed:
        log("Turnpike had failed runs (see the report)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
