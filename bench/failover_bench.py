#!/usr/bin/python3
"""Failover side by side: Turnpike vs nginx vs HAProxy in front of three turnpike-echo endpoints,
each proxy configured as well as its documentation allows to route around a bad endpoint, under
wrk load, while one endpoint goes bad and comes back.

Driven by bench/failover.sh (which installs the peers and builds the binaries); stdlib only.

Scenarios (SCENARIOS below), each run once per proxy and round, in an order rotated per round,
with three fresh endpoints and a fresh proxy each time:
  kill    the endpoint is killed (SIGKILL), later started again on its port
  freeze  the endpoint is stopped (SIGSTOP), later continued (SIGCONT)
  503     the endpoint answers 503 to everything (turnpike-echo's /control/status/503), later
          normally again
Timeline: load from t=0; the event at EVENT_AT; the endpoint restored at RESTORE_AT; the end at
END_AT. Measured per run:
  failed        requests that did not get a 200: wrk's non-2xx and socket errors, plus the
                probe client's
  p99 (ms)      the probe client's p99 latency from the event to the restore
  isolated (s)  from the event until the bad endpoint gets no more traffic: for 503 its last
                request counted by its /stats; for kill and freeze (which cannot be asked) the
                end of the last probe request that failed or took over SLOW_MS
  recovered (s) from the restore until the endpoint serves a request again (its /stats count
                moves; health checks of /health are not counted)
The probe client is two threads of sequential keep-alive GETs, each request timed. Writes the
"<!-- failover:begin -->" ... "<!-- failover:end -->" section of the report.
"""

import http.client
import os
import signal
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402
from bench import log  # noqa: E402

BEGIN = "<!-- failover:begin -->"
END = "<!-- failover:end -->"
SCENARIOS = ("kill", "freeze", "503")
SLOW_MS = 100.0


class Settings:
    def __init__(self, argv):
        self.quick = "--quick" in argv
        self.rounds = bench.env_int("ROUNDS", 1 if self.quick else 3)
        self.event_at = 3.0
        self.restore_at = self.event_at + (4.0 if self.quick else 8.0)
        self.end_at = self.restore_at + (5.0 if self.quick else 8.0)
        self.connections = bench.env_int("CONNECTIONS", 16)
        self.threads = bench.env_int("THREADS", 2)
        self.proxies = os.environ.get("PROXIES", "turnpike nginx haproxy").split()
        self.scenarios = os.environ.get("SCENARIOS", " ".join(SCENARIOS)).split()
        self.turnpike_bin = os.environ["TURNPIKE_BIN"]
        self.echo_bin = os.environ["ECHO_BIN"]
        self.workdir = os.environ["WORKDIR"]
        self.out = os.environ["OUT"]


# ----------------------------------------------------------------------------------------------
# Proxy configurations: each as good at failover as its documentation allows.

TURNPIKE_YAML = """# bench/failover_bench.py: Turnpike in front of three endpoints.
workers: 2
admin: {{listen: "127.0.0.1:{admin}"}}
listeners:
  - {{name: fo, listen: "127.0.0.1:{port}"}}
clusters:
  - name: pool
    endpoints: [{endpoints}]
    connect_timeout: 1s
    # Active checks of /health every second (every 250 ms while unhealthy); out after 2
    # failures, back after 2 passes (and a passing endpoint leaves its outlier ejection early).
    health_check: {{http: {{path: /health}}, interval: 1s, unhealthy_interval: 250ms,
                    timeout: 500ms, unhealthy_threshold: 2, healthy_threshold: 2}}
    outlier_detection: {{consecutive_5xx: 3, consecutive_gateway_failures: 2,
                         base_ejection_time: 10s}}
    # Room for every request caught on a bad endpoint to be retried at once.
    limits: {{max_retries: 1000}}
routes:
  - name: all
    match: {{path_prefix: /}}
    backend: pool
    timeout: 5s
    retry: {{attempts: 3, on: [gateway-error], per_try_timeout: 500ms,
             backoff: {{base: 1ms, max: 5ms}}, budget: {{percent: 100, min_concurrency: 32}}}}
access_log: {{path: "off"}}
"""

