#!/usr/bin/python3
"""TLS termination: Turnpike vs nginx vs HAProxy in front of one shared cleartext upstream.

Driven by bench/tls.sh (which installs peers, builds the binaries and creates the certificates in
$CERTS); stdlib only. Reuses the helpers of bench/bench.py (process handling, CPU accounting, wrk
parser, config templates) and writes its results as one section of docs/benchmarks.md, delimited by
the lines `<!-- tls:begin -->` and `<!-- tls:end -->` (replaced when present, appended otherwise;
bench.py keeps that section when it rewrites the file, reload_bench.py only replaces its own).

Each proxy terminates TLS with the same EC P-256 certificate and proxies over cleartext HTTP/1.1
keep-alive to one shared turnpike-echo, with the configs of bench/run.sh plus TLS on the listener.
Scenarios, measured in interleaved rounds (per round: each scenario, every proxy in rotated order):
  keepalive  wrk -t2 -c64 --latency https://127.0.0.1:PORT/: requests/s, p50/p99, proxy CPU/request;
  hs13       HS_CLIENTS parallel `openssl s_time -new -www / -tls1_3`: a new TCP connection and a
             full TLS 1.3 handshake (never resumed) per request, one HTTP/1.0 GET each;
             handshakes/s and proxy CPU per handshake (the request included);
  hs12       the same with TLS 1.2 and ECDHE-ECDSA-AES128-GCM-SHA256 (TLS12=0 skips it).
s_time prints one character per connection: `r` when the session was resumed, `*` otherwise; every
`r` fails the run. Before the rounds a probe checks, per proxy, that a session resumption with the
issued ticket does work (so "not resumed" is the client's doing, not a server without tickets).
Every process it starts is stopped by PID at the end (also on SIGINT/SIGTERM); the long-running
ones are also written to $WORKDIR/pids so tls.sh's trap can stop them if this process is killed.
"""

import datetime
import http.client
import json
import os
import re
import resource
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench  # noqa: E402  (bench/bench.py: shared helpers)
from bench import (Procs, env_int, fmt, free_ports, parse_wrk, render, tail, wait_for_line,  # noqa: E402
                   wait_http_ok)

PROXIES = ("turnpike", "nginx", "haproxy")
BEGIN, END = bench.TLS_BEGIN, bench.TLS_END
TLS12_CIPHER = "ECDHE-ECDSA-AES128-GCM-SHA256"
# name, label, kind, s_time protocol options
SCENARIOS = (
    ("keepalive", "HTTPS keep-alive (wrk)", "wrk", None),
    ("hs13", "new connection per request, TLS 1.3", "s_time", ["-tls1_3"]),
    ("hs12", f"new connection per request, TLS 1.2 {TLS12_CIPHER}", "s_time", ["-tls1_2", "-cipher", TLS12_CIPHER]),
)
# The request `openssl s_time -www PATH` sends (OpenSSL 3.0 apps/s_time.c).
S_TIME_REQUEST = "GET {path} HTTP/1.0\r\n\r\n"


