"""quota as a client sees it, with a real redis-server: N per calendar day (UTC) and per month,
429 with Retry-After to the reset, X-Quota-Reset and the RateLimit headers; the count survives a
Turnpike restart and is shared by two instances; requests without a consumer pass, or get 403
with require_consumer; Redis down: on_redis_failure; config errors with file:line:column.
"""

import datetime
import os
import re
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


def next_midnight(now):
    return (now + datetime.timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)


def next_month(now):
    first = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return (first + datetime.timedelta(days=32)).replace(day=1)


def quota_config(redis, echo, admin=None, port=None):
    filters = {
        "daily": {"type": "quota", "limit": "5/day", "key": "header:x-user", "headers": True},
        "monthly": {"type": "quota", "limit": "2/month", "key": "header:x-user"},
        "members": {"type": "quota", "limit": "100/day", "require_consumer": True},
        "anyone": {"type": "quota", "limit": "100/day"},
        "closed": {"type": "quota", "limit": "100/day", "key": "client_ip",
                   "on_redis_failure": "deny"},
        "open": {"type": "quota", "limit": "100/day", "key": "client_ip"},
    }
    routes = [{"name": n, "match": {"path_prefix": "/" + n}, "filters": [n], "backend": "up"}
              for n in filters]
    return h.config(admin or h.free_port(), [h.listener("main", port or h.free_port())],
                    [h.cluster("up", echo)], routes, workers=2, filters=filters,
                    redis={"address": redis.address, "timeout": "200ms",
                           "connect_timeout": "200ms"})


class QuotaTest(h.TurnpikeCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        s = cls.cstack
        cls.redis = h.Redis(s).start()
        cls.echo = s.echo("up")
        cls.cfg_a = quota_config(cls.redis, cls.echo)
        cls.a = s.turnpike(cls.cfg_a, name="a.yaml")
        cls.b = s.turnpike(quota_config(cls.redis, cls.echo), name="b.yaml")

    def setUp(self):
        super().setUp()
        now = datetime.datetime.now(datetime.timezone.utc)
        if (next_midnight(now) - now).total_seconds() < 30:
            self.skipTest("too close to the UTC day change for a stable window")

    def get(self, tp, path, user):
        return tp.get(path, headers=[("X-User", user)])

    def assert_over(self, r, limit, reset_at, window):
        self.assertEqual(r.status, 429, r)
        body = r.json()
        self.assertEqual(set(body), {"error", "request_id"})
        self.assertEqual(body["error"], "quota exceeded")
        now = datetime.datetime.now(datetime.timezone.utc)
        to_reset = (reset_at - now).total_seconds()
        self.assertLessEqual(abs(int(r.header("retry-after")) - to_reset), 5, r)
        self.assertEqual(r.header("x-quota-reset"), reset_at.strftime("%Y-%m-%dT%H:%M:%SZ"))
        self.assertEqual(r.header("ratelimit-policy"), "%d;w=%d" % (limit, window))
        m = re.fullmatch(r"limit=(\d+), remaining=(\d+), reset=(\d+)", r.header("ratelimit"))
        self.assertTrue(m, r)
        self.assertEqual((int(m.group(1)), int(m.group(2))), (limit, 0))

    def test_daily_quota(self):
        for i in range(5):
            r = self.get(self.a, "/daily", "ann")
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.header("x-quota-remaining"), str(4 - i))
            self.assertEqual(r.header("x-quota-limit"), "5")
        now = datetime.datetime.now(datetime.timezone.utc)
        self.assert_over(self.get(self.a, "/daily", "ann"), 5, next_midnight(now), 86400)
        # Refused requests do not count: still 5 in Redis, under the day's key.
        key = "turnpike:quota:daily:h=ann:" + now.strftime("%Y-%m-%d")
        self.assertEqual(self.redis.command("GET", key), "$1\r\n5\r\n")
        ttl = int(self.redis.command("TTL", key)[1:])
        self.assertLessEqual(abs(ttl - ((next_midnight(now) - now).total_seconds() + 3600)), 5)
        # Another user has a quota of their own.
        self.assertEqual(self.get(self.a, "/daily", "ben").status, 200)

    def test_monthly_quota(self):
        self.assertEqual(self.get(self.a, "/monthly", "cy").status, 200)
        self.assertEqual(self.get(self.a, "/monthly", "cy").status, 200)
        now = datetime.datetime.now(datetime.timezone.utc)
        nm = next_month(now)
        first = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        self.assert_over(self.get(self.a, "/monthly", "cy"), 2, nm,
                         int((nm - first).total_seconds()))

    def test_two_instances_share_and_restart_keeps_the_count(self):
        for _ in range(3):
            self.assertEqual(self.get(self.a, "/daily", "dee").status, 200)
        for _ in range(2):
            self.assertEqual(self.get(self.b, "/daily", "dee").status, 200)
        self.assertEqual(self.get(self.a, "/daily", "dee").status, 429)
        self.assertEqual(self.get(self.b, "/daily", "dee").status, 429)
        self.assertEqual(self.get(self.a, "/daily", "eve").status, 200)
        self.assertEqual(self.get(self.a, "/daily", "eve").status, 200)
        # Restart: a process of its own, stopped and started again on the same config.
        cfg = quota_config(self.redis, self.echo)
        c = self.stack.turnpike(cfg, name="c.yaml")
        self.assertEqual(self.get(c, "/daily", "eve").status, 200)
        c.proc.stop()
        c = self.stack.turnpike(cfg, name="c.yaml")
        self.assertEqual(self.get(c, "/daily", "dee").status, 429)
        for i in range(2):
            r = self.get(c, "/daily", "eve")
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.header("x-quota-remaining"), str(1 - i))
        self.assertEqual(self.get(c, "/daily", "eve").status, 429)

    def test_requests_without_a_consumer(self):
        # No authentication filter ran: no consumer.
        self.assertEqual(self.a.get("/anyone").status, 200)
        r = self.a.get("/members")
        self.assertEqual(r.status, 403, r)
        self.assertEqual(r.json()["error"], "quota needs an authenticated consumer")


