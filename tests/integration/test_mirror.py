"""Traffic mirroring (routes[].mirror) as a user sees it with real backends: a copy of each
request (method, target, body; Host suffixed "-shadow") reaches the mirror cluster while the
client gets the real backend's answer; a slow or dead mirror neither delays nor fails the real
request; `percent` mirrors that share; the access log says "sent" or "skipped".
"""

import json
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


class MirrorTest(h.TurnpikeCase):
    def start(self, main, shadow, percent=100, workers=1):
        clusters = [{"name": "main", "endpoints": [main.addr], "connect_timeout": "1s"},
                    {"name": "shadow", "endpoints": [getattr(shadow, "addr", shadow)],
                     "connect_timeout": "500ms"}]
        self.log_path = self.stack.path("access.log")
        return self.stack.turnpike(h.config(
            h.free_port(), [h.listener("public", h.free_port())], clusters,
            [{"name": "all", "match": {"path_prefix": "/"}, "backend": "main", "timeout": "2s",
              "mirror": {"cluster": "shadow", "percent": percent}}],
            workers=workers, access_log=self.log_path))

    def backend(self, name, delay=0.0):
        b = h.CannedBackend(name, delay=delay)
        self.addCleanup(b.stop)
        return b

    def log_lines(self, tp):
        tp.proc.stop()
        with open(self.log_path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def test_a_copy_of_each_request_reaches_the_mirror(self):
        main, shadow = self.backend("main"), self.backend("shadow")
        tp = self.start(main, shadow)
        for i in range(5):
            r = tp.get("/g%d?x=%d" % (i, i), headers=[("Host", "api.example.com")])
            self.assertEqual((r.status, r.header("X-Upstream-Name")), (200, "main"))
        for i in range(3):
            r = tp.request("POST", "/p%d" % i, body=b"payload-%d" % i,
                           headers=[("Host", "api.example.com")])
            self.assertEqual((r.status, r.header("X-Upstream-Name")), (200, "main"))
        h.wait_for(lambda: len(shadow.seen) == 8, h.scaled(5), what="8 mirrored requests")
        got = sorted(shadow.seen)
        self.assertEqual(got[:5], [("GET", "/g%d?x=%d" % (i, i), "api.example.com-shadow", b"")
                                   for i in range(5)])
        self.assertEqual(got[5:], [("POST", "/p%d" % i, "api.example.com-shadow",
                                    b"payload-%d" % i) for i in range(3)])
        self.assertEqual(len(main.seen), 8)
        self.assertEqual({e["mirror"] for e in self.log_lines(tp)}, {"sent"})

    def test_a_slow_mirror_does_not_delay_the_real_request(self):
        main, shadow = self.backend("main"), self.backend("shadow", delay=1.5)
        tp = self.start(main, shadow)
        start = time.monotonic()
        for i in range(5):
            self.assertEqual(tp.get("/s%d" % i).status, 200)
        self.assertLess(time.monotonic() - start, h.scaled(1.0))
        h.wait_for(lambda: len(shadow.seen) == 5, h.scaled(10), what="5 mirrored requests")

    def test_a_dead_mirror_does_not_fail_the_real_request(self):
        main = self.backend("main")
        dead = "127.0.0.1:%d" % h.free_port()
        tp = self.start(main, dead)
        for i in range(10):
            self.assertEqual(tp.get("/d%d" % i).status, 200)
        self.assertEqual(len(main.seen), 10)

    def test_a_client_that_leaves_does_not_stop_the_mirror_copy(self):
        # The real backend is slow; the client leaves before its answer. The mirror copy was
        # sent when the request went up and is answered on its own; Turnpike stays healthy.
        main, shadow = self.backend("main", delay=1.0), self.backend("shadow")
        tp = self.start(main, shadow)
        c = tp.conn()
        c.send(h.build_request("POST", "/gone", headers=[("Content-Length", "5")]) + b"hello")
        h.wait_for(lambda: len(shadow.seen) == 1, h.scaled(5), what="the mirrored request")
        c.close()
        time.sleep(1.2)
        self.assertEqual(shadow.seen, [("POST", "/gone", "localhost-shadow", b"hello")])
        self.assertEqual(tp.get("/after").status, 200)
        lines = {e["path"]: e for e in self.log_lines(tp)}
        self.assertEqual((lines["/gone"]["status"], lines["/gone"]["mirror"]), (499, "sent"))

    def test_percent_mirrors_that_share(self):
        main, shadow = self.backend("main"), self.backend("shadow")
        tp = self.start(main, shadow, percent=0)
        for i in range(20):
            self.assertEqual(tp.get("/n%d" % i).status, 200)
        time.sleep(0.3)
        self.assertEqual(shadow.seen, [])
        self.assertEqual({e["mirror"] for e in self.log_lines(tp)}, {"skipped"})

    def test_about_half_with_percent_50(self):
        main, shadow = self.backend("main"), self.backend("shadow")
        tp = self.start(main, shadow, percent=50)
        for i in range(200):
            self.assertEqual(tp.get("/h%d" % i).status, 200)
        time.sleep(0.5)
        self.assertGreater(len(shadow.seen), 60)
        self.assertLess(len(shadow.seen), 140)
        sent = [e for e in self.log_lines(tp) if e["mirror"] == "sent"]
        self.assertEqual(len(sent), len(shadow.seen))


if __name__ == "__main__":
    unittest.main()
