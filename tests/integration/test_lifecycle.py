"""The daemon's life: `check` and invalid configs (exit 1, exact file:line:col messages),
--version/--help, graceful drain on SIGTERM/SIGINT, the access log, the admin listener
(/ready, /config, /explain) and `turnpike explain` offline.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

ACCESS_LOG_FIELDS = ("ts", "request_id", "client", "method", "path", "status", "bytes_in",
                     "bytes_out", "duration_ms", "route", "consumer", "cluster", "upstream",
                     "upstream_ms", "upstream_attempts", "upstream_failures", "response_reason")

# Line numbers matter: the expected messages below point into this text.
INVALID_CONFIG = """\
workers: 1
admin:
  listen: "127.0.0.1:{admin}"
listeners:
  - name: public
    listen: "127.0.0.1:{port}"
clusters:
  - name: users
    endpoints: ["127.0.0.1:9"]
routes:
  - name: bad
    match:
      path_prefix: users
    backend: users
"""
# routes[0].match.path_prefix: the value `users` is at line 13, column 20.
INVALID_LINE, INVALID_COL = 13, 20

SEVERAL_ERRORS_CONFIG = """\
workers: 1
admin:
  listen: "127.0.0.1:{admin}"
listeners:
  - name: public
    listen: "127.0.0.1:{port}"
clusters:
  - name: users
    endpoints: ["127.0.0.1:9"]
routes:
  - name: one
    match: {{path_prefix: /one}}
    backend: nosuchcluster
  - name: two
    match: {{path: /two}}
    backend: users
    timout: 5s