NGINX_CONF = """# bench/failover_bench.py: nginx in front of three endpoints. nginx (open source) has no active
# health checks: max_fails/fail_timeout take a failing server out for fail_timeout, and
# proxy_next_upstream sends the request on.
worker_processes 2;
daemon off;
pid {workdir}/nginx-fo.pid;
error_log {workdir}/nginx-fo-error.log crit;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {workdir}/nginx-fo-body;
    proxy_temp_path {workdir}/nginx-fo-proxy;
    fastcgi_temp_path {workdir}/nginx-fo-fastcgi;
    uwsgi_temp_path {workdir}/nginx-fo-uwsgi;
    scgi_temp_path {workdir}/nginx-fo-scgi;
    upstream pool {{
{servers}
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port} reuseport;
        location / {{
            proxy_pass http://pool;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_next_upstream error timeout http_502 http_503 http_504;
            proxy_next_upstream_tries 3;
            proxy_connect_timeout 1s;
            proxy_read_timeout 500ms;
            proxy_send_timeout 500ms;
        }}
    }}
}}
"""

HAPROXY_CFG = """# bench/failover_bench.py: HAProxy in front of three endpoints.
global
    nbthread 2
    maxconn 8192
defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 500ms
    retries 2
    option redispatch 1
    retry-on conn-failure empty-response response-timeout 502 503 504
    option http-keep-alive
frontend fo
    bind 127.0.0.1:{port}
    default_backend pool
backend pool
    balance roundrobin
    option httpchk GET /health
    default-server inter 1s downinter 250ms fall 2 rise 2 observe layer7 error-limit 3 on-error mark-down
{servers}
"""


def proxy_cmd(s, name, port, endpoints):
    if name == "turnpike":
        path = os.path.join(s.workdir, "turnpike-fo.yaml")
        with open(path, "w") as f:
            f.write(TURNPIKE_YAML.format(admin=bench.free_ports(1)[0], port=port,
                                         endpoints=", ".join('"%s"' % e for e in endpoints)))
        return [s.turnpike_bin, "-c", path]
    if name == "nginx":
        path = os.path.join(s.workdir, "nginx-fo.conf")
        for d in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            os.makedirs(os.path.join(s.workdir, "nginx-fo-" + d), exist_ok=True)
        servers = "\n".join("        server %s max_fails=1 fail_timeout=10s;" % e for e in endpoints)
        with open(path, "w") as f:
            f.write(NGINX_CONF.format(workdir=s.workdir, port=port, servers=servers))
        return ["nginx", "-c", path]
    path = os.path.join(s.workdir, "haproxy-fo.cfg")
    servers = "\n".join("    server e%d %s check" % (i, e) for i, e in enumerate(endpoints))
    with open(path, "w") as f:
        f.write(HAPROXY_CFG.format(port=port, servers=servers))
    return ["haproxy", "-f", path]


# ----------------------------------------------------------------------------------------------
# One run


class Endpoint:
    def __init__(self, s, procs, name, port):
        self.s, self.procs, self.name, self.port = s, procs, name, port
        self.proc = None

    def start(self, status=None):
        cmd = [self.s.echo_bin, "--listen", "127.0.0.1:%d" % self.port, "--name", self.name]
        if status:
            cmd += ["--status", str(status)]
        self.proc = self.procs.start("echo-" + self.name, cmd,
                                     os.path.join(self.s.workdir, "echo-%s.log" % self.name))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if self.stats() is not None:
                return
            time.sleep(0.02)
        raise RuntimeError("endpoint %s did not start" % self.name)

    def stats(self):
        try:
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=0.3)
            c.request("GET", "/stats")
            body = c.getresponse().read()
            c.close()
            return int(body.split(b":")[1].split(b"}")[0])
        except (OSError, http.client.HTTPException, ValueError, IndexError):
            return None

    def control(self, status):
        """Every request answered `status` from now on (0: normally again)."""
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
        c.request("GET", "/control/status/%d" % status)
        c.getresponse().read()
        c.close()

    def kill(self):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self):
        if self.proc:
            try:
                os.kill(self.proc.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
            self.procs.stop("echo-" + self.name, self.proc)


class Probe(threading.Thread):
    """Sequential keep-alive GETs, each timed: (start, end, ok)."""

    def __init__(self, port, stop_at):
        super().__init__(daemon=True)
        self.port, self.stop_at = port, stop_at
        self.samples = []

    def run(self):
        conn = None
        while time.monotonic() < self.stop_at:
            t0 = time.monotonic()
            ok = False
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/probe")
                r = conn.getresponse()
                r.read()
                ok = r.status == 200
                if r.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException):
                if conn is not None:
                    conn.close()
                conn = None
            self.samples.append((t0, time.monotonic(), ok))
            time.sleep(0.002)


