"""rate_limit as a client sees it: 429 with Retry-After, RateLimit-Policy and RateLimit headers
and the JSON error body; keys (client_ip, header); the local store's accuracy across two workers
under wrk; one budget shared by two Turnpike processes through a real redis-server (strict and
async); Redis stopped mid-test (on_redis_failure allow / deny) and recovery; config errors with
file:line:column.
"""

import os
import re
import socket
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

WRK_BIN = "/usr/bin/wrk"


WRK_SCRIPT = r"""
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) ok = 0; limited = 0; other = 0 end
function response(status, headers, body)
  if status == 200 then ok = ok + 1
  elseif status == 429 then limited = limited + 1
  else other = other + 1 end
end
function done(summary, latency, requests)
  local o, l, x = 0, 0, 0
  for _, t in ipairs(threads) do
    o = o + t:get("ok"); l = l + t:get("limited"); x = x + t:get("other")
  end
  io.write(string.format("RESULT ok=%d limited=%d other=%d\n", o, l, x))
end
"""


def wrk(stack, port, path, seconds, connections=8, label="wrk"):
    """wrk against 127.0.0.1:port for `seconds` (it stops itself); returns the Proc."""
    script = stack.path("count.lua")
    if not os.path.exists(script):
        stack.write("count.lua", WRK_SCRIPT)
    return stack.run([WRK_BIN, "-t2", "-c%d" % connections, "-d%ds" % seconds, "--timeout", "5s",
                      "-s", script, "http://127.0.0.1:%d%s" % (port, path)], label)


def wrk_result(proc, timeout):
    """(ok, limited, other) once wrk is done."""
    proc.wait(timeout)
    m = re.search(r"RESULT ok=(\d+) limited=(\d+) other=(\d+)", proc.stdout())
    if not m:
        raise AssertionError("no wrk result\n" + proc.describe())
    return tuple(int(x) for x in m.groups())


def assert_limited(case, r, policy):
    """A 429 from rate_limit: JSON error, Retry-After, the IETF headers."""
    h.assert_json_error(case, r, 429, "rate limit exceeded")
    retry = r.header("retry-after")
    case.assertIsNotNone(retry, r)
    case.assertGreaterEqual(int(retry), 1)
    case.assertEqual(r.header("ratelimit-policy"), policy)
    m = re.fullmatch(r"limit=(\d+), remaining=(\d+), reset=(\d+)", r.header("ratelimit") or "")
    case.assertTrue(m, r)
    case.assertEqual(m.group(2), "0")
    return int(retry), int(m.group(3))


# ---- local store ----------------------------------------------------------------------------