def log(msg):
    print(f"[tls {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Settings(bench.CertFiles):
    def __init__(self, argv):
        self.quick = "--quick" in argv
        self.rounds = env_int("ROUNDS", 1 if self.quick else 3)
        self.duration = env_int("DURATION", 3 if self.quick else 10)
        self.warmup = env_int("WARMUP", 1 if self.quick else 2)
        self.connections = env_int("CONNECTIONS", 64)
        self.threads = env_int("THREADS", 2)
        self.hs_clients = env_int("HS_CLIENTS", 2)
        self.tls12 = env_int("TLS12", 1) != 0
        self.echo_threads = env_int("ECHO_THREADS", 1)
        self.echo_cpus = os.environ.get("ECHO_CPUS", "")
        self.path = "/"
        self.proxies = [p for p in os.environ.get("PROXIES", " ".join(PROXIES)).split() if p in PROXIES]
        self.turnpike_bin = os.environ["TURNPIKE_BIN"]
        self.echo_bin = os.environ["ECHO_BIN"]
        self.build_dir = os.environ.get("BUILD_DIR", "")
        self.workdir = os.environ["WORKDIR"]
        self.out = os.environ["OUT"]
        self.certs = os.environ["CERTS"]
        self.turnpike_build_error = os.environ.get("TURNPIKE_BUILD_ERROR", "")
        self.scenarios = [sc for sc in SCENARIOS if sc[0] != "hs12" or self.tls12]
        self.pause = 1.0  # seconds before every measured run (TIME_WAIT, CPU settle)
        per_run = self.duration + self.pause + 3
        self.budget = (len(self.proxies) * (self.rounds * len(self.scenarios) * per_run + 3 * self.warmup + 40)) * 2 + 120


# ----------------------------------------------------------------------------------------------
# Configs: the bench/run.sh templates with TLS on the listener


def swap(text, old, new, what):
    if text.count(old) != 1:
        raise RuntimeError(f"{what}: expected exactly one '{old.strip()}' in the rendered template")
    return text.replace(old, new)


def turnpike_config(s, listen, admin, upstream):
    text = render("turnpike.yaml.in", LISTEN=listen, ADMIN=admin, UPSTREAM=upstream)
    tls = (f"    listen: {listen}\n"
           "    tls:\n"
           "      certificates:\n"
           f"        - {{cert: {s.cert}, key: {s.key}}}\n"
           "      # min_version \"1.2\" and session_tickets: true are the defaults\n")
    return swap(text, f"    listen: {listen}\n", tls, "turnpike.yaml.in")


def nginx_config(s, listen, upstream):
    text = render("nginx.conf.in", LISTEN=listen, UPSTREAM=upstream, WORKDIR=s.workdir)
    tls = (f"listen {listen} ssl reuseport backlog=4096;\n"
           f"        ssl_certificate {s.cert};\n"
           f"        ssl_certificate_key {s.key};\n"
           "        ssl_protocols TLSv1.2 TLSv1.3;\n"
           "        ssl_session_tickets on;")
    return swap(text, f"listen {listen} reuseport backlog=4096;", tls, "nginx.conf.in")


def haproxy_config(s, listen, upstream):
    text = render("haproxy.cfg.in", LISTEN=listen, UPSTREAM=upstream, WORKDIR=s.workdir)
    text = swap(text, f"bind {listen}\n", f"bind {listen} ssl crt {s.combined} alpn http/1.1 ssl-min-ver TLSv1.2\n",
                "haproxy.cfg.in")
    return swap(text, "X-Forwarded-Proto http\n", "X-Forwarded-Proto https\n", "haproxy.cfg.in")


# ----------------------------------------------------------------------------------------------
# TLS checks


def client_ctx(s, version=None):
    ctx = ssl.create_default_context(cafile=s.ca)  # verifies the chain and the IP SAN 127.0.0.1
    if version == "1.3":
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    elif version == "1.2":
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers(TLS12_CIPHER)
    return ctx


def https_get(s, port, path, timeout=2.0):
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=client_ctx(s))
    try:
        conn.request("GET", path, headers={"Host": f"bench.test:{port}"})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def wait_https_ok(s, port, proc, timeout):
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False, f"exited with status {proc.returncode} before answering ({last})"
        try:
            status, headers, body = https_get(s, port, s.path)
            if status == 200:
                return True, (headers, body)
            last = f"HTTP {status}: {body[:200]!r}"
        except (OSError, http.client.HTTPException) as e:
            last = f"{type(e).__name__}: {e}"
        time.sleep(0.1)
    return False, f"no 200 over HTTPS within {timeout:.0f}s (last: {last})"


def raw_exchange(s, port, ctx, session=None, sni="bench.test"):
    """One connection, the exact request s_time sends, read to EOF. (status line, bytes, ssl info)."""
    with socket.create_connection(("127.0.0.1", port), timeout=3.0) as sock:
        with ctx.wrap_socket(sock, server_hostname=sni, session=session) as tls:
            info = {"version": tls.version(), "cipher": tls.cipher()[0], "alpn": tls.selected_alpn_protocol(),
                    "reused": tls.session_reused}
            tls.sendall(S_TIME_REQUEST.format(path=s.path).encode())
            data = b""
            while True:
                chunk = tls.recv(65536)
                if not chunk:
                    break
                data += chunk
            info["session"] = tls.session  # tickets (TLS 1.3) arrive after the handshake
    status = data.split(b"\r\n", 1)[0].decode(errors="replace")
    return status, len(data), info


