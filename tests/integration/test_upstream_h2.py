"""HTTP/2 to the backends (clusters[].protocol h2c and h2): Turnpike in front of a second
Turnpike that speaks HTTP/2 on its listeners and proxies to the echo server. Protocol
translation (an HTTP/1.1 client's Host becomes :authority and comes back as Host; bodies both
ways), multiplexing with a per-connection stream cap (more connections only when the open ones
are full), h2 over TLS with ALPN and certificate verification (a name mismatch and a backend
that will not speak h2 are 502s with a clear log line), and a backend restart (GOAWAY) that
the pool rides through."""

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import tls_certs  # noqa: E402

BACKEND = "backend.example.test"


class UpstreamH2Test(h.TurnpikeCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.pki = tls_certs.Pki(os.path.join(cls.cstack.dir, "pki"))
        cls.backend_cert = cls.pki.issue_server("backend", [BACKEND])

    def setUp(self):
        super().setUp()
        self.echo = self.stack.echo(threads=2)

    def start_backend(self, h2c_port=None, tls_protocols=None):
        """The HTTP/2 backend: a Turnpike with an h2c-only listener and an h2 TLS listener."""
        plain = h.listener("h2c", h2c_port or h.free_port())
        plain["protocols"] = ["h2c"]
        tls = h.listener("tls", h.free_port())
        tls["tls"] = {"certificates": [{"cert": self.backend_cert.cert,
                                        "key": self.backend_cert.key}]}
        if tls_protocols:
            tls["protocols"] = tls_protocols
        cfg = h.config(h.free_port(), [plain, tls], [h.cluster("echo", self.echo)],
                       [{"name": "all", "match": {"path_prefix": "/"}, "backend": "echo"}],
                       workers=1)
        self.backend = self.stack.turnpike(cfg, name="backend.yaml")
        return self.backend

    def start_front(self, cluster_extra, workers=2):
        lst = h.listener("main", h.free_port())
        lst["protocols"] = ["http1", "h2c"]
        cluster = h.cluster("up", *cluster_extra.pop("endpoints"), **cluster_extra)
        cfg = h.config(h.free_port(), [lst], [cluster],
                       [{"name": "all", "match": {"path_prefix": "/"}, "backend": "up"}],
                       workers=workers)
        self.front = self.stack.turnpike(cfg, name="front.yaml")
        return self.front

    def h2c_cluster(self, **extra):
        return dict(endpoints=["127.0.0.1:%d" % self.backend.ports["h2c"]], protocol="h2c",
                    **extra)

    def echoed(self, r):
        self.assertEqual(r.status, 200, r)
        return json.loads(r.body)

    def test_http11_client_through_h2c_upstream(self):
        self.start_backend()
        self.start_front(self.h2c_cluster())
        with self.front.conn() as c:
            r = c.request("GET", "/a/b?x=1", host="api.example.test:8080",
                          headers=[("Cookie", "a=1"), ("Connection", "keep-alive, x-hop"),
                                   ("X-Hop", "1")])
            echo = self.echoed(r)
            self.assertEqual((echo["path"], echo["query"]), ("/a/b", "x=1"))
            hdrs = echo["headers"]
            # Host went upstream as :authority and came back as Host.
            self.assertEqual(hdrs.get("host"), "api.example.test:8080")
            self.assertEqual(hdrs.get("cookie"), "a=1")
            self.assertNotIn("x-hop", hdrs)  # named in Connection: hop-by-hop
            self.assertEqual(hdrs.get("x-forwarded-for"), "127.0.0.1, 127.0.0.1")
            upload = os.urandom(2 * 1024 * 1024 + 5)
            echo = self.echoed(c.request("POST", "/up", body=upload))
            self.assertEqual(echo["body_sha256"], hashlib.sha256(upload).hexdigest())
            r = c.request("GET", "/bytes/5000000")
            self.assertEqual((r.status, len(r.body)), (200, 5000000))
            self.assertTrue(r.body.startswith(b"abcdefghijklmnopqrstuvwxyz"))
            # Status codes and a chunked (length-less) body make it through.
            self.assertEqual(c.request("GET", "/status/418").status, 418)
            r = c.request("GET", "/bytes/100000?chunked=1")
            self.assertEqual(len(r.body), 100000)
        # And an HTTP/2 client, HTTP/2 all the way.
        p = subprocess.run(["curl", "-sS", "--http2-prior-knowledge", "-w", "\n@@%{http_version}",
                            "http://127.0.0.1:%d/h2/all/the/way" % self.front.ports["main"]],
                           capture_output=True, timeout=30)
        body, _, version = p.stdout.rpartition(b"\n@@")
        self.assertEqual(version, b"2")
        self.assertEqual(json.loads(body)["path"], "/h2/all/the/way")

    def test_at_max_connections_requests_wait_for_a_stream_in_a_bounded_queue(self):
        # One connection (max_connections 1) of two streams: two requests run, three wait for
        # a stream to end (max_pending_requests 3), the sixth is refused at once.
        self.start_backend()
        self.start_front(self.h2c_cluster(http2={"max_concurrent_streams": 2},
                                          limits={"max_connections": 1,
                                                  "max_pending_requests": 3},
                                          connect_timeout="5s"), workers=1)
        results = [None] * 6
        t0 = time.monotonic()

        def one(i):
            r = self.front.request("GET", "/delay/700?%d" % i, timeout=30)
            results[i] = (r.status, r.header("X-Turnpike-Overloaded"), time.monotonic() - t0)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
            time.sleep(0.05)
        for t in threads:
            t.join(h.scaled(30))
        ok = sorted(r[2] for r in results if r[0] == 200)
        refused = [r for r in results if r[0] == 503]
        self.assertEqual((len(ok), len(refused)), (5, 1), results)
        self.assertEqual(refused[0][1], "max_pending_requests")
        self.assertLess(refused[0][2], h.scaled(0.7))  # at once, not after a wait
        # Three rounds of two streams: the last answers came after two others' 700 ms.
        self.assertGreater(ok[-1], 1.4)
        clusters = json.loads(self.front.admin("GET", "/clusters").body)
        self.assertEqual(clusters["clusters"][0]["endpoints"][0]["connections"]["open"], 1)

    def test_streams_are_multiplexed_up_to_the_cap(self):
        self.start_backend()
        self.start_front(self.h2c_cluster(http2={"max_concurrent_streams": 4}), workers=1)
        results = []

        def one():
            r = self.front.request("GET", "/delay/700", timeout=30)
            results.append(r.status)

        t0 = time.monotonic()
        threads = [threading.Thread(target=one) for _ in range(16)]
        for t in threads:
            t.start()
        time.sleep(0.35)
        # 16 requests in flight, 4 streams per connection: 4 connections to the backend.
        port = self.backend.ports["h2c"]
        out = subprocess.run(["ss", "-Htn", "state", "established", "dport", "= :%d" % port],
                             capture_output=True, text=True).stdout
        conns = len([l for l in out.splitlines() if l.strip()])
        for t in threads:
            t.join()
        elapsed = time.monotonic() - t0
        self.assertEqual(results, [200] * 16)
        self.assertEqual(conns, 4, out)
        self.assertLess(elapsed, h.scaled(3))  # concurrently, not one after another

    def test_h2_over_tls_with_alpn_and_verification(self):
        self.start_backend()
        tls_ep = "127.0.0.1:%d" % self.backend.ports["tls"]
        self.start_front(dict(endpoints=[tls_ep], protocol="h2",
                              tls={"ca": self.pki.ca.cert, "server_name": BACKEND}))
        echo = self.echoed(self.front.get("/secure"))
        self.assertEqual(echo["headers"].get("x-forwarded-proto"), "https")  # from the backend
        self.front.proc.stop()
        # The wrong name: 502 and a log line that says why.
        self.start_front(dict(endpoints=[tls_ep], protocol="h2",
                              tls={"ca": self.pki.ca.cert, "server_name": "wrong.example.test"}))
        self.assertEqual(self.front.get("/x").status, 502)
        h.wait_for(lambda: "certificate verify failed" in self.front.proc.stderr(), h.scaled(5),
                   what="the TLS failure in the log")
        self.front.proc.stop()

    def test_backend_without_h2_alpn_is_502_with_reason(self):
        self.start_backend(tls_protocols=["http1"])
        self.start_front(dict(endpoints=["127.0.0.1:%d" % self.backend.ports["tls"]],
                              protocol="h2",
                              tls={"ca": self.pki.ca.cert, "server_name": BACKEND}))
        self.assertEqual(self.front.get("/x").status, 502)
        h.wait_for(lambda: "did not agree to HTTP/2 by ALPN" in self.front.proc.stderr(),
                   h.scaled(5), what="the ALPN failure in the log")

    def test_backend_restart_is_ridden_through(self):
        self.start_backend()
        port = self.backend.ports["h2c"]
        self.start_front(self.h2c_cluster(), workers=1)
        with self.front.conn() as c:
            self.assertEqual(c.request("GET", "/one").status, 200)
            # The backend drains (GOAWAY) and a new one takes the port.
            self.backend.proc.stop()
            self.start_backend(h2c_port=port)
            for i in range(5):
                self.assertEqual(c.request("GET", "/after/%d" % i).status, 200)
            # Backend gone: 502, then back: 200 again.
            self.backend.proc.stop()
            self.assertEqual(c.request("GET", "/down").status, 502)
            self.start_backend(h2c_port=port)
            self.assertEqual(c.request("GET", "/back").status, 200)


if __name__ == "__main__":
    unittest.main()
