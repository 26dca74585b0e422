"""Retries (routes[].retry) as a user sees them with real backends: a 503 is retried on another
endpoint and the client never sees it; a POST that may have reached the backend is never sent
twice unless the route lists POST, while a GET is; per_try_timeout moves a request off a frozen
backend within the route's timeout, which bounds all tries together; the retry budget keeps a
backend that answers 503 to everything from receiving a retry storm. The access log tells what
each try came to.
"""

import json
import os
import socket
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


class ResettingBackend:
    """Reads each request head (and a Content-Length body) and closes the connection without
    an answer: a backend that crashed mid-request. Counts requests by method."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.addr = "127.0.0.1:%d" % self.port
        self.methods = []
        self.stopped = False
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.one, args=(c,), daemon=True).start()

    def one(self, c):
        with c:
            c.settimeout(5)
            data = b""
            try:
                while b"\r\n\r\n" not in data:
                    chunk = c.recv(4096)
                    if not chunk:
                        return
                    data += chunk
            except OSError:
                return
            self.methods.append(data.split(b" ", 1)[0].decode())
            c.shutdown(socket.SHUT_RDWR)

    def stop(self):
        self.stopped = True
        self.sock.close()


class RetryTest(h.TurnpikeCase):
    def start(self, backends, retry=None, timeout="15s", workers=1, **cluster):
        cl = {"name": "pool", "connect_timeout": "1s", "outlier_detection": "off",
              "endpoints": [getattr(b, "addr", b) for b in backends]}
        cl.update(cluster)
        route = {"name": "all", "match": {"path_prefix": "/"}, "backend": "pool",
                 "timeout": timeout}
        if retry is not None:
            route["retry"] = retry
        self.log_path = self.stack.path("access.log")
        return self.stack.turnpike(h.config(
            h.free_port(), [h.listener("public", h.free_port())], [cl], [route],
            workers=workers, access_log=self.log_path))

    def canned(self, name, status=200, delay=0.0):
        b = h.CannedBackend(name, status=status, delay=delay)
        self.addCleanup(b.stop)
        return b

    def log_lines(self, tp):
        tp.proc.stop()  # flushes the log
        with open(self.log_path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def test_a_503_is_retried_on_another_endpoint(self):
        bad = self.canned("bad", status=503)
        good = self.canned("good")
        tp = self.start([bad, good], retry={"attempts": 2, "on": ["5xx"]})
        for i in range(10):
            r = tp.get("/r%d" % i)
            self.assertEqual((r.status, r.header("X-Upstream-Name")), (200, "good"))
        self.assertGreaterEqual(bad.hits["/r0"] + sum(bad.hits.values()), 5)
        retried = [e for e in self.log_lines(tp) if e["upstream_attempts"] == 2]
        self.assertGreaterEqual(len(retried), 5)
        for e in retried:
            self.assertEqual(e["status"], 200)
            self.assertEqual(e["upstream_failures"], ["%s: status 503 (retried)" % bad.addr])

    def test_without_a_retry_block_a_503_reaches_the_client(self):
        bad = self.canned("bad", status=503)
        good = self.canned("good")
        tp = self.start([bad, good])
        statuses = sorted(tp.get("/r%d" % i).status for i in range(4))
        self.assertEqual(statuses, [200, 200, 503, 503])

    def test_a_post_that_may_have_reached_the_backend_is_never_sent_twice(self):
        resetting = ResettingBackend()
        self.addCleanup(resetting.stop)
        good = self.canned("good")
        # gateway-error includes resets, but POST is not in the default methods.
        tp = self.start([resetting, good], retry={"attempts": 3, "on": ["gateway-error"]})
        posts = [tp.request("POST", "/p%d" % i, body=b"x=1").status for i in range(4)]
        # Round robin: every other POST met the resetting backend, and got its 502.
        self.assertEqual(sorted(posts), [200, 200, 502, 502])
        self.assertEqual(resetting.methods.count("POST"), 2)
        # A GET is retried on the good endpoint.
        gets = [tp.get("/g%d" % i).status for i in range(4)]
        self.assertEqual(gets, [200] * 4)
        self.assertGreater(resetting.methods.count("GET"), 0)

    def test_a_post_is_retried_when_the_route_lists_post(self):
        resetting = ResettingBackend()
        self.addCleanup(resetting.stop)
        good = self.canned("good")
        tp = self.start([resetting, good], retry={"attempts": 2, "on": ["reset"],
                                                  "methods": ["GET", "POST"]})
        posts = [tp.request("POST", "/p%d" % i, body=b"x=1").status for i in range(4)]
        self.assertEqual(posts, [200] * 4)
        self.assertGreater(resetting.methods.count("POST"), 0)

    def test_no_retry_block_never_replays_a_reset_post_nor_a_fresh_get(self):
        resetting = ResettingBackend()
        self.addCleanup(resetting.stop)
        tp = self.start([resetting])
        self.assertEqual(tp.request("POST", "/p", body=b"x").status, 502)
        self.assertEqual(tp.get("/g").status, 502)
        self.assertEqual(resetting.methods, ["POST", "GET"])

    def test_a_streamed_upload_answered_503_is_not_retried(self):
        # Its body was streaming up (not held whole), so it cannot be sent again: the 503
        # reaches the client even though the route retries 503 for PUT.
        bad = self.canned("bad", status=503)
        good = self.canned("good")
        tp = self.start([bad, good], retry={"attempts": 3, "on": ["retriable-status"],
                                             "statuses": [503], "methods": ["PUT"]})
        body = b"x" * 200000
        statuses = []
        for i in range(2):  # round robin: one of the two meets the 503 backend
            with tp.conn(timeout=10) as c:
                c.send(h.build_request("PUT", "/u%d" % i,
                                       headers=[("Content-Length", str(len(body)))]))
                c.send(body[:1000])
                time.sleep(0.3)  # the rest comes later: the request is already on its way
                c.send(body[1000:])
                statuses.append(c.read_response().status)
        self.assertEqual(sorted(statuses), [200, 503])
        self.assertEqual([(m, len(b)) for m, _, _, b in bad.seen], [("PUT", len(body))])
        self.assertEqual([(m, len(b)) for m, _, _, b in good.seen], [("PUT", len(body))])
        tried = sorted((e["status"], e["upstream_attempts"]) for e in self.log_lines(tp))
        self.assertEqual(tried, [(200, 1), (503, 1)])

    def test_per_try_timeout_moves_a_request_off_a_frozen_backend(self):
        slow = self.canned("slow", delay=3)
        good = self.canned("good")
        tp = self.start([slow, good], retry={"attempts": 2, "per_try_timeout": "300ms"})
        start = time.monotonic()
        for i in range(4):
            r = tp.get("/r%d" % i)
            self.assertEqual((r.status, r.header("X-Upstream-Name")), (200, "good"))
        self.assertLess(time.monotonic() - start, h.scaled(2.5))  # 2 x 300 ms, not 2 x 3 s
        # Round robin starts each request on the slow one or the good one; the retry of one
        # that started on the slow one takes the good one's turn, so most start slow.
        retried = [e for e in self.log_lines(tp) if e["upstream_attempts"] == 2]
        self.assertGreaterEqual(len(retried), 2)
        for e in retried:
            self.assertEqual(e["upstream_failures"],
                             ["%s: timed out (Connection timed out)" % slow.addr])

    def test_the_route_timeout_bounds_all_tries_together(self):
        slow = [self.canned("s%d" % i, delay=3) for i in range(2)]
        tp = self.start(slow, retry={"attempts": 3, "per_try_timeout": "600ms",
                                     "backoff": {"base": "1ms", "max": "1ms"}}, timeout="1s")
        start = time.monotonic()
        r = tp.get("/x")
        took = time.monotonic() - start
        self.assertEqual(r.status, 504)
        self.assertGreater(took, 0.9)
        self.assertLess(took, h.scaled(1.6))  # not 3 x 600 ms
        e = [e for e in self.log_lines(tp) if e["path"] == "/x"][0]
        self.assertEqual(e["upstream_attempts"], 2)
        self.assertEqual(e["response_reason"], "upstream_timeout")

    def test_a_per_try_timeout_that_is_the_last_try_says_so(self):
        slow = self.canned("slow", delay=3)
        tp = self.start([slow], retry={"attempts": 1, "per_try_timeout": "300ms"})
        self.assertEqual(tp.get("/x").status, 504)
        e = [e for e in self.log_lines(tp) if e["path"] == "/x"][0]
        self.assertEqual(e["response_reason"], "per_try_timeout")

    def hits_under_load(self, budget, clients=10, seconds=2.0):
        """(answers the clients got, requests the always-503 backend received)."""
        bad = self.canned("bad", status=503, delay=0.05)
        tp = self.start([bad], retry={"attempts": 5, "on": ["5xx"], "budget": budget,
                                      "backoff": {"base": "1ms", "max": "1ms"}},
                        limits={"max_retries": 1000})
        answers = [0]
        unexpected = []
        lock = threading.Lock()
        stop_at = time.monotonic() + seconds

        def client():
            c = tp.conn(timeout=10)
            try:
                while time.monotonic() < stop_at:
                    r = c.request("GET", "/")
                    with lock:
                        answers[0] += 1
                        if r.status != 503:
                            unexpected.append(r.status)
            finally:
                c.close()

        threads = [threading.Thread(target=client) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(h.scaled(30))
        time.sleep(0.2)
        self.assertEqual(unexpected, [])  # the backend's own 503, after the retries
        return answers[0], sum(bad.hits.values())

    def test_the_retry_budget_stops_a_retry_storm(self):
        # 10 clients, retries in flight at most 20% of 10 = 2: about one retry per five answers.
        answers, hits = self.hits_under_load({"percent": 20, "min_concurrency": 1})
        self.assertGreater(answers, 20)
        self.assertLessEqual(hits, answers * 1.5, (answers, hits))

    def test_without_a_budget_cap_every_request_is_tried_five_times(self):
        # The same load with a budget that never binds: the storm the budget prevents.
        answers, hits = self.hits_under_load({"percent": 100, "min_concurrency": 100})
        self.assertGreater(answers, 5)
        self.assertGreaterEqual(hits, answers * 4, (answers, hits))


if __name__ == "__main__":
    unittest.main()