def probe(s, port):
    """What each client gets: the s_time request's answer, resumption with a ticket, handshake details."""
    res = {}
    for version in ("1.3", "1.2"):
        ctx = client_ctx(s, version)
        ctx.check_hostname = True
        status, nbytes, info = raw_exchange(s, port, ctx)
        _, _, again = raw_exchange(s, port, ctx, session=info["session"])
        res[version] = {"status": status, "bytes": nbytes, "version": info["version"], "cipher": info["cipher"],
                        "resumes_with_ticket": again["reused"],
                        "ticket_offered": bool(info["session"] and info["session"].has_ticket)}
    # Details of the default handshake as OpenSSL's own client (like wrk and s_time) negotiates it.
    for version, opts in (("1.3", ["-tls1_3"]), ("1.2", ["-tls1_2", "-cipher", TLS12_CIPHER])):
        try:
            r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-msg", "-ign_eof",
                                "-CAfile", s.ca, "-servername", "bench.test", "-alpn", "h2,http/1.1"] + opts, input=S_TIME_REQUEST.format(path=s.path),
                               capture_output=True, text=True, timeout=10)
            out = r.stdout + r.stderr
        except (OSError, subprocess.TimeoutExpired) as e:
            out = f"({e})"
        d = res[version]
        d["tickets"] = len(re.findall(r"<<< .*NewSessionTicket", out))
        m = re.search(r"Server Temp Key: ([^\n]+)", out)
        d["kx"] = m.group(1).strip() if m else "?"
        m = re.search(r"Peer signature type: (\S+)", out)
        d["sig"] = m.group(1) if m else "?"
        m = re.search(r"(No ALPN negotiated|ALPN protocol: \S+)", out)
        d["alpn"] = m.group(1).replace("ALPN protocol: ", "") if m else "?"
        m = re.search(r"Verify return code: (\d+)", out)
        d["verify"] = m.group(1) if m else "?"
    return res


# ----------------------------------------------------------------------------------------------
# Load


def measure_window(proxy_proc, echo_proc, fn):
    """Run fn() and account proxy, upstream, client (reaped children) and other CPU over its window."""
    before, echo_before = bench.cpu_sample(proxy_proc.pid), bench.cpu_sample(echo_proc.pid)
    busy_before = bench.machine_busy_s()
    ru_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    res = fn()
    wall = time.monotonic() - t0
    after, echo_after = bench.cpu_sample(proxy_proc.pid), bench.cpu_sample(echo_proc.pid)
    busy = bench.machine_busy_s() - busy_before
    ru_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    res["wall_s"] = wall
    res["cpu_s"], res["cpu_sched_s"] = bench.cpu_delta(before, after)
    res["echo_cpu_s"], _ = bench.cpu_delta(echo_before, echo_after)
    res["client_cpu_s"] = (ru_after.ru_utime + ru_after.ru_stime) - (ru_before.ru_utime + ru_before.ru_stime)
    res["foreign_cpus"] = (max(0.0, busy - res["cpu_s"] - res["echo_cpu_s"] - res["client_cpu_s"]) / wall
                           if wall else None)
    for k, out in (("cpu_s", "proxy_cpus"), ("echo_cpu_s", "echo_cpus"), ("client_cpu_s", "client_cpus")):
        res[out] = res[k] / wall if wall else None  # average CPUs busy over the window
    res["alive"] = proxy_proc.poll() is None
    return res


def run_wrk(s, port, duration, proxy_proc, echo_proc):
    url = f"https://127.0.0.1:{port}{s.path}"
    cmd = ["wrk", "-t", str(s.threads), "-c", str(s.connections), "-d", f"{duration}s", "--latency",
           "--timeout", "5s", url]

    def go():
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
        res = parse_wrk(out)
        res["raw"] = out
        res["client_exit"] = wrk.returncode
        return res

    res = measure_window(proxy_proc, echo_proc, go)
    if res["requests"]:
        res["count"] = res["requests"]
        res["rate"] = res["rps"]
    ok = (res["requests"] and res["rps"] is not None and res["p99_ms"] is not None and res["alive"]
          and res["non2xx"] == 0 and res["socket_errors"] == 0 and res["client_exit"] == 0)
    res["ok"] = bool(ok)
    return res


def parse_s_time(out):
    res = {"conns": None, "bytes_per_conn": None, "new": 0, "resumed": 0}
    m = re.search(r"^(\d+) connections in [\d.]+s;", out, re.M)
    if m:
        res["conns"] = int(m.group(1))
    m = re.search(r"^\d+ connections in \d+ real seconds, (\d+) bytes read per connection", out, re.M)
    if m:
        res["bytes_per_conn"] = int(m.group(1))
    # One character per connection: r = resumed session, * (or t, 3 for old versions) = new session.
    marks = "".join(line for line in out.splitlines() if re.fullmatch(r"[*rt3]+", line.strip() or "x"))
    res["resumed"] = marks.count("r")
    res["new"] = len(marks) - res["resumed"]
    return res


