#!/usr/bin/python3
"""The cost of the filter chain: one Turnpike (2 workers) in front of one turnpike-echo, with three
routes measured in interleaved rounds with wrk, next to nginx proxying the same upstream:

  plain    /plain     no filters (the reference for the ratios)
  chain-a  /chain-a   api_key (header) + rate_limit (store: local, keyed by consumer) + headers
  chain-b  /chain-b   jwt (RS256, JWKS file) + rate_limit (store: redis, sync: strict, keyed by consumer)
  nginx    /plain     nginx proxy_pass with keep-alive upstream (context: the plain route's peer)

The limits are set far above what the machine can do, so every request is admitted and the
numbers are the filters' cost, not rejections (a 429 would fail the run). chain-b sends the same
token on every request: the verified-token cache means the signature is checked once per worker.
Requests/s, p99 (wrk --latency) and proxy CPU per request; medians over ROUNDS; written as the
"<!-- filters:begin -->" ... "<!-- filters:end -->" section of docs/benchmarks.md.

Driven by bench/filters.sh (installs peers, builds). Stdlib plus Debian's python3-jwt and
python3-cryptography (token and key generation). Every process is stopped by PID.
"""

import base64
import datetime
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench  # noqa: E402
from bench import Procs, cpu_delta, cpu_sample, env_int, free_ports, log, parse_wrk, wait_http_ok  # noqa: E402

BEGIN, END = bench.FILTERS_BEGIN, bench.FILTERS_END
API_KEY = "bench-key-0123456789"
SCENARIOS = (
    ("plain", "no filters", "/plain"),
    ("chain-a", "api_key + rate_limit (local) + headers", "/chain-a"),
    ("chain-b", "jwt (RS256) + rate_limit (redis, strict)", "/chain-b"),
    ("nginx", "nginx, proxy_pass (no filters)", "/plain"),
)


def b64u(n):
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def make_jwt(workdir):
    import jwt  # python3-jwt
    from cryptography.hazmat.primitives.asymmetric import rsa
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pub = key.public_key().public_numbers()
    jwks = {"keys": [{"kty": "RSA", "kid": "bench", "alg": "RS256", "use": "sig",
                      "n": b64u(pub.n), "e": b64u(pub.e)}]}
    path = os.path.join(workdir, "jwks.json")
    with open(path, "w") as f:
        json.dump(jwks, f)
    now = int(time.time())
    token = jwt.encode({"iss": "https://idp.bench", "aud": "api", "sub": "bench-user",
                        "iat": now, "exp": now + 3600}, key, algorithm="RS256",
                       headers={"kid": "bench"})
    return path, token


def turnpike_config(port, admin, upstream, redis_port, jwks):
    return f"""workers: 2
admin: {{listen: "127.0.0.1:{admin}"}}
access_log: {{path: "off"}}
listeners:
  - {{name: bench, listen: "127.0.0.1:{port}"}}
clusters:
  - {{name: up, endpoints: ["127.0.0.1:{upstream}"]}}
redis: {{address: "127.0.0.1:{redis_port}", timeout: 1s}}
consumers:
  - {{name: bench, api_keys: ["{API_KEY}"]}}
filters:
  key: {{type: api_key, header: x-api-key}}
  local: {{type: rate_limit, key: consumer, rate: 100000000/s, burst: 100000000, store: local}}
  tag: {{type: headers, request: {{set: {{x-gateway: turnpike, x-consumer: "${{consumer}}"}}}}}}
  auth: {{type: jwt, issuer: "https://idp.bench", audiences: [api], jwks: {{file: "{jwks}"}}}}
  shared: {{type: rate_limit, key: consumer, rate: 100000000/s, burst: 100000000, store: redis}}
routes:
  - {{name: plain, match: {{path_prefix: /plain}}, backend: up}}
  - {{name: chain-a, match: {{path_prefix: /chain-a}}, filters: [key, local, tag], backend: up}}
  - {{name: chain-b, match: {{path_prefix: /chain-b}}, filters: [auth, shared], backend: up}}
"""


def nginx_config(workdir, port, upstream):
    return f"""worker_processes 2;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  upstream up {{ server 127.0.0.1:{upstream}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://up;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    }}
  }}
}}
"""


def run_wrk(threads, conns, duration, url, headers, proc):
    cmd = ["wrk", "-t", str(threads), "-c", str(conns), "-d", f"{duration}s", "--latency",
           "--timeout", "5s"]
    for h in headers:
        cmd += ["-H", h]
    cmd.append(url)
    before = cpu_sample(proc.pid)
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=duration + 30)
    after = cpu_sample(proc.pid)
    res = parse_wrk(p.stdout)
    res["cpu_s"], _ = cpu_delta(before, after)
    res["raw"] = p.stdout
    res["ok"] = bool(res["requests"] and res["rps"] and res["non2xx"] == 0 and p.returncode == 0
                     and proc.poll() is None)
    if res["requests"]:
        res["cpu_us_per_req"] = res["cpu_s"] / res["requests"] * 1e6
    return res


