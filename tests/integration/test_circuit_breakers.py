"""Circuit breakers (clusters[].limits) and "no healthy upstream", as a user sees them with a
real slow backend: requests past max_requests are refused at once with a 503 JSON answer that
says why (X-Turnpike-Overloaded), gRPC clients get RESOURCE_EXHAUSTED; at max_connections a
request waits for a connection in a queue bounded by max_pending_requests and by
connect_timeout, and the backend never sees more connections than the limit; max_retries caps
retries that may reach a backend (not a failed connect's); a cluster with every endpoint unhealthy and panic_threshold
0 answers 503 "no healthy upstream". The access log says which (response_reason).
"""

import json
import os
import signal
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


class CircuitBreakerTest(h.TurnpikeCase):
    def start(self, backends, limits, connect_timeout="2s", **cluster):
        cl = {"name": "pool", "connect_timeout": connect_timeout,
              "endpoints": [getattr(b, "addr", b) for b in backends], "limits": limits}
        cl.update(cluster)
        self.log_path = self.stack.path("access.log")
        # One worker: the limits are per process, each worker enforcing its share.
        return self.stack.turnpike(h.config(
            h.free_port(), [h.listener("public", h.free_port())], [cl],
            [{"name": "all", "match": {"path_prefix": "/"}, "backend": "pool", "timeout": "20s"}],
            workers=1, access_log=self.log_path))

    def slow(self, delay):
        b = h.CannedBackend("slow", delay=delay)
        self.addCleanup(b.stop)
        return b

    def concurrent(self, tp, n, path="/", headers=()):
        """n requests at once; [(status, seconds, response)] in the order they were started."""
        out = [None] * n
        start = time.monotonic()

        def one(i):
            r = tp.request("GET", "%s?%d" % (path, i), timeout=30, headers=list(headers))
            out[i] = (r.status, time.monotonic() - start, r)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
            time.sleep(0.05)  # in this order
        for t in threads:
            t.join(h.scaled(60))
        return out

    def log_lines(self, tp):
        tp.proc.stop()  # flushes the log
        with open(self.log_path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def test_past_max_requests_the_answer_is_503_at_once(self):
        backend = self.slow(1.5)
        tp = self.start([backend], {"max_requests": 2})
        results = self.concurrent(tp, 5)
        ok = [r for r in results if r[0] == 200]
        refused = [r for r in results if r[0] == 503]
        self.assertEqual((len(ok), len(refused)), (2, 3), [(s, t) for s, t, _ in results])
        for status, took, r in refused:
            self.assertLess(took, h.scaled(1.0))  # refused, not queued behind the slow ones
            self.assertEqual(r.header("X-Turnpike-Overloaded"), "max_requests")
            self.assertEqual(r.json()["error"], "upstream overloaded")
            self.assertEqual(r.json()["request_id"], r.header("X-Request-Id"))
        self.assertLessEqual(backend.max_active, 2)
        # Once they are done, there is room again.
        self.assertEqual(tp.get("/after").status, 200)
        lines = [e for e in self.log_lines(tp) if e["status"] == 503]
        self.assertEqual(len(lines), 3)
        for e in lines:
            self.assertEqual(e["response_reason"], "upstream_overflow")
            self.assertEqual(e["upstream_failures"], ["pool: upstream overloaded (max_requests)"])

    def test_a_grpc_client_is_told_resource_exhausted(self):
        backend = self.slow(1.5)
        tp = self.start([backend], {"max_requests": 1})
        results = self.concurrent(tp, 2, headers=[("Content-Type", "application/grpc")])
        # The first reaches the (non-gRPC) backend; the second is refused in gRPC's terms.
        status, _, r = results[1]
        self.assertEqual(status, 200)
        self.assertEqual(r.header("grpc-status"), "8")  # RESOURCE_EXHAUSTED
        self.assertEqual(r.header("grpc-message"), "upstream overloaded")
        self.assertEqual(r.header("X-Turnpike-Overloaded"), "max_requests")

    def test_at_max_connections_requests_wait_in_a_bounded_queue(self):
        backend = self.slow(0.6)
        tp = self.start([backend], {"max_connections": 1, "max_pending_requests": 1})
        results = self.concurrent(tp, 3)
        statuses = [s for s, _, _ in results]
        # The first has the connection, the second waits for it, the third finds the queue full.
        self.assertEqual(statuses, [200, 200, 503], [(s, t) for s, t, _ in results])
        self.assertEqual(results[2][2].header("X-Turnpike-Overloaded"), "max_pending_requests")
        self.assertLess(results[2][1], h.scaled(0.5))
        self.assertGreater(results[1][1], 1.1)  # served after the first, on its connection
        self.assertEqual(backend.max_active, 1)

    def test_a_wait_for_a_connection_ends_at_connect_timeout(self):
        backend = self.slow(3)
        tp = self.start([backend], {"max_connections": 1, "max_pending_requests": 10},
                        connect_timeout="500ms")
        results = self.concurrent(tp, 2)
        self.assertEqual(results[0][0], 200)
        status, took, r = results[1]
        self.assertEqual(status, 503)
        self.assertEqual(r.header("X-Turnpike-Overloaded"), "max_connections")
        self.assertGreater(took, 0.45)
        self.assertLess(took, h.scaled(2))
        self.assertEqual(backend.max_active, 1)

    def test_a_client_that_leaves_while_queued_is_never_sent_upstream(self):
        backend = self.slow(1.0)
        tp = self.start([backend], {"max_connections": 1, "max_pending_requests": 4},
                        connect_timeout="5s")
        first = threading.Thread(target=lambda: tp.request("GET", "/first", timeout=30))
        first.start()
        time.sleep(0.3)  # /first holds the one connection
        # /gone waits for it in the queue, and its client leaves.
        c = tp.conn()
        c.send(h.build_request("GET", "/gone"))
        time.sleep(0.3)
        c.close()
        first.join(h.scaled(30))
        # The queue moves on: the next request gets the connection, /gone never reaches it.
        r = tp.get("/next", timeout=30)
        self.assertEqual(r.status, 200)
        time.sleep(0.3)
        self.assertEqual([t for _, t, _, _ in backend.seen], ["/first", "/next"])
        gone = [e for e in self.log_lines(tp) if e["path"] == "/gone"]
        self.assertEqual(len(gone), 1, gone)
        self.assertEqual(gone[0]["response_reason"], "downstream_disconnect")

    def test_max_retries_caps_retries_that_may_reach_a_backend(self):
        bad = h.CannedBackend("bad", status=503)
        self.addCleanup(bad.stop)
        echos = [self.stack.echo("e%d" % i) for i in range(2)]
        cl = {"name": "pool", "connect_timeout": "1s", "outlier_detection": "off",
              "limits": {"max_retries": 0}, "endpoints": [bad.addr] + [e.addr for e in echos]}
        self.log_path = self.stack.path("access.log")
        tp = self.stack.turnpike(h.config(
            h.free_port(), [h.listener("public", h.free_port())], [cl],
            [{"name": "all", "match": {"path_prefix": "/"}, "backend": "pool",
              "retry": {"attempts": 2, "on": ["5xx"]}}],
            workers=1, access_log=self.log_path))
        # A 503 would be retried by the route, but max_retries 0 lets none go: the client sees it.
        statuses = [tp.get("/r%d" % i).status for i in range(6)]
        self.assertEqual(statuses.count(503), 2, statuses)
        # A failed connect is still sent elsewhere: nothing reached a backend, no load added.
        echos[0].proc.stop(sig=signal.SIGKILL)
        after = [tp.get("/k%d" % i).status for i in range(6)]
        self.assertEqual(after.count(502), 0, after)
        lines = self.log_lines(tp)
        for e in (e for e in lines if e["status"] == 503):
            self.assertEqual(e["upstream_attempts"], 1, e)
            self.assertEqual(e["upstream_failures"],
                             ["%s: retry not sent (max_retries)" % bad.addr], e)
        connect_retried = [e for e in lines if e["path"].startswith("/k") and
                           e["upstream_attempts"] == 2]
        self.assertTrue(connect_retried, lines)

    def test_admin_clusters_shows_requests_and_connections(self):
        backend = self.slow(2.5)
        tp = self.start([backend], {})
        threads = [threading.Thread(target=lambda i=i: tp.get("/c%d" % i, timeout=30))
                   for i in range(3)]
        for t in threads:
            t.start()

        def endpoint():
            return json.loads(tp.admin("GET", "/clusters").body)["clusters"][0]["endpoints"][0]

        # Published by the worker about once a second.
        h.wait_for(lambda: endpoint().get("active_requests") == 3, h.scaled(2.4),
                   what="3 requests in flight")
        e = endpoint()
        self.assertEqual(e["connections"], {"open": 3, "idle": 0})
        for t in threads:
            t.join(h.scaled(30))
        h.wait_for(lambda: endpoint().get("active_requests") == 0, h.scaled(3),
                   what="none in flight")
        e = endpoint()
        self.assertEqual(e["connections"], {"open": 3, "idle": 3})
        self.assertEqual(e["requests"], 3)
        self.assertEqual(e["failures"], 0)

    def test_no_healthy_upstream(self):
        backend = h.CannedBackend("b", paths={"/healthz": 503})
        self.addCleanup(backend.stop)
        tp = self.start([backend], {}, panic_threshold=0,
                        health_check={"http": {"path": "/healthz"}, "interval": "200ms",
                                      "unhealthy_threshold": 1})
        h.wait_for(lambda: tp.get("/x").status == 503, h.scaled(10), what="503")
        r = tp.get("/x")
        self.assertEqual(r.status, 503)
        self.assertEqual(r.json()["error"], "no healthy upstream")
        self.assertFalse(r.has_header("X-Turnpike-Overloaded"))
        e = [e for e in self.log_lines(tp) if e["status"] == 503][-1]
        self.assertEqual(e["response_reason"], "no_healthy_upstream")
        self.assertEqual(e["upstream_attempts"], 0)


if __name__ == "__main__":
    unittest.main()