def run_s_time(s, port, duration, proto_opts, proxy_proc, echo_proc, tag, expect_bytes):
    cmd = ["openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-new", "-time", str(duration),
           "-www", s.path] + proto_opts

    def go():
        clients = []
        try:
            for i in range(s.hs_clients):
                path = os.path.join(s.workdir, f"s_time-{tag}-{i}.txt")
                f = open(path, "w")
                clients.append({"proc": subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT,
                                                         stdin=subprocess.DEVNULL),
                                "t0": time.monotonic(), "t1": None, "path": path, "file": f})
            deadline = time.monotonic() + duration + 20
            while any(c["t1"] is None for c in clients) and time.monotonic() < deadline:
                for c in clients:
                    if c["t1"] is None and c["proc"].poll() is not None:
                        c["t1"] = time.monotonic()
                time.sleep(0.005)
        finally:
            for c in clients:  # bounded: anything still running now is killed
                if c["proc"].poll() is None:
                    c["proc"].kill()
                c["proc"].wait()
                c["file"].close()
        res = {"clients": [], "raw": ""}
        for c in clients:
            with open(c["path"], errors="replace") as f:
                out = f.read()
            p = parse_s_time(out)
            p["exit"] = c["proc"].returncode
            p["wall_s"] = (c["t1"] - c["t0"]) if c["t1"] else None
            if p["exit"] != 0 or c["t1"] is None:
                res["raw"] += f"--- {os.path.basename(c['path'])} (exit {p['exit']}) ---\n" + out[-600:] + "\n"
            res["clients"].append(p)
        return res

    res = measure_window(proxy_proc, echo_proc, go)
    cl = res["clients"]
    good = all(c["exit"] == 0 and c["conns"] and c["wall_s"] for c in cl)
    res["client_exit"] = max((c["exit"] or 0) for c in cl) if cl else None
    res["count"] = sum(c["conns"] or 0 for c in cl)
    res["resumed"] = sum(c["resumed"] for c in cl)
    res["marks"] = sum(c["new"] + c["resumed"] for c in cl)
    # Each client's own rate over its own lifetime (it stops at the first whole second after -time).
    res["rate"] = sum(c["conns"] / c["wall_s"] for c in cl) if good else None
    bpc = [c["bytes_per_conn"] for c in cl if c["bytes_per_conn"] is not None]
    res["bytes_per_conn"] = min(bpc) if bpc else None
    problems = []
    if not good:
        problems.append("a client failed (see raw output)")
    if res["resumed"]:
        problems.append(f"{res['resumed']} resumed sessions")
    if res["marks"] != res["count"]:
        problems.append(f"{res['marks']} connection marks for {res['count']} connections")
    # Every connection must have carried the whole answer (size as in the probe, ±5 %: header values vary).
    if expect_bytes and (res["bytes_per_conn"] is None or abs(res["bytes_per_conn"] - expect_bytes) > 0.05 * expect_bytes):
        problems.append(f"{res['bytes_per_conn']} bytes per connection, {expect_bytes} expected")
    if not res["alive"]:
        problems.append("proxy died")
    res["problems"] = problems
    res["ok"] = not problems
    return res


# ----------------------------------------------------------------------------------------------
# Report


def med(rs, key):
    vals = [r[key] for r in rs if r.get("ok") and r.get(key) is not None]
    return statistics.median(vals) if vals else None


def ratio(a, b):
    return a / b if a is not None and b else None


def per_unit(r):
    """Per-request (keepalive) or per-handshake figures of one run, in µs, added to r."""
    n = r.get("count")
    if n:
        r["cpu_us"] = r["cpu_s"] / n * 1e6
        r["cpu_sched_us"] = r["cpu_sched_s"] / n * 1e6
        r["echo_cpu_us"] = r["echo_cpu_s"] / n * 1e6
        r["client_cpu_us"] = r["client_cpu_s"] / n * 1e6