class StatsWatch(threading.Thread):
    """Polls an endpoint's /stats every 50 ms: [(time, count or None)]."""

    def __init__(self, endpoint, stop_at):
        super().__init__(daemon=True)
        self.endpoint, self.stop_at = endpoint, stop_at
        self.samples = []

    def run(self):
        while time.monotonic() < self.stop_at:
            self.samples.append((time.monotonic(), self.endpoint.stats()))
            time.sleep(0.05)


def p99(values):
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(round(0.99 * (len(v) - 1))))]


def run_once(s, procs, proxy, scenario):
    ports = bench.free_ports(4)
    eps = [Endpoint(s, procs, "e%d" % i, ports[i]) for i in range(3)]
    for e in eps:
        e.start()
    bad = eps[1]
    listen = ports[3]
    pproc = procs.start(proxy, proxy_cmd(s, proxy, listen, ["127.0.0.1:%d" % e.port for e in eps]),
                        os.path.join(s.workdir, "%s-fo.log" % proxy))
    ok, detail = bench.wait_http_ok(listen, "/", pproc, 15)
    if not ok:
        raise RuntimeError("%s did not start: %s" % (proxy, detail))
    time.sleep(1.5)  # first health checks done
    t0 = time.monotonic()
    stop_at = t0 + s.end_at
    wrk = subprocess.Popen(["wrk", "-t", str(s.threads), "-c", str(s.connections), "-d",
                            "%ds" % int(s.end_at), "--timeout", "5s",
                            "http://127.0.0.1:%d/" % listen],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    probes = [Probe(listen, stop_at) for _ in range(2)]
    watch = StatsWatch(bad, stop_at + 0.2)
    for t in probes + [watch]:
        t.start()
    time.sleep(max(0.0, t0 + s.event_at - time.monotonic()))
    event = time.monotonic()
    if scenario == "kill":
        bad.kill()
    elif scenario == "freeze":
        os.kill(bad.proc.pid, signal.SIGSTOP)
    else:
        bad.control(503)
    time.sleep(max(0.0, t0 + s.restore_at - time.monotonic()))
    restore = time.monotonic()
    if scenario == "freeze":
        os.kill(bad.proc.pid, signal.SIGCONT)
    elif scenario == "503":
        bad.control(0)
    else:
        bad.start()
    restarted = time.monotonic()
    out, _ = wrk.communicate(timeout=s.end_at + 30)
    for t in probes + [watch]:
        t.join(10)
    res = bench.parse_wrk(out)
    samples = [x for p in probes for x in p.samples]
    probe_failed = sum(1 for _, _, ok in samples if not ok)
    during = [(b - a) * 1000 for a, b, _ in samples if event <= a < restore]
    affected = [b for a, b, ok in samples
                if event <= a < restore and (not ok or (b - a) * 1000 > SLOW_MS)]
    isolated = None
    if scenario == "503":
        # The last time the 503 endpoint's count moved before the restore.
        last = None
        prev = None
        for t, n in watch.samples:
            if t >= restore:
                break
            if n is None:
                continue
            if t >= event and prev is not None and n > prev:
                last = t
            prev = n
        isolated = (last - event) if last else 0.0
    else:
        isolated = (max(affected) - event) if affected else 0.0
    recovered = None
    base = None
    for t, n in watch.samples:
        if t < restarted or n is None:
            continue
        if base is None:
            base = n
            continue
        if n > base:
            recovered = t - restore
            break
    procs.stop(proxy, pproc)
    for e in eps:
        e.stop()
    return {
        "failed": (res.get("non2xx") or 0) + (res.get("socket_errors") or 0) + probe_failed,
        "wrk_requests": res.get("requests"),
        "probe_requests": len(samples),
        "p99_ms": p99(during),
        "isolated_s": isolated,
        "recovered_s": recovered,
        "raw": out,
    }


# ----------------------------------------------------------------------------------------------
# Report


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, digits=1):
    if v is None:
        return "—"
    return ("%%.%df" % digits) % v if isinstance(v, float) else str(v)


