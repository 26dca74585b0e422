"""Passive health (clusters[].outlier_detection) and the connect-failure retry, as a user sees
them with real backends: a backend killed with SIGKILL costs no request (the connect failure is
retried on another endpoint) and is ejected for every worker; a backend that answers 503 to
everything is ejected after consecutive_5xx answers, comes back after base_ejection_time and is
ejected for longer the next time; max_ejection_percent keeps most of a cluster in; an ejection
survives a reload that keeps the endpoint; `outlier_detection: off` never ejects.
"""

import collections
import json
import os
import re
import signal
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


class OutlierDetectionTest(h.TurnpikeCase):
    def start(self, endpoints, workers=2, **cluster):
        cl = {"name": "pool", "connect_timeout": "1s",
              "endpoints": [getattr(e, "addr", e) for e in endpoints]}
        cl.update(cluster)
        self.admin_port = h.free_port()
        self.listen_port = h.free_port()
        self.cluster = cl
        self.workers = workers
        return self.stack.turnpike(self.cfg())

    def cfg(self, extra_routes=()):
        return h.config(self.admin_port, [h.listener("public", self.listen_port)], [self.cluster],
                        list(extra_routes) +
                        [{"name": "all", "match": {"path_prefix": "/"}, "backend": "pool"}],
                        workers=self.workers, reload={"watch": False})

    def bad_backend(self, status=503, name="bad"):
        b = h.CannedBackend(name, status=status)
        self.addCleanup(b.stop)
        return b

    def statuses(self, tp, n):
        seen = collections.Counter()
        for _ in range(n):
            r = tp.get("/")
            seen[(r.status, r.header("X-Upstream-Name"))] += 1
        return seen

    def test_a_killed_backend_costs_no_request_and_is_ejected(self):
        echos = [self.stack.echo("e%d" % i) for i in range(3)]
        tp = self.start(echos)
        self.assertGreater(self.statuses(tp, 12)[(200, "e0")], 0)
        echos[0].proc.stop(sig=signal.SIGKILL)
        seen = self.statuses(tp, 60)
        self.assertEqual(sum(n for (st, _), n in seen.items() if st != 200), 0, seen)
        self.assertNotIn((200, "e0"), seen)
        log = tp.proc.stderr()
        self.assertRegex(log, r"cluster 'pool': endpoint 127\.0\.0\.1:%d ejected for 30000 ms: "
                              r"3 consecutive gateway failures \(last: connect failed\)"
                         % echos[0].port)

    def test_a_backend_killed_under_concurrent_load(self):
        # Clients that each wait for every reply, running while the backend dies. Connects it
        # refuses are retried on another endpoint, and so are requests on pooled connections it
        # reset before answering: measured, none fail (one is allowed, for a request on a fresh
        # connection caught mid-flight). Without the retry, the three connect failures that
        # eject it would reach the clients.
        echos = [self.stack.echo("e%d" % i) for i in range(3)]
        tp = self.start(echos)
        results = []  # (time, status)
        lock = threading.Lock()
        stop_at = time.monotonic() + 2.0

        def client():
            c = tp.conn(timeout=10)
            try:
                while time.monotonic() < stop_at:
                    try:
                        st = c.request("GET", "/").status
                    except Exception:  # noqa: BLE001 - a broken client connection counts
                        c.close()
                        c = tp.conn(timeout=10)
                        st = 0
                    with lock:
                        results.append((time.monotonic(), st))
            finally:
                c.close()

        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        echos[0].proc.stop(sig=signal.SIGKILL)
        killed_at = time.monotonic()
        for t in threads:
            t.join()
        failed = [(t, st) for t, st in results if st != 200]
        self.assertLessEqual(len(failed), 1, failed)
        late = [(t - killed_at, st) for t, st in failed if t > killed_at + 0.5]
        self.assertEqual(late, [], "failures after the ejection: %s" % late)
        self.assertGreater(sum(1 for t, _ in results if t > killed_at + 0.5), 100)
        self.assertIn("endpoint 127.0.0.1:%d ejected" % echos[0].port, tp.proc.stderr())

    def test_the_access_log_tells_what_each_try_came_to(self):
        echos = [self.stack.echo("e%d" % i) for i in range(2)]
        log_path = self.stack.path("access.log")
        cl = {"name": "pool", "connect_timeout": "1s", "endpoints": [e.addr for e in echos]}
        dead = {"name": "dead", "connect_timeout": "1s", "endpoints": [echos[0].addr]}
        tp = self.stack.turnpike(h.config(
            h.free_port(), [h.listener("public", h.free_port())], [cl, dead],
            [{"name": "dead", "match": {"path_prefix": "/dead"}, "backend": "dead"},
             {"name": "all", "match": {"path_prefix": "/"}, "backend": "pool"}],
            workers=1, access_log=log_path))
        self.assertEqual(tp.get("/warm").status, 200)
        echos[0].proc.stop(sig=signal.SIGKILL)
        for i in range(6):
            self.assertEqual(tp.get("/after/%d" % i).status, 200)
        self.assertEqual(tp.get("/dead").status, 502)
        tp.proc.stop()  # flushes the log
        with open(log_path) as f:
            lines = [json.loads(line) for line in f if line.strip()]
        warm = next(e for e in lines if e["path"] == "/warm")
        self.assertEqual((warm["upstream_attempts"], warm["upstream_failures"],
                          warm["response_reason"]), (1, None, None))
        retried = [e for e in lines if e["path"].startswith("/after/") and
                   e["upstream_attempts"] == 2]
        # Round robin sends every other request to the dead one first: its pooled connection
        # fails (end of file), then new connects are refused; each is retried on the other.
        self.assertGreaterEqual(len(retried), 2, lines)
        failures = []
        for e in retried:
            self.assertEqual((e["status"], e["upstream"]), (200, echos[1].addr), e)
            self.assertEqual(len(e["upstream_failures"]), 1, e)
            self.assertTrue(e["upstream_failures"][0].startswith(echos[0].addr + ": "), e)
            self.assertIsNone(e["response_reason"])
            failures.append(e["upstream_failures"][0])
        self.assertTrue(any(": connect failed (Connection refused)" in f for f in failures),
                        failures)
        dead_line = next(e for e in lines if e["path"] == "/dead")
        self.assertEqual(dead_line["status"], 502)
        self.assertEqual(dead_line["response_reason"], "upstream_connect_failure")
        self.assertEqual(dead_line["upstream_attempts"], 1)  # a cluster of one: not retried

    def test_a_backend_answering_503_is_ejected_then_back_then_ejected_for_longer(self):
        good = [self.stack.echo("e%d" % i) for i in range(2)]
        bad = self.bad_backend()
        tp = self.start(good + [bad], outlier_detection={"base_ejection_time": "1s"})
        first = self.statuses(tp, 60)
        # Five 503s in a row (across both workers: the count is the process's) eject it.
        self.assertLessEqual(first[(503, "bad")], 6, first)
        self.assertGreaterEqual(first[(503, "bad")], 5, first)
        during = self.statuses(tp, 30)
        self.assertNotIn((503, "bad"), during)
        time.sleep(1.2)  # the ejection (1 s) is over: it is tried again, and fails again
        again = self.statuses(tp, 60)
        self.assertGreaterEqual(again[(503, "bad")], 5, again)
        log = tp.proc.stderr()
        self.assertIn("ejected for 1000 ms: 5 consecutive 5xx", log)
        self.assertIn("back in balancing after its ejection", log)
        self.assertIn("ejected for 2000 ms: 5 consecutive 5xx", log)

    def test_admin_clusters_shows_each_endpoints_state(self):
        good = [self.stack.echo("e%d" % i) for i in range(2)]
        bad = self.bad_backend()
        tp = self.start(good + [bad], outlier_detection={"base_ejection_time": "30s"})
        before = json.loads(tp.admin("GET", "/clusters").body)["clusters"][0]
        self.assertEqual(before["name"], "pool")
        self.assertEqual(before["usable"], 3)
        self.assertEqual({e["state"] for e in before["endpoints"]}, {"healthy"})
        self.statuses(tp, 40)
        after = json.loads(tp.admin("GET", "/clusters").body)["clusters"][0]
        by_addr = {e["address"]: e for e in after["endpoints"]}
        self.assertEqual(by_addr[bad.addr]["state"], "ejected")
        self.assertEqual(by_addr[bad.addr]["ejections"], 1)
        self.assertGreater(by_addr[bad.addr]["ejected_for_ms"], 25000)
        self.assertLessEqual(by_addr[bad.addr]["ejected_for_ms"], 30000)
        for e in good:
            self.assertEqual(by_addr[e.addr]["state"], "healthy")
            self.assertEqual(by_addr[e.addr]["consecutive_5xx"], 0)
        self.assertEqual(after["usable"], 2)
        self.assertFalse(after["panic"])

    def test_max_ejection_percent_keeps_most_of_a_cluster_in(self):
        bads = [self.bad_backend(name="bad%d" % i) for i in range(3)]
        tp = self.start(bads, outlier_detection={"max_ejection_percent": 50})
        self.statuses(tp, 60)
        log = tp.proc.stderr()
        self.assertEqual(len(re.findall(r"ejected for", log)), 1, log)
        self.assertIn("already out (max_ejection_percent 50)", log)
        # Two of three still take requests.
        self.assertEqual(len({name for (_, name) in self.statuses(tp, 30)}), 2)

    def test_below_the_panic_threshold_every_endpoint_is_used(self):
        good = self.stack.echo("good")
        bads = [self.bad_backend(name="bad%d" % i) for i in range(2)]
        tp = self.start([good] + bads, outlier_detection={"max_ejection_percent": 100},
                        panic_threshold=50)
        self.statuses(tp, 80)
        log = tp.proc.stderr()
        # Both bad ones were ejected; one of three usable is below 50%: all three take requests.
        self.assertEqual(len(re.findall(r"ejected for", log)), 2, log)
        self.assertIn("below panic_threshold 50%: balancing over all of them", log)
        names = {name for (_, name) in self.statuses(tp, 30)}
        self.assertEqual(names, {"good", "bad0", "bad1"})

    def test_an_ejection_survives_a_reload_that_keeps_the_endpoint(self):
        good = [self.stack.echo("e%d" % i) for i in range(2)]
        bad = self.bad_backend()
        tp = self.start(good + [bad], outlier_detection={"base_ejection_time": "30s"})
        self.statuses(tp, 40)
        self.assertIn("ejected for 30000 ms", tp.proc.stderr())
        with open(tp.config_path, "w") as f:
            f.write(h.to_yaml(self.cfg([{"name": "extra", "match": {"path": "/extra"},
                                         "respond": {"status": 204}}])) + "\n")
        r = tp.admin("POST", "/reload")
        self.assertEqual(json.loads(r.body)["last_reload"]["result"], "applied", r.body)
        self.assertEqual(tp.get("/extra").status, 204)  # the new generation serves
        after = self.statuses(tp, 40)
        self.assertNotIn((503, "bad"), after)

    def test_outlier_detection_off_never_ejects(self):
        good = self.stack.echo("good")
        bad = self.bad_backend()
        tp = self.start([good, bad], workers=1, outlier_detection="off")
        seen = self.statuses(tp, 40)
        self.assertEqual(seen[(503, "bad")], 20, seen)
        self.assertNotIn("ejected for", tp.proc.stderr())


if __name__ == "__main__":
    unittest.main()