"""


def run_cli(*args, timeout=None):
    return subprocess.run([h.TURNPIKE_BIN] + list(args), stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          timeout=timeout or h.scaled(20))


def out(p):
    return "exit %s\n[stdout]\n%s\n[stderr]\n%s" % (
        p.returncode, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace"))


def find_strings(obj):
    """Every string anywhere in a JSON value (keys included)."""
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield k
            yield from find_strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from find_strings(v)


class CliTest(h.TurnpikeCase):
    def valid_config(self):
        echo_addr = "127.0.0.1:%d" % h.free_port()
        cfg = h.config(h.free_port(), [h.listener("public", h.free_port())],
                       [h.cluster("users", echo_addr)],
                       [{"name": "all", "match": {"path_prefix": "/"}, "backend": "users"}])
        return self.stack.write("good.yaml", h.to_yaml(cfg) + "\n")

    def invalid_config(self, text=INVALID_CONFIG, name="bad.yaml"):
        return self.stack.write(name, text.format(admin=h.free_port(), port=h.free_port()))

    def test_version_and_help(self):
        p = run_cli("--version")
        self.assertEqual(p.returncode, 0, out(p))
        self.assertRegex(p.stdout.decode(), r"turnpike \d+\.\d+\.\d+")
        p = run_cli("--help")
        self.assertEqual(p.returncode, 0, out(p))
        text = p.stdout.decode()
        for word in ("-c", "check", "explain"):
            self.assertIn(word, text)

    def test_check_valid_config(self):
        p = run_cli("check", "-c", self.valid_config())
        self.assertEqual(p.returncode, 0, out(p))

    def test_check_invalid_config_exact_message(self):
        path = self.invalid_config()
        p = run_cli("check", "-c", path)
        self.assertEqual(p.returncode, 1, out(p))
        expected = "%s:%d:%d: routes[0].match.path_prefix: must start with '/'" % (
            path, INVALID_LINE, INVALID_COL)
        self.assertIn(expected, p.stderr.decode(), out(p))

    def test_check_reports_every_error(self):
        path = self.invalid_config(SEVERAL_ERRORS_CONFIG, "several.yaml")
        p = run_cli("check", "-c", path)
        self.assertEqual(p.returncode, 1, out(p))
        lines = p.stderr.decode().splitlines()
        cluster_err = [l for l in lines if "routes[0].backend" in l]
        self.assertTrue(cluster_err, "unknown cluster not reported\n" + out(p))
        self.assertTrue(cluster_err[0].startswith("%s:13:14: " % path), cluster_err[0])
        self.assertIn("nosuchcluster", cluster_err[0])
        key_err = [l for l in lines if "timout" in l]
        self.assertTrue(key_err, "unknown key not reported\n" + out(p))
        self.assertTrue(key_err[0].startswith("%s:17:5: routes[1]" % path), key_err[0])
        self.assertIn("timeout", key_err[0].replace("timout", ""), "no did-you-mean")

    def test_refuses_to_start_on_invalid_config(self):
        path = self.invalid_config()
        proc = self.stack.run([h.TURNPIKE_BIN, "-c", path], "turnpike-bad")
        try:
            rc = proc.wait(h.scaled(10))
        except subprocess.TimeoutExpired:
            self.fail("turnpike kept running on an invalid config")
        self.assertEqual(rc, 1, proc.describe())
        self.assertIn("routes[0].match.path_prefix: must start with '/'", proc.stderr())


class DrainTest(h.TurnpikeCase):
    def start(self, drain_timeout="10s"):
        echo = self.stack.echo("echo")
        routes = [{"name": "all", "match": {"path_prefix": "/"}, "backend": "echo",
                   "timeout": "30s"}]
        cfg = h.config(h.free_port(), [h.listener("public", h.free_port())],
                       [h.cluster("echo", echo)], routes, drain_timeout=drain_timeout)
        return self.stack.turnpike(cfg)

    def in_flight(self, tp, path, n):
        results = [None] * n

        def one(i):
            try:
                with tp.conn(timeout=h.scaled(10)) as c:
                    results[i] = c.request("GET", path)
            except Exception as e:  # reported by the assertions below
                results[i] = e

        threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
        for t in threads:
            t.start()
        return threads, results

    def assertRefused(self, port):
        try:
            with h.HttpConn(port, timeout=2) as c:
                r = c.request("GET", "/new", headers=[("Connection", "close")])
        except (ConnectionRefusedError, ConnectionResetError, h.HttpError):
            return
        self.fail("a new connection was served while draining: %r" % r)

    def test_sigterm_lets_in_flight_requests_finish(self):
        tp = self.start()
        threads, results = self.in_flight(tp, "/delay/1500", 5)
        time.sleep(0.5)  # all five are now waiting on the upstream
        t0 = time.monotonic()
        tp.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        self.assertEqual(tp.ready_status(), 503, "/ready while draining")
        self.assertRefused(tp.port)
        for t in threads:
            t.join(h.scaled(10))
        for r in results:
            self.assertIsInstance(r, h.Response, "in-flight request failed: %r" % (r,))
            self.assertEqual(r.status, 200, repr(r))
            self.assertEqual(r.json()["path"], "/delay/1500")
        try:
            rc = tp.proc.wait(h.scaled(10))
        except subprocess.TimeoutExpired:
            self.fail("turnpike did not exit after draining")
        self.assertEqual(rc, 0, tp.proc.describe())
        self.assertLess(time.monotonic() - t0, h.scaled(4), "drain took too long")
        self.assertRefused(tp.port)

    def test_sigterm_closes_idle_keepalive_connections_and_exits(self):
        tp = self.start()
        with tp.conn() as c:
            self.assertEqual(c.request("GET", "/a").status, 200)
            t0 = time.monotonic()
            tp.proc.send_signal(signal.SIGTERM)
            closed, _ = c.wait_closed(h.scaled(3))
            self.assertTrue(closed, "idle keep-alive connection kept open while draining")
        try:
            rc = tp.proc.wait(h.scaled(5))
        except subprocess.TimeoutExpired:
            self.fail("turnpike waited on an idle connection (drain_timeout is 10s)")
        self.assertEqual(rc, 0, tp.proc.describe())
        self.assertLess(time.monotonic() - t0, h.scaled(3))

    def test_drain_timeout_bounds_shutdown(self):
        tp = self.start(drain_timeout="1s")
        threads, results = self.in_flight(tp, "/delay/8000", 1)
        time.sleep(0.5)
        t0 = time.monotonic()
        tp.proc.send_signal(signal.SIGTERM)
        try:
            rc = tp.proc.wait(h.scaled(6))
        except subprocess.TimeoutExpired:
            self.fail("turnpike ignored drain_timeout (1s)")
        elapsed = time.monotonic() - t0
        self.assertEqual(rc, 0, tp.proc.describe())
        self.assertGreater(elapsed, 0.8, "exited before drain_timeout with a request in flight")
        self.assertLess(elapsed, h.scaled(3.5))
        threads[0].join(h.scaled(5))
        self.assertFalse(threads[0].is_alive(), "client left hanging after shutdown")

    def test_sigint_exits_zero(self):
        tp = self.start()
        self.assertEqual(tp.get("/x").status, 200)
        tp.proc.send_signal(signal.SIGINT)
        try:
            rc = tp.proc.wait(h.scaled(5))
        except subprocess.TimeoutExpired:
            self.fail("turnpike did not exit on SIGINT")
        self.assertEqual(rc, 0, tp.proc.describe())


class AccessLogTest(h.TurnpikeCase):
    def test_one_json_line_per_request(self):
        echo = self.stack.echo("echo")
        log_path = self.stack.path("access.log")
        routes = [
            {"name": "health", "match": {"path": "/healthz"},
             "respond": {"status": 200, "body": "ok"}},
            {"name": "logged", "match": {"path_prefix": "/logged"}, "backend": "echo"},
        ]
        cfg = h.config(h.free_port(), [h.listener("public", h.free_port())],
                       [h.cluster("echo", echo)], routes, access_log=log_path)
        tp = self.stack.turnpike(cfg)
        r1 = tp.get("/logged/1", headers=[("X-Request-Id", "log-rid-1")])
        self.assertEqual(r1.status, 200)
        r2 = tp.request("POST", "/logged/2", body=b"hello world")
        self.assertEqual(r2.status, 200)
        self.assertEqual(tp.get("/healthz").status, 200)
        r4 = tp.get("/nothing")
        self.assertEqual(r4.status, 404)

        def lines():
            try:
                with open(log_path) as f:
                    text = f.read()
            except OSError:
                return None
            got = [l for l in text.splitlines() if l.strip()]
            return got if len(got) >= 4 else None

        got = h.wait_for(lines, h.scaled(5), what="4 access log lines in %s" % log_path)
        self.assertEqual(len(got), 4, got)
        entries = []
        for line in got:
            try:
                entries.append(json.loads(line))
            except ValueError:
                self.fail("access log line is not JSON: %r" % line)
        for e in entries:
            missing = [f for f in ACCESS_LOG_FIELDS if f not in e]
            self.assertFalse(missing, "fields %s missing in %r" % (missing, e))
        by_path = {e["path"]: e for e in entries}
        self.assertEqual(set(by_path), {"/logged/1", "/logged/2", "/healthz", "/nothing"})

        e = by_path["/logged/1"]
        self.assertEqual(e["request_id"], "log-rid-1")
        self.assertEqual((e["method"], e["status"], e["route"], e["cluster"]),
                         ("GET", 200, "logged", "echo"))
        self.assertEqual(e["upstream"], echo.addr)
        self.assertTrue(str(e["client"]).startswith("127.0.0.1"), e)
        self.assertTrue(e["ts"], e)
        self.assertGreaterEqual(e["bytes_out"], len(r1.body))
        self.assertGreaterEqual(e["duration_ms"], 0)
        self.assertGreaterEqual(e["upstream_ms"], 0)
        self.assertLessEqual(e["upstream_ms"], e["duration_ms"] + 1)

        e = by_path["/logged/2"]
        self.assertEqual((e["method"], e["status"]), ("POST", 200))
        self.assertGreaterEqual(e["bytes_in"], len(b"hello world"))
        self.assertEqual(e["request_id"], r2.header("x-request-id"))

        e = by_path["/healthz"]
        self.assertEqual((e["status"], e["route"]), (200, "health"))
        self.assertIn(e["cluster"], (None, "", "-"))

        e = by_path["/nothing"]
        self.assertEqual(e["status"], 404)
        self.assertIn(e["route"], (None, "", "-"))


class AdminTest(h.TurnpikeCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        s = cls.cstack
        echo = s.echo("users")
        routes = [
            {"name": "health", "match": {"path": "/healthz"},
             "respond": {"status": 200, "body": "ok"}},
            {"name": "users-api", "match": {"host": "api.example.com", "path_prefix": "/users",
                                            "methods": ["GET", "POST"]},
             "backend": "users", "rewrite": {"path_prefix": "/v1/users"}, "timeout": "15s"},
            {"name": "moved", "match": {"path_prefix": "/old"},
             "redirect": {"status": 301, "location": "https://example.com/new"}},
        ]
        cfg = h.config(h.free_port(), [h.listener("public", h.free_port())],
                       [h.cluster("users", echo)], routes)
        cls.tp = s.turnpike(cfg)

    def admin_json(self, path):
        r = self.tp.admin("GET", path)
        self.assertEqual(r.status, 200, repr(r))
        return r.json()

    def explain(self, method, host, path):
        q = urllib.parse.urlencode({"method": method, "host": host, "path": path})
        return self.admin_json("/explain?" + q)

    def test_ready(self):
        self.assertEqual(self.tp.admin("GET", "/ready").status, 200)

    def test_admin_is_not_the_traffic_listener(self):
        self.assertEqual(self.tp.get("/ready").status, 404)

    def test_config(self):
        cfg = self.admin_json("/config")
        strings = set(find_strings(cfg))
        for name in ("users-api", "health", "moved", "users", "public", "/v1/users"):
            self.assertIn(name, strings, "GET /config lacks %r" % name)
        self.assertEqual(cfg["generation"], 1)
        self.assertRegex(cfg["digest"], r"^[0-9a-f]{64}$")
        self.assertTrue(cfg["source_file"].endswith(".yaml"), cfg["source_file"])

    def assertUsersApiMatch(self, ex):
        m = ex.get("matched")
        self.assertIsNotNone(m, ex)
        self.assertEqual((m["route"], m["index"], m["action"]), ("users-api", 1, "proxy"))
        clusters = [c if isinstance(c, str) else c.get("cluster") for c in m["clusters"]]
        self.assertEqual(clusters, ["users"])
        self.assertIn("/v1/users", json.dumps(m["rewrite"]))
        nm = ex.get("not_matched")
        self.assertEqual([(x["route"], x["index"]) for x in nm], [("health", 0)], ex)
        self.assertTrue(nm[0]["reason"], ex)

    def test_explain_match(self):
        self.assertUsersApiMatch(self.explain("GET", "api.example.com", "/users/7"))

    def test_explain_redirect(self):
        m = self.explain("GET", "any.host", "/old/x")["matched"]
        self.assertEqual((m["route"], m["index"], m["action"]), ("moved", 2, "redirect"))

    def test_explain_no_match_gives_every_reason(self):
        ex = self.explain("DELETE", "api.example.com", "/users/7")
        self.assertIsNone(ex["matched"], ex)
        nm = ex["not_matched"]
        self.assertEqual([(x["route"], x["index"]) for x in nm],
                         [("health", 0), ("users-api", 1), ("moved", 2)])
        for x in nm:
            self.assertTrue(x["reason"], x)
        self.assertIn("method", nm[1]["reason"].lower(), "users-api fails on its methods")

    def test_cli_explain_prints_the_same(self):
        p = run_cli("explain", "-c", self.tp.config_path, "GET",
                    "http://api.example.com/users/7")
        self.assertEqual(p.returncode, 0, out(p))
        try:
            offline = json.loads(p.stdout)
        except ValueError:
            self.fail("turnpike explain did not print JSON\n" + out(p))
        self.assertUsersApiMatch(offline)
        online = self.explain("GET", "api.example.com", "/users/7")
        self.assertEqual(offline["matched"], online["matched"])
        self.assertEqual(offline["not_matched"], online["not_matched"])


if __name__ == "__main__":
    unittest.main()