def report(s, results, started, versions):
    L = [BEGIN, "## Failover: an endpoint goes bad and comes back (bench/failover.sh)", ""]
    L.append("Generated by `bench/failover.sh` on %s, %d round(s), medians. Three turnpike-echo "
             "endpoints behind each proxy; wrk -c %d -t %d plus two probe clients for %.0f s; "
             "the middle endpoint goes bad at %.0f s and is restored at %.0f s. Each proxy is "
             "configured as its documentation allows (configs in `bench/failover_bench.py`): "
             "Turnpike with health checks, outlier detection and `retry`; nginx with "
             "`max_fails`/`fail_timeout` and `proxy_next_upstream`; HAProxy with `check`, "
             "`observe layer7`, `retries`, `retry-on` and `option redispatch`."
             % (time.strftime("%Y-%m-%d", time.gmtime(started)), s.rounds, s.connections,
                s.threads, s.end_at, s.event_at, s.restore_at))
    L.append("")
    L.append("Versions: " + versions)
    L.append("")
    L.append("| scenario | proxy | failed requests | p99 during (ms) | isolated after (s) | "
             "recovered after (s) |")
    L.append("|---|---|---:|---:|---:|---:|")
    for sc in s.scenarios:
        for proxy in s.proxies:
            runs = results.get((sc, proxy), [])
            L.append("| %s | %s | %s | %s | %s | %s |" % (
                sc, proxy, fmt(med([r["failed"] for r in runs])),
                fmt(med([r["p99_ms"] for r in runs])), fmt(med([r["isolated_s"] for r in runs]), 2),
                fmt(med([r["recovered_s"] for r in runs]))))
    L.append("")
    L.append("- *failed*: requests without a 200 (wrk non-2xx and socket errors, and the probe "
             "clients'). *p99 during*: the probe clients' latency between the event and the "
             "restore. *isolated after*: for 503, the last request the bad endpoint counted; for "
             "kill and freeze, the end of the last probe request that failed or took over "
             "%d ms (0: none did). *recovered after*: until the restored endpoint served a "
             "request again (health checks not counted); — means not within the run." % SLOW_MS)
    L.append("")
    L.append("Per run (scenario, proxy: failed, p99 ms, isolated s, recovered s, wrk requests):")
    L.append("")
    for (sc, proxy), runs in sorted(results.items()):
        L.append("- %s, %s: %s" % (sc, proxy, "; ".join(
            "%s, %s, %s, %s, %s" % (r["failed"], fmt(r["p99_ms"]), fmt(r["isolated_s"]),
                                    fmt(r["recovered_s"]), r["wrk_requests"]) for r in runs)))
    L.append(END)
    return "\n".join(L)


def main():
    s = Settings(sys.argv[1:])
    procs = bench.Procs(s.workdir)
    started = time.time()
    results = {}
    try:
        vers = []
        for cmd in (["nginx", "-v"], ["haproxy", "-v"]):
            try:
                out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, timeout=10).stdout
                vers.append(out.splitlines()[0].strip())
            except (OSError, subprocess.SubprocessError, IndexError):
                pass
        for rnd in range(s.rounds):
            for i, sc in enumerate(s.scenarios):
                order = s.proxies[(rnd + i) % len(s.proxies):] + s.proxies[:(rnd + i) % len(s.proxies)]
                for proxy in order:
                    log("round %d, %s, %s" % (rnd + 1, sc, proxy))
                    r = run_once(s, procs, proxy, sc)
                    log("  failed %s, p99 %s ms, isolated %s s, recovered %s s" % (
                        r["failed"], fmt(r["p99_ms"]), fmt(r["isolated_s"]),
                        fmt(r["recovered_s"])))
                    results.setdefault((sc, proxy), []).append(r)
        section = report(s, results, started, "; ".join(vers))
        bench.write_marked_section(s.out, BEGIN, END, section)
        log("wrote %s" % s.out)
        print(section)
    finally:
        procs.stop_all()


if __name__ == "__main__":
    main()