def main():
    quick = "--quick" in sys.argv
    rounds = env_int("ROUNDS", 1 if quick else 3)
    duration = env_int("DURATION", 3 if quick else 10)
    conns, threads = env_int("CONNECTIONS", 64), env_int("THREADS", 2)
    workdir, out = os.environ["WORKDIR"], os.environ["OUT"]
    tp_bin, echo_bin = os.environ["TURNPIKE_BIN"], os.environ["ECHO_BIN"]
    procs = Procs(workdir)
    started = time.monotonic()
    try:
        port, nginx_port, admin, up_port, redis_port = free_ports(5)
        echo = procs.start("echo", [echo_bin, "--listen", f"127.0.0.1:{up_port}", "--threads", "1"],
                           os.path.join(workdir, "echo.log"))
        redis = procs.start("redis", ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no"],
                            os.path.join(workdir, "redis.log"))
        jwks, token = make_jwt(workdir)
        cfg = os.path.join(workdir, "turnpike.yaml")
        with open(cfg, "w") as f:
            f.write(turnpike_config(port, admin, up_port, redis_port, jwks))
        tp = procs.start("turnpike", [tp_bin, "-c", cfg], os.path.join(workdir, "turnpike.log"))
        ncfg = os.path.join(workdir, "nginx.conf")
        with open(ncfg, "w") as f:
            f.write(nginx_config(workdir, nginx_port, up_port))
        nginx = procs.start("nginx", ["nginx", "-c", ncfg, "-g", "daemon off;"],
                            os.path.join(workdir, "nginx.log"))
        for p, proc in ((port, tp), (nginx_port, nginx)):
            ok, detail = wait_http_ok(p, "/plain", proc, 15)
            if not ok:
                raise SystemExit(f"not ready on {p}: {detail}")
        del redis, echo
        headers = {"plain": [], "nginx": [], "chain-a": [f"x-api-key: {API_KEY}"],
                   "chain-b": [f"authorization: Bearer {token}"]}
        targets = {"nginx": (nginx_port, nginx)}
        results = {name: [] for name, _, _ in SCENARIOS}
        for name, _, path in SCENARIOS:  # warm-up (and a correctness check)
            p, proc = targets.get(name, (port, tp))
            r = run_wrk(threads, conns, 1, f"http://127.0.0.1:{p}{path}", headers[name], proc)
            if not r["ok"]:
                raise SystemExit(f"warm-up of {name} failed:\n{r['raw']}")
        order = [s[0] for s in SCENARIOS]
        for rnd in range(rounds):
            for i in range(len(order)):
                name = order[(i + rnd) % len(order)]
                path = dict((n, pth) for n, _, pth in SCENARIOS)[name]
                p, proc = targets.get(name, (port, tp))
                r = run_wrk(threads, conns, duration, f"http://127.0.0.1:{p}{path}", headers[name],
                            proc)
                log(f"round {rnd + 1} {name}: {r['rps']} rps, p99 {r['p99_ms']} ms, "
                    f"{r.get('cpu_us_per_req', 0):.1f} us/req ok={r['ok']}")
                if not r["ok"]:
                    raise SystemExit(f"{name} failed:\n{r['raw']}")
                results[name].append(r)
                time.sleep(1)
    finally:
        procs.stop_all()

    def med(name, key):
        return statistics.median(r[key] for r in results[name])

    base_rps, base_p99 = med("plain", "rps"), med("plain", "p99_ms")
    L = [BEGIN, "## Filter chain cost\n",
         f"Measured {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC} by "
         f"`bench/filters.sh`: Turnpike with 2 workers and one turnpike-echo upstream on this "
         f"machine (2 cores, shared with wrk -t{threads} -c{conns}), {rounds} interleaved rounds "
         f"of {duration} s per scenario, medians. Limits are set far above the offered load, so "
         "every request is admitted: the numbers are the filters' own cost. chain-b repeats one "
         "token, so after the first request per worker the JWT costs a cache lookup, not an RSA "
         "verification; its Redis limit costs one round trip to a local redis-server per "
         "request.\n",
         "| Scenario | Requests/s | vs plain | p99 (ms) | vs plain | Turnpike CPU per request (µs) |",
         "|---|---:|---:|---:|---:|---:|"]
    for name, label, _ in SCENARIOS:
        rps, p99, cpu = med(name, "rps"), med(name, "p99_ms"), med(name, "cpu_us_per_req")
        L.append(f"| {name}: {label} | {rps:,.0f} | {rps / base_rps:.2f} | {p99:.2f} | "
                 f"{p99 / base_p99:.2f} | {cpu:.1f} |")
    L.append("")
    L.append("Raw requests/s per round: " + "; ".join(
        f"{name} " + ", ".join(f"{r['rps']:,.0f}" for r in results[name]) for name, _, _ in SCENARIOS))
    L.append("")
    L.append(f"(Run took {time.monotonic() - started:.0f} s; nginx's CPU column is nginx's own.)")
    L.append(END)
    section = "\n".join(L)
    try:
        with open(out) as f:
            old = f.read()
    except FileNotFoundError:
        old = ""
    found = bench.marked_section(old, BEGIN, END)
    if found:
        lines = old.splitlines()
        b = found[0]
        e = b + found[1].count("\n")
        text = "\n".join(lines[:b] + section.splitlines() + lines[e + 1:]) + "\n"
    else:
        text = old.rstrip("\n") + "\n\n" + section + "\n"
    with open(out, "w") as f:
        f.write(text)
    print(section)


if __name__ == "__main__":
    main()