class LocalRateLimitTest(h.TurnpikeCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        s = cls.cstack
        echo = s.echo("up", threads=2)
        filters = {
            "per-ip": {"type": "rate_limit", "rate": "5/min", "burst": 3, "key": "client_ip",
                       "headers": True},
            "by-user": {"type": "rate_limit", "rate": "2/hour", "key": "header:x-user"},
            "anon": {"type": "rate_limit", "rate": "1/hour"},  # key: consumer (none: client_ip)
            "bulk": {"type": "rate_limit", "rate": "1000/hour", "burst": 500, "key": "route"},
        }
        routes = [
            {"name": "ip", "match": {"path_prefix": "/ip"}, "filters": ["per-ip"],
             "backend": "up"},
            {"name": "user", "match": {"path_prefix": "/user"}, "filters": ["by-user"],
             "backend": "up"},
            {"name": "anon", "match": {"path_prefix": "/anon"}, "filters": ["anon"],
             "backend": "up"},
            {"name": "bulk", "match": {"path_prefix": "/bulk"}, "filters": ["bulk"],
             "backend": "up"},
        ]
        cfg = h.config(h.free_port(), [h.listener("main", h.free_port())],
                       [h.cluster("up", echo)], routes, workers=2, filters=filters)
        cls.tp = s.turnpike(cfg)

    def test_over_the_limit_429_with_headers(self):
        allowed = [self.tp.get("/ip") for _ in range(3)]
        for i, r in enumerate(allowed):
            self.assertEqual(r.status, 200, r)
            # headers: true: allowed responses carry them too.
            self.assertEqual(r.header("ratelimit-policy"), "5;w=60;burst=3")
            self.assertRegex(r.header("ratelimit"), r"^limit=5, remaining=%d, reset=\d+$" % (2 - i))
        retry, reset = assert_limited(self, self.tp.get("/ip"), "5;w=60;burst=3")
        # One token every 12 s; the bucket is full again 3 tokens later.
        self.assertLessEqual(retry, 12)
        self.assertLessEqual(reset, 36)
        self.assertGreater(reset, 24)

    def test_header_key_separates_budgets(self):
        for user in ("alice", "bob"):
            for _ in range(2):
                self.assertEqual(self.tp.get("/user", headers=[("X-User", user)]).status, 200)
            r = self.tp.get("/user", headers=[("X-User", user)])
            assert_limited(self, r, "2;w=3600")
            self.assertGreater(int(r.header("retry-after")), 1700)  # one token per 30 min
            # Without headers: true, allowed responses carry none.
        self.assertIsNone(self.tp.get("/user", headers=[("X-User", "carol")])
                          .header("ratelimit"))

    def test_no_consumer_keys_by_client_ip(self):
        self.assertEqual(self.tp.get("/anon").status, 200)
        assert_limited(self, self.tp.get("/anon"), "1;w=3600")

    def test_accuracy_across_two_workers_under_wrk(self):
        # 1000/hour with burst 500: over a few seconds the budget is 500 + 1000 × t / 3600.
        start = time.monotonic()
        proc = wrk(self.stack, self.tp.port, "/bulk", 3, connections=16)
        ok, limited, other = wrk_result(proc, h.scaled(30))
        elapsed = time.monotonic() - start
        expected = 500 + 1000 * elapsed / 3600.0
        sys.stderr.write("\nlocal accuracy: admitted %d of %d (expected %.1f, %.2f%%)\n"
                         % (ok, ok + limited, expected, 100.0 * (ok - expected) / expected))
        self.assertEqual(other, 0)
        self.assertGreater(limited, 1000, "not enough load to test the limit")
        self.assertLessEqual(abs(ok - expected), expected * 0.01)


# ---- Redis store ----------------------------------------------------------------------------

def redis_filters():
    return {
        "shared": {"type": "rate_limit", "rate": "300/hour", "key": "route", "store": "redis"},
        "async": {"type": "rate_limit", "rate": "200/hour", "key": "route", "store": "redis",
                  "sync": "async", "sync_interval": "200ms"},
        "open": {"type": "rate_limit", "rate": "1000/hour", "key": "route", "store": "redis",
                 "on_redis_failure": "allow"},
        "closed": {"type": "rate_limit", "rate": "1000/hour", "key": "route", "store": "redis",
                   "on_redis_failure": "deny"},
    }


def redis_routes():
    return [{"name": n, "match": {"path_prefix": "/" + n}, "filters": [n], "backend": "up"}
            for n in ("shared", "async", "open", "closed")]


def redis_turnpike(stack, echo, redis):
    cfg = h.config(h.free_port(), [h.listener("main", h.free_port())], [h.cluster("up", echo)],
                   redis_routes(), workers=2, filters=redis_filters(),
                   redis={"address": redis.address, "timeout": "200ms",
                          "connect_timeout": "200ms"})
    return stack.turnpike(cfg)


class RedisRateLimitTest(h.TurnpikeCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        s = cls.cstack
        cls.redis = h.Redis(s).start()
        echo = s.echo("up", threads=2)
        cls.a = redis_turnpike(s, echo, cls.redis)
        cls.b = redis_turnpike(s, echo, cls.redis)

    def test_two_instances_share_one_budget(self):
        pa = wrk(self.stack, self.a.port, "/shared", 2, label="wrk-a")
        pb = wrk(self.stack, self.b.port, "/shared", 2, label="wrk-b")
        oka, lima, xa = wrk_result(pa, h.scaled(30))
        okb, limb, xb = wrk_result(pb, h.scaled(30))
        total = oka + okb
        sys.stderr.write("\nredis strict: admitted %d (a %d, b %d) of %d, budget 300\n"
                         % (total, oka, okb, total + lima + limb))
        self.assertEqual((xa, xb), (0, 0))
        self.assertGreater(oka, 0)
        self.assertGreater(okb, 0)
        self.assertLessEqual(abs(total - 300), 3)
        for tp in (self.a, self.b):
            retry, _ = assert_limited(self, tp.get("/shared"), "300;w=3600")
            self.assertLessEqual(retry, 12)  # one token per 12 s

    def test_async_instances_reconcile(self):
        # b looks at the key once, a spends the whole budget, and after a few sync intervals
        # b knows: no round trip on b's path, yet it refuses.
        self.assertEqual(self.b.get("/async").status, 200)
        ok, limited, other = wrk_result(wrk(self.stack, self.a.port, "/async", 1), h.scaled(30))
        self.assertEqual(other, 0)
        self.assertLessEqual(ok, 200)
        self.assertGreaterEqual(ok, 195)
        time.sleep(0.8)
        assert_limited(self, self.b.get("/async"), "200;w=3600")


class RedisFailureTest(h.TurnpikeCase):
    def test_redis_down_then_back(self):
        s = self.stack
        redis = h.Redis(s).start()
        echo = s.echo("up")
        tp = redis_turnpike(s, echo, redis)
        self.assertEqual(tp.get("/open").status, 200)
        self.assertEqual(tp.get("/closed").status, 200)
        redis.stop()
        # allow: requests pass while Redis is gone; deny: 503 with the JSON error body.
        for _ in range(3):
            self.assertEqual(tp.get("/open").status, 200)
            r = tp.get("/closed")
            self.assertEqual(r.status, 503, r)
            self.assertEqual(r.json()["error"], "rate limit store unavailable")
            self.assertEqual(r.json()["request_id"], r.header("x-request-id"))
        # Every request got its answer within the Redis deadline, not the route timeout.
        start = time.monotonic()
        tp.get("/closed")
        self.assertLess(time.monotonic() - start, 1.0)
        h.Redis(s, port=redis.port, label="redis-again").start()
        h.wait_for(lambda: tp.get("/closed").status == 200, h.scaled(10),
                   what="the deny route to recover")
        self.assertEqual(tp.get("/open").status, 200)
        # The operator sees the outage and the recovery in the log, once each per worker
        # however many requests and reconnection attempts there were.
        log = tp.proc.stdout() + tp.proc.stderr()
        lost = "redis 127.0.0.1:%d: redis unavailable" % redis.port
        back = "redis 127.0.0.1:%d: answering again" % redis.port
        self.assertIn(lost, log)
        self.assertIn(back, log)
        self.assertLessEqual(log.count(lost), 2, log)  # two workers


class RedisSilentTest(h.TurnpikeCase):
    def test_route_deadline_before_the_redis_deadline(self):
        # A "Redis" that accepts connections and never answers; the route's deadline (300 ms)
        # comes before Redis's (2 s): 504 at the route deadline, and the Redis reply that
        # never comes (its timeout, 2 s later) changes nothing: the daemon keeps serving.
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        try:
            s = self.stack
            echo = s.echo("up")
            routes = [{"name": "closed", "match": {"path_prefix": "/closed"},
                       "filters": ["closed"], "backend": "up", "timeout": "300ms"},
                      {"name": "plain", "match": {"path_prefix": "/plain"}, "backend": "up"}]
            cfg = h.config(h.free_port(), [h.listener("main", h.free_port())],
                           [h.cluster("up", echo)], routes, workers=1, filters=redis_filters(),
                           redis={"address": "127.0.0.1:%d" % silent.getsockname()[1],
                                  "timeout": "2s", "connect_timeout": "1s"})
            tp = s.turnpike(cfg)
            for _ in range(3):
                start = time.monotonic()
                r = tp.get("/closed")
                self.assertEqual(r.status, 504, r)
                self.assertEqual(r.json()["error"], "filter timed out")
                self.assertLess(time.monotonic() - start, 1.5)
            time.sleep(2.5)  # the Redis commands time out now, with nobody waiting
            self.assertEqual(tp.get("/plain").status, 200)
            self.assertIsNone(tp.proc.poll())
        finally:
            silent.close()


# ---- config errors --------------------------------------------------------------------------

BAD = """admin:
  listen: "127.0.0.1:{admin}"
listeners:
  - name: main
    listen: "127.0.0.1:{port}"
clusters:
  - name: up
    endpoints: ["127.0.0.1:9"]
filters:
  a:
    type: rate_limit
    rate: 10/fortnight
  b:
    type: rate_limit
    rate: 10/s
    brust: 5
  c:
    type: rate_limit
    rate: 10/s
    store: memcached
  d:
    type: rate_limit
    rate: 10/s
    store: redis
  e:
    type: rate_limit
    rate: 10/s
    key: [consumer, header:x y]
  f:
    type: rate_limit
    rate: 10/s
    sync: async
routes:
  - name: r
    backend: up
    filters: [a, b, c, d, e, f]
"""

EXPECTED = [
    (12, 11, "filters.a.rate: invalid rate unit in '10/fortnight' (units: s, min, hour or day)"),
    (16, 5, "filters.b: unknown key 'brust' (did you mean 'burst'?)"),
    (20, 12, "filters.c.store: invalid store 'memcached' (expected local or redis)"),
    (24, 12, "filters.d.store: store: redis needs a top-level redis: section"),
    (28, 21, "filters.e.key[1]: 'x y' is not a valid header name"),
    (32, 11, "filters.f.sync: only with store: redis"),
]


class RateLimitConfigErrorsTest(h.TurnpikeCase):
    def test_errors_with_file_line_column(self):
        self.assertConfigErrors(BAD, EXPECTED, count=6)


if __name__ == "__main__":
    unittest.main()