def render_section(s, info, vers, status, probes, results, elapsed):
    L = [BEGIN, "## TLS termination\n"]
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    mode = "quick smoke run (`bench/tls.sh --quick`)" if s.quick else "full run (`bench/tls.sh`)"
    L.append(f"Generated by `bench/tls.sh` — {mode} — on {now}, in {elapsed:.0f} s, on {info['nproc']} CPUs "
             f"({info['cpu']}, load average at start {' '.join(info['loadavg_at_start'])}). Versions: "
             f"`{vers.get('turnpike')}`, `{vers.get('nginx')}`, `{vers.get('haproxy')}`, `{vers.get('wrk')}`, "
             f"`{vers.get('openssl')}`, git `{vers.get('git')}`, build `{vers.get('build')}`. Regenerate with "
             "`bench/tls.sh`; `bench/run.sh` and `bench/reload.sh` keep this section.\n")
    L.append("### Method\n")
    L.append(f"- **Setup.** As the main benchmark (`bench/run.sh`): one shared `turnpike-echo --threads {s.echo_threads}` "
             "upstream over cleartext HTTP/1.1 keep-alive, and each proxy with its `bench/*.in` config on its own "
             "loopback port, with TLS added on the listener and nothing else changed. All three use the same "
             "certificate, made by `bench/tls.sh` with the `openssl` CLI for this run: an EC P-256 CA and an EC "
             "P-256 server certificate (ECDSA-SHA256) with SAN `DNS:bench.test, IP:127.0.0.1`.")
    L.append("  - Turnpike: `tls: {certificates: [{cert, key}]}` on the listener; defaults otherwise "
             "(`min_version: \"1.2\"`, `session_tickets: true`, ALPN `http/1.1`, no server-side session cache).")
    L.append("  - nginx: `listen … ssl reuseport`, `ssl_certificate`, `ssl_certificate_key`, "
             "`ssl_protocols TLSv1.2 TLSv1.3`, `ssl_session_tickets on` (no `ssl_session_cache`: nginx's default).")
    L.append("  - HAProxy: `bind … ssl crt <cert+key in one PEM> alpn http/1.1 ssl-min-ver TLSv1.2`, "
             "`X-Forwarded-Proto https`; HAProxy's defaults otherwise (its built-in session cache is on).")
    L.append("  Ciphers, groups and ticket settings are each proxy's defaults with the system OpenSSL; the "
             "probe table below shows what a client actually negotiates. These runs are HTTP/1.1 (wrk, "
             "s_time); HTTP/2 over TLS is measured in the HTTP/2 section.")
    L.append(f"- **HTTPS keep-alive**: `wrk -t{s.threads} -c{s.connections} -d{s.duration}s --latency "
             f"https://127.0.0.1:PORT{s.path}` (wrk opens its {s.connections} connections once, so this is "
             "the cost of TLS record encryption on top of proxying, with almost no handshakes). "
             "requests/s, p50, p99 as wrk reports them.")
    L.append(f"- **Handshakes**: {s.hs_clients} parallel `openssl s_time -connect 127.0.0.1:PORT -new "
             f"-time {s.duration} -www {s.path}` processes, with `-tls1_3`, or with `-tls1_2 -cipher {TLS12_CIPHER}`. "
             "Each s_time loop opens a new TCP connection, does a full handshake with a fresh `SSL` object and "
             "no session (`-new`: never offers a session or ticket), sends `GET / HTTP/1.0` (one request, "
             "proxied to the upstream), reads the answer to EOF (the proxy closes: HTTP/1.0) and closes. So one "
             "handshake = one TCP connection + one full TLS handshake (+ the tickets the server sends after it) "
             "+ one proxied request. **No resumption, verified**: s_time prints one character per connection, "
             "`r` when `SSL_session_reused()` is true; every run counts them and any `r` fails the run "
             "(the *resumed* column). The probe table shows each proxy *would* resume if offered its ticket, "
             "so the full handshakes are the client's choice, not a server without tickets. Each answer's "
             "size must match the probe's (a 200) within 5 %. handshakes/s = Σ over the clients of "
             "connections / the client's own wall time (s_time stops at the first whole second after "
             "`-time`).")
    L.append("- **proxy CPU µs/request or /handshake**: utime+stime of all the proxy's processes "
             "(`/proc/PID/stat`, as in the main benchmark) over the run, divided by wrk's requests or by "
             "s_time's connections. For the handshake scenarios it includes accepting the connection, the "
             "handshake, the tickets, the request and the close. *upstream CPU* is the same for turnpike-echo; "
             "*client CPU* is wrk's or the s_time processes' (reaped children's rusage).")
    L.append(f"- **Shared cores, and which side limits.** This machine has {info['nproc']} CPUs, shared, unpinned, "
             "by the load generator, the proxy (2 workers / 2 threads) and the upstream. The *CPUs used* "
             "columns split the box. In the handshake scenarios the client is the larger consumer: an OpenSSL 3 "
             "client spends more CPU per handshake than the server (key share, parsing the certificate, "
             "verifying the server's ECDSA signature; see *client CPU µs/handshake*), each s_time is one "
             "synchronous connection at a time, and the cores are shared, so handshakes/s is the rate of this "
             "box with this client, **limited by the client and the shared cores, not the proxy's capacity**. "
             "proxy CPU µs/handshake is the figure to compare first; handshakes/s compares the proxies under "
             "the same client. (A Python `ssl` client loop was tried during development: about the same client "
             "CPU per handshake as s_time, ~1 ms, since the OpenSSL handshake dominates, but it cannot report "
             "resumption per connection as s_time does; so s_time.)")
    L.append(f"- **Rounds**: {s.rounds} round(s); in each round every scenario, and within it every proxy once, "
             f"order rotated from round to round; {s.pause:.0f} s pause before each run; a {s.warmup} s warm-up "
             "per proxy (wrk, then s_time) is not counted. Medians over the good rounds; ratios are to nginx.")
    L.append("")

    # Probe
    L.append("### Proxies and what a client negotiates\n")
    L.append("| proxy | status | version | cipher | key exchange | signature | ALPN (offered h2, http/1.1) | tickets per handshake | "
             "resumes with its ticket | `GET / HTTP/1.0` answer | verify |")
    L.append("|---|---|---|---|---|---|---|---:|---|---|---|")
    for p in s.proxies:
        pr = probes.get(p)
        if not pr:
            L.append(f"| {p} | {status[p]['state']}: {status[p].get('detail', '').replace('|', '/')[:200]} "
                     "| | | | | | | | | |")
            continue
        for v in ("1.3", "1.2"):
            d = pr[v]
            L.append(f"| {p} | {status[p]['state'] if v == '1.3' else ''} | {d['version']} | {d['cipher']} | {d['kx']} | "
                     f"{d['sig']} | {d['alpn']} | {d['tickets']} | {'yes' if d['resumes_with_ticket'] else 'NO'} | "
                     f"{d['status']}, {d['bytes']} bytes | {'ok' if d['verify'] == '0' else d['verify']} |")
    L.append("")
    L.append("TLS 1.3 rows: OpenSSL client defaults (as wrk and `s_time -tls1_3`); TLS 1.2 rows: "
             f"`{TLS12_CIPHER}` only. Version, cipher, resumption and the answer from a Python `ssl` client "
             "(SNI `bench.test`, hostname checked); key exchange, signature, ALPN, the NewSessionTicket messages "
             "after one handshake and *verify* (chain and SAN against the bench CA) from `openssl s_client`. "
             "wrk and s_time offer no ALPN.\n")

    # Medians
    L.append(f"### Results: medians over {s.rounds} round(s)\n")
    meds = {}
    for name, label, kind, _ in s.scenarios:
        L.append(f"**{label}**\n")
        if kind == "wrk":
            L.append("| proxy | requests/s ↑ | p50 ms ↓ | p99 ms ↓ | proxy CPU µs/req ↓ | upstream CPU µs/req | "
                     "client CPU µs/req | CPUs used: proxy / upstream / client / other | good runs |")
        else:
            L.append("| proxy | handshakes/s ↑ | proxy CPU µs/handshake ↓ | upstream CPU µs/handshake | "
                     "client CPU µs/handshake | CPUs used: proxy / upstream / client / other | resumed | good runs |")
        L.append("|---|" + "---:|" * (8 if kind == "wrk" else 7))
        for p in s.proxies:
            rs = [r for r in results.get(p, []) if r["scenario"] == name]
            keys = ("rate", "p50_ms", "p99_ms", "cpu_us", "echo_cpu_us", "client_cpu_us", "proxy_cpus", "echo_cpus",
                    "client_cpus", "foreign_cpus")
            m = {k: med(rs, k) for k in keys}
            meds.setdefault(p, {})[name] = m
            good = sum(1 for r in rs if r.get("ok"))
            cpus = (f"{fmt(m['proxy_cpus'], 2)} / {fmt(m['echo_cpus'], 2)} / {fmt(m['client_cpus'], 2)} / "
                    f"{fmt(m['foreign_cpus'], 2)}")
            if not good:
                why = status[p].get("detail", "") if status[p]["state"] != "ok" else "no good run"
                L.append(f"| {p} | failed: {why.replace('|', '/')[:150]} |" + " — |" * (7 if kind == "wrk" else 6))
            elif kind == "wrk":
                L.append(f"| {p} | {fmt(m['rate'], 0)} | {fmt(m['p50_ms'], 2)} | {fmt(m['p99_ms'], 2)} | "
                         f"{fmt(m['cpu_us'], 1)} | {fmt(m['echo_cpu_us'], 1)} | {fmt(m['client_cpu_us'], 1)} | "
                         f"{cpus} | {good}/{len(rs)} |")
            else:
                resumed = sum(r.get("resumed", 0) for r in rs)
                conns = sum(r.get("count") or 0 for r in rs)
                L.append(f"| {p} | {fmt(m['rate'], 0)} | {fmt(m['cpu_us'], 1)} | {fmt(m['echo_cpu_us'], 1)} | "
                         f"{fmt(m['client_cpu_us'], 1)} | {cpus} | {resumed} of {conns} | {good}/{len(rs)} |")
        L.append("")
    foreign = [r["foreign_cpus"] for p in s.proxies for r in results.get(p, []) if r.get("foreign_cpus") is not None]
    if foreign:
        L.append(f"Other load on the machine during the measured runs: median {statistics.median(foreign):.2f} CPUs, "
                 f"max {max(foreign):.2f} CPUs (of {info['nproc']})." + (
                     " **The machine was busy with other work; the numbers are noisy** — rerun `bench/tls.sh` on "
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
                 ("proxy CPU per request", "cpu_us", "lower")] if kind == "wrk" else
                [("handshakes/s", "rate", "higher"), ("proxy CPU per handshake", "cpu_us", "lower")])
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
    L.append("| round | scenario | order | proxy | requests / handshakes | per s | p50 ms | p99 ms | proxy CPU µs | "
             "proxy CPU µs (schedstat) | upstream CPU µs | client CPU µs | CPUs: proxy / upstream / client / other | "
             "resumed | bytes/conn | ok |")
    L.append("|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|")
    runs = sorted((r for p in s.proxies for r in results.get(p, [])), key=lambda r: (r["round"], r["seq"]))
    for r in runs:
        if r.get("skipped"):
            L.append(f"| {r['round']} | {r['scenario']} | {r['order']} | {r['proxy']} |" + " — |" * 11
                     + f" skipped: {r['skipped']} |")
            continue
        wrk = r["scenario"] == "keepalive"
        okcell = "yes" if r.get("ok") else "NO; " + "; ".join(r.get("problems", [])).replace("|", "/")
        L.append(f"| {r['round']} | {r['scenario']} | {r['order']} | {r['proxy']} | {r.get('count') or '—'} | "
                 f"{fmt(r.get('rate'), 0)} | {fmt(r.get('p50_ms'), 2) if wrk else '—'} | "
                 f"{fmt(r.get('p99_ms'), 2) if wrk else '—'} | {fmt(r.get('cpu_us'), 1)} | {fmt(r.get('cpu_sched_us'), 1)} | "
                 f"{fmt(r.get('echo_cpu_us'), 1)} | {fmt(r.get('client_cpu_us'), 1)} | "
                 f"{fmt(r.get('proxy_cpus'), 2)} / {fmt(r.get('echo_cpus'), 2)} / {fmt(r.get('client_cpus'), 2)} / "
                 f"{fmt(r.get('foreign_cpus'), 2)} | {'—' if wrk else r.get('resumed')} | "
                 f"{'—' if wrk else r.get('bytes_per_conn', '—')} | {okcell} |")
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
    """Start one proxy with TLS; returns (proc, port) once it answers 200 over HTTPS, else None."""
    port, admin_port = free_ports(2)
    listen = f"127.0.0.1:{port}"
    logfile = os.path.join(s.workdir, f"{name}.log")
    try:
        if name == "turnpike":
            if not os.access(s.turnpike_bin, os.X_OK):
                status[name] = {"state": "failed", "detail": "binary not built",
                                "note": "not built: " + (s.turnpike_build_error or s.turnpike_bin)}
                return None
            cfg = os.path.join(s.workdir, "turnpike.yaml")
            with open(cfg, "w") as f:
                f.write(turnpike_config(s, listen, f"127.0.0.1:{admin_port}", up_addr))
            check = subprocess.run([s.turnpike_bin, "check", "-c", cfg], capture_output=True, text=True, timeout=20)
            if check.returncode != 0:
                status[name] = {"state": "failed", "detail": "`turnpike check` rejected the TLS bench config",
                                "note": f"`turnpike check` exited with status {check.returncode}:\n\n```\n"
                                        + ((check.stdout + check.stderr).strip()[-800:] or "(no output)") + "\n```"}
                return None
            cmd = [s.turnpike_bin, "-c", cfg]
        elif name == "nginx":
            for d in ("client-body", "proxy-temp", "fastcgi-temp", "uwsgi-temp", "scgi-temp"):
                os.makedirs(os.path.join(s.workdir, f"nginx-{d}"), exist_ok=True)
            cfg = os.path.join(s.workdir, "nginx.conf")
            with open(cfg, "w") as f:
                f.write(nginx_config(s, listen, up_addr))
            cmd = ["nginx", "-c", cfg, "-p", s.workdir, "-e", os.path.join(s.workdir, "nginx-error.log")]
        else:
            cfg = os.path.join(s.workdir, "haproxy.cfg")
            with open(cfg, "w") as f:
                f.write(haproxy_config(s, listen, up_addr))
            cmd = ["haproxy", "-db", "-f", cfg]
        proc = procs.start(name, cmd, logfile)
    except (OSError, subprocess.SubprocessError, RuntimeError) as e:
        status[name] = {"state": "failed", "detail": f"could not start: {e}"}
        return None
    ok, detail = wait_https_ok(s, port, proc, timeout=15)
    if not ok:
        status[name] = {"state": "failed", "detail": detail, "note": f"log tail:\n\n```\n{tail(logfile)}\n```"}
        procs.stop(name, proc)
        return None
    status[name] = {"state": "ok", "detail": f"200 over HTTPS, {len(detail[1])} body bytes"}
    log(f"{name} ready on https://{listen}")
    return proc, port


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
    status = {p: {"state": "not started"} for p in s.proxies}
    results = {p: [] for p in s.proxies}
    probes = {}
    deadline = t_start + s.budget
    try:
        # The shared upstream (cleartext).
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

        # The proxies, each checked over HTTPS and probed.
        running = {}
        for name in s.proxies:
            started = start_proxy(s, procs, name, up_addr, status)
            if not started:
                log(f"{name}: {status[name]['detail']}")
                continue
            try:
                probes[name] = pr = probe(s, started[1])
            except (OSError, ssl.SSLError, ValueError) as e:
                status[name] = {"state": "failed", "detail": f"TLS probe failed: {type(e).__name__}: {e}"}
                log(f"{name}: {status[name]['detail']}")
                procs.stop(name, started[0])
                continue
            bad = [f"TLS {v}: answer '{d['status']}'" for v, d in pr.items() if " 200 " not in d["status"] + " "]
            if bad:
                status[name]["state"] = "failed"
                status[name]["detail"] = "; ".join(bad)
                procs.stop(name, started[0])
                continue
            running[name] = started
            log(f"{name} probe: " + "; ".join(
                f"TLS {v} {d['cipher']} {d['kx']}, {d['tickets']} ticket(s), resumes with ticket: "
                f"{d['resumes_with_ticket']}, answer {d['bytes']} bytes" for v, d in pr.items()))

        # Warm-up, not counted.
        for name, (proc, port) in running.items():
            if s.warmup > 0:
                r = run_wrk(s, port, s.warmup, proc, echo)
                r2 = run_s_time(s, port, s.warmup, ["-tls1_3"], proc, echo, f"warmup-{name}", None)
                log(f"warm-up {name}: {fmt(r.get('rps'), 0)} req/s keep-alive, {fmt(r2.get('rate'), 0)} handshakes/s")

        # Interleaved rounds: per round, every scenario; within it every proxy, order rotated.
        names = [p for p in s.proxies if p in running]
        for rnd in range(1, s.rounds + 1):
            k = (rnd - 1) % max(1, len(names))
            order = names[k:] + names[:k]
            seq = 0
            for name, label, kind, opts in s.scenarios:
                for pos, p in enumerate(order, 1):
                    seq += 1
                    proc, port = running[p]
                    entry = {"round": rnd, "scenario": name, "order": pos, "seq": seq, "proxy": p}
                    if proc.poll() is not None:
                        entry["skipped"] = f"proxy exited (status {proc.returncode})"
                        status[p]["state"] = "died"
                        status[p]["note"] = (f"exited with status {proc.returncode} during the rounds; log tail:"
                                             f"\n\n```\n{tail(os.path.join(s.workdir, p + '.log'))}\n```")
                    elif time.monotonic() + s.duration + 8 > deadline:
                        entry["skipped"] = "time budget exhausted"
                    else:
                        time.sleep(s.pause)
                        if kind == "wrk":
                            r = run_wrk(s, port, s.duration, proc, echo)
                            if not r["ok"]:
                                r["problems"] = [f"non-2xx {r['non2xx']}, socket errors {r['socket_errors']}, "
                                                 f"wrk exit {r['client_exit']}, alive {r['alive']}"]
                        else:
                            v = "1.3" if name == "hs13" else "1.2"
                            r = run_s_time(s, port, s.duration, opts, proc, echo, f"{rnd}-{name}-{p}",
                                           probes[p][v]["bytes"])
                        per_unit(r)
                        raw = r.pop("raw", "")
                        if kind == "wrk":
                            with open(os.path.join(s.workdir, f"wrk-{rnd}-{p}.txt"), "w") as f:
                                f.write(raw)
                        if not r["ok"]:
                            entry["raw_tail"] = raw[-600:]
                        entry.update(r)
                        log(f"round {rnd}/{s.rounds} {name:9s} {p:8s}: {fmt(r.get('rate'), 0)}/s"
                            + (f", p99 {fmt(r.get('p99_ms'), 2)} ms" if kind == "wrk" else f", resumed {r.get('resumed')}")
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
    with open(os.path.join(s.workdir, "tls-results.json"), "w") as f:
        json.dump({"settings": vars(s), "machine": info, "versions": vers, "status": status, "probes": probes,
                   "results": results, "medians": meds}, f, indent=2, default=str)
    log(f"report section written to {s.out} ({elapsed:.0f} s)")
    for p, m in meds.items():
        log(f"  {p:9s} " + "; ".join(f"{n} {fmt(v.get('rate'), 0)}/s {fmt(v.get('cpu_us'), 1)} µs" for n, v in m.items()))
    tp_failed = any(not r.get("ok") and not r.get("skipped") for r in results.get("turnpike", [])) \
        or status.get("turnpike", {}).get("state") not in (None, "ok")
    if tp_failed:
        log("Turnpike had failed runs (see the report)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
