"""Load-balancing policies (clusters[].lb_policy, hash_on) as a user sees them: three real echo
backends, each naming itself in X-Upstream-Name, behind the real turnpike binary. Consistent
hashing sends one key to one backend every time, on every worker and in a second Turnpike
process; round robin honours weights; least_request steers around a backend that is busy;
random spreads by weight; a bad policy or hash_on is refused with file:line:column.
"""

import collections
import os
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


def backend_of(r):
    return r.header("X-Upstream-Name")


class LoadBalancingTest(h.TurnpikeCase):
    def start(self, policy, weights=(1, 1, 1), **extra):
        self.echos = [self.stack.echo("b%d" % i) for i in range(len(weights))]
        endpoints = [{"address": e.addr, "weight": w} for e, w in zip(self.echos, weights)]
        cl = {"name": "pool", "endpoints": endpoints, "connect_timeout": "1s",
              "lb_policy": policy}
        cl.update(extra)
        cfg = h.config(h.free_port(), [h.listener("public", h.free_port())], [cl],
                       [{"name": "all", "match": {"path_prefix": "/"}, "backend": "pool"}],
                       workers=2)
        return self.stack.turnpike(cfg)

    def spread(self, tp, n, path="/", headers=()):
        seen = collections.Counter()
        for _ in range(n):
            r = tp.get(path, headers=list(headers))
            self.assertEqual(r.status, 200, r.body)
            seen[backend_of(r)] += 1
        return seen

    def test_ring_hash_on_a_header_sends_each_key_to_one_backend(self):
        tp = self.start("ring_hash", hash_on={"header": "X-User"})
        owners = {}
        for user in ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"]:
            # New connections land on either worker: the choice must not depend on it.
            seen = self.spread(tp, 6, headers=[("X-User", user)])
            self.assertEqual(len(seen), 1, "%s went to %s" % (user, dict(seen)))
            owners[user] = next(iter(seen))
        self.assertGreater(len(set(owners.values())), 1, "every key on one backend: %s" % owners)
        # Without the key, the request is balanced at random over all backends.
        self.assertEqual(len(self.spread(tp, 60)), 3)

        # A second Turnpike with the same backends agrees on every key (the hash is the same
        # on every instance, so instances behind one load balancer keep keys together).
        tp2 = self.stack.turnpike(
            h.config(h.free_port(), [h.listener("public", h.free_port())],
                     [{"name": "pool", "connect_timeout": "1s", "lb_policy": "ring_hash",
                       "hash_on": {"header": "x-user"},
                       "endpoints": [{"address": e.addr, "weight": 1} for e in self.echos]}],
                     [{"name": "all", "match": {"path_prefix": "/"}, "backend": "pool"}]))
        for user, owner in owners.items():
            self.assertEqual(backend_of(tp2.get("/", headers=[("X-User", user)])), owner, user)

    def test_maglev_on_a_cookie_and_on_a_query_parameter(self):
        tp = self.start("maglev", hash_on={"cookie": "session"})
        owners = set()
        for sid in ["s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9"]:
            seen = self.spread(tp, 4, headers=[("Cookie", "theme=dark; session=%s" % sid)])
            self.assertEqual(len(seen), 1, "%s went to %s" % (sid, dict(seen)))
            owners.add(next(iter(seen)))
        self.assertGreater(len(owners), 1)
        # The other cookies do not matter; only the named one is the key.
        a = self.spread(tp, 4, headers=[("Cookie", "session=s1; theme=light")])
        b = self.spread(tp, 4, headers=[("Cookie", "theme=dark; session=s1")])
        self.assertEqual(a, b)

    def test_maglev_on_a_query_parameter(self):
        tp = self.start("maglev", hash_on={"query": "tenant"})
        for tenant in ["t1", "t2", "t3", "t4", "t5"]:
            seen = self.spread(tp, 4, path="/api?x=1&tenant=%s&y=2" % tenant)
            self.assertEqual(len(seen), 1, "%s went to %s" % (tenant, dict(seen)))

    def test_ring_hash_on_client_ip_keeps_one_client_on_one_backend(self):
        tp = self.start("ring_hash", hash_on="client_ip")
        self.assertEqual(len(self.spread(tp, 12)), 1)

    def test_ring_hash_on_the_authenticated_consumer(self):
        self.echos = [self.stack.echo("b%d" % i) for i in range(3)]
        consumers = [{"name": "c%d" % i, "api_keys": ["key-%d-0123456789abcdef" % i]}
                     for i in range(8)]
        cl = {"name": "pool", "connect_timeout": "1s", "lb_policy": "ring_hash",
              "hash_on": "consumer", "endpoints": [e.addr for e in self.echos]}
        tp = self.stack.turnpike(h.config(
            h.free_port(), [h.listener("public", h.free_port())], [cl],
            [{"name": "all", "match": {"path_prefix": "/"}, "filters": ["key"],
              "backend": "pool"}],
            consumers=consumers, filters={"key": {"type": "api_key"}}))
        owners = set()
        for i in range(8):
            seen = self.spread(tp, 4, headers=[("X-Api-Key", "key-%d-0123456789abcdef" % i)])
            self.assertEqual(len(seen), 1, "c%d went to %s" % (i, dict(seen)))
            owners.add(next(iter(seen)))
        self.assertGreater(len(owners), 1)

    def test_round_robin_honours_weights(self):
        tp = self.start("round_robin", weights=(3, 1, 1))
        # Sequential requests alternate over two workers, each with its own rotation: over a
        # multiple of the weights' sum per worker, the shares are exact within one round.
        seen = self.spread(tp, 100)
        self.assertAlmostEqual(seen["b0"] / 100, 0.6, delta=0.1)
        self.assertAlmostEqual(seen["b1"] / 100, 0.2, delta=0.1)
        self.assertAlmostEqual(seen["b2"] / 100, 0.2, delta=0.1)

    def test_random_spreads_by_weight(self):
        tp = self.start("random", weights=(1, 1, 2))
        seen = self.spread(tp, 400)
        self.assertEqual(set(seen), {"b0", "b1", "b2"})
        self.assertGreater(seen["b2"], seen["b0"])
        self.assertGreater(seen["b2"], seen["b1"])

    def test_least_request_steers_around_a_slow_backend(self):
        # One backend answers after 300 ms, two at once. Under concurrent load, round robin gives
        # the slow one a third of the requests; least_request (power of two choices over active
        # requests) sees it holding requests and sends it almost nothing.
        slow = h.CannedBackend("slow", delay=0.3)
        self.addCleanup(slow.stop)
        fast = [self.stack.echo("f%d" % i) for i in range(2)]

        def share_of_slow(policy):
            cl = {"name": "pool", "connect_timeout": "1s", "lb_policy": policy,
                  "endpoints": [slow.addr] + [e.addr for e in fast]}
            tp = self.stack.turnpike(h.config(
                h.free_port(), [h.listener("public", h.free_port())], [cl],
                [{"name": "all", "match": {"path_prefix": "/"}, "backend": "pool"}], workers=1),
                name=policy + ".yaml")
            seen = collections.Counter()
            lock = threading.Lock()
            stop_at = time.monotonic() + 2.0

            def client():
                c = tp.conn(timeout=10)
                try:
                    while time.monotonic() < stop_at:
                        r = c.request("GET", "/")
                        with lock:
                            seen[backend_of(r)] += 1
                finally:
                    c.close()

            threads = [threading.Thread(target=client) for _ in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            tp.proc.stop()
            return seen["slow"] / sum(seen.values()), seen

        rr, rr_seen = share_of_slow("round_robin")
        lr, lr_seen = share_of_slow("least_request")
        self.assertGreater(rr, 0.25, rr_seen)   # round robin: a third, whatever it costs
        self.assertLess(lr, 0.1, lr_seen)       # least_request: steered away
        self.assertGreater(sum(lr_seen.values()), 3 * sum(rr_seen.values()),
                           "least_request served no more: %s vs %s" % (lr_seen, rr_seen))

    def test_a_reload_that_changes_only_the_policy_applies_it(self):
        tp = self.start("round_robin")
        self.assertEqual(len(self.spread(tp, 12, headers=[("X-User", "alice")])), 3)
        cfg = dict(tp.cfg)
        cfg["clusters"] = [dict(cfg["clusters"][0], lb_policy="ring_hash",
                                hash_on={"header": "X-User"})]
        with open(tp.config_path, "w") as f:
            f.write(h.to_yaml(cfg) + "\n")
        r = tp.admin("POST", "/reload")
        self.assertEqual(r.status, 200, r.body)
        # The pool's balancer is the new policy's: one key, one backend.
        self.assertEqual(len(self.spread(tp, 12, headers=[("X-User", "alice")])), 1)

    def test_a_bad_policy_or_hash_on_is_refused_with_its_position(self):
        path = self.stack.write("bad.yaml", """admin: {listen: 127.0.0.1:1}
listeners:
  - {name: public, listen: 127.0.0.1:2}
clusters:
  - name: a
    endpoints: ["127.0.0.1:3"]
    lb_policy: ring_hsh
  - name: b
    endpoints: ["127.0.0.1:3"]
    lb_policy: maglev
  - name: c
    endpoints: ["127.0.0.1:3"]
    hash_on: {header: x-user}
  - name: d
    endpoints: ["127.0.0.1:3"]
    lb_policy: ring_hash
    hash_on: {url: x}
routes:
  - {match: {path_prefix: /}, backend: a}
""")
        r = subprocess.run([h.TURNPIKE_BIN, "check", "-c", path], capture_output=True,
                           text=True, timeout=30)
        self.assertNotEqual(r.returncode, 0)
        out = r.stdout + r.stderr
        self.assertIn("bad.yaml:7:16: clusters[0].lb_policy: unsupported lb_policy 'ring_hsh'",
                      out)
        self.assertIn("did you mean 'ring_hash'?", out)
        self.assertIn("bad.yaml:10:16: clusters[1].lb_policy: maglev needs hash_on", out)
        self.assertIn("bad.yaml:13:14: clusters[2].hash_on: hash_on needs lb_policy ring_hash or "
                      "maglev", out)
        self.assertIn("bad.yaml:17:15: clusters[3].hash_on: unknown key 'url'", out)


if __name__ == "__main__":
    unittest.main()