class QuotaRedisDownTest(h.TurnpikeCase):
    def test_failure_policy_and_recovery(self):
        s = self.stack
        redis = h.Redis(s).start()
        tp = s.turnpike(quota_config(redis, s.echo("up")))
        self.assertEqual(tp.get("/closed").status, 200)
        redis.stop()
        self.assertEqual(tp.get("/open").status, 200)
        r = tp.get("/closed")
        self.assertEqual(r.status, 503, r)
        self.assertEqual(r.json()["error"], "quota store unavailable")
        h.Redis(s, port=redis.port, label="redis-again").start()
        h.wait_for(lambda: tp.get("/closed").status == 200, h.scaled(10),
                   what="the deny route to recover")


BAD = """admin:
  listen: "127.0.0.1:{admin}"
listeners:
  - name: main
    listen: "127.0.0.1:{port}"
clusters:
  - name: up
    endpoints: ["127.0.0.1:9"]
filters:
  q1:
    type: quota
    limit: 10/hour
  q2:
    type: quota
    limit: 10/day
    on_redis_failure: maybe
  q3:
    type: quota
    limit: 10/day
    requre_consumer: true
routes:
  - name: r
    backend: up
    filters: [q1, q2, q3]
"""

EXPECTED = [
    (12, 12, "filters.q1.limit: a quota is per calendar day or month: use N/day or N/month"),
    (16, 23, "filters.q2.on_redis_failure: invalid on_redis_failure 'maybe' (expected allow or "
             "deny)"),
    (20, 5, "filters.q3: unknown key 'requre_consumer' (did you mean 'require_consumer'?)"),
]


class QuotaConfigErrorsTest(h.TurnpikeCase):
    def test_errors_with_file_line_column(self):
        err = self.assertConfigErrors(BAD, EXPECTED)
        # No redis: section: reported once per quota that parsed.
        self.assertIn("quota needs a top-level redis: section", err)


if __name__ == "__main__":
    unittest.main()
