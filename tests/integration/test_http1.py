"""HTTP/1.1 downstream behaviour: keep-alive, pipelining, chunked bodies, Expect: 100-continue,
bodiless responses, malformed requests (400 and close), limits (414/431/413/408) and the idle
keep-alive timeout. Raw sockets, so every byte on the wire is the test's choice.
"""

import hashlib
import json
import os
import select
import socket
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

STRICT_LIMITS = {
    "max_uri_bytes": "1KiB",
    "max_header_bytes": "4KiB",
    "max_headers": 20,
    "max_body_bytes": "1MiB",
    "header_timeout": "1s",
}


class Http1Test(h.TurnpikeCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        s = cls.cstack
        echo = s.echo("echo", threads=2)
        listeners = [
            h.listener("public", h.free_port()),
            h.listener("strict", h.free_port(), **STRICT_LIMITS),
            h.listener("idle", h.free_port(), idle_timeout="1s"),
        ]
        routes = [{"name": "all", "match": {"path_prefix": "/"}, "backend": "echo"}]
        cfg = h.config(h.free_port(), listeners, [h.cluster("echo", echo)], routes)
        cls.tp = s.turnpike(cfg)

    def conn(self, listener="public", timeout=5):
        return self.tp.conn(listener, timeout=h.scaled(timeout))

    # keep-alive and pipelining

    def test_10000_keepalive_requests_on_one_connection(self):
        n = 2000 if h.SANITIZE else 10000
        statuses = {}
        with self.conn() as c:
            for i in range(n):
                r = c.request("GET", "/ka/%d" % i)
                statuses[r.status] = statuses.get(r.status, 0) + 1
                if i % 2500 == 0:
                    self.assertEqual(r.json()["path"], "/ka/%d" % i)
        self.assertEqual(statuses, {200: n})

    def test_beast_client_keepalive_and_pipelined(self):
        """The same through a real client library (Boost.Beast): 10,000 requests on one
        keep-alive connection, then 2,000 pipelined 16 at a time."""
        client = os.environ.get("CLIENT_BIN")
        if not client:
            self.skipTest("CLIENT_BIN not set (run through ctest)")
        port = str(self.tp.ports["public"])
        for requests, pipeline in ((2000 if h.SANITIZE else 10000, 1), (2000, 16)):
            out = subprocess.run(
                [client, "--port", port, "--path", "/beast", "--requests", str(requests),
                 "--pipeline", str(pipeline)],
                capture_output=True, text=True, timeout=h.scaled(120))
            summary = json.loads(out.stdout)
            self.assertEqual(out.returncode, 0, summary)
            self.assertEqual(summary["statuses"], {"200": requests}, summary)

    def test_pipelined_requests_answered_in_order(self):
        # The first is slow upstream: answering the others first would be out of order.
        reqs = (h.build_request("GET", "/delay/300")
                + h.build_request("POST", "/p/2", body=b"two")
                + h.build_request("GET", "/p/3"))
        with self.conn() as c:
            c.send(reqs)
            got = [c.read_response().json() for _ in range(3)]
        self.assertEqual([g["path"] for g in got], ["/delay/300", "/p/2", "/p/3"])
        self.assertEqual(got[1]["body"], "two")

    # bodies

    def test_chunked_request_body_reaches_upstream_intact(self):
        pieces = [os.urandom(n) for n in (1, 100, 4096, 65536, 3, 200000)]
        whole = b"".join(pieces)
        with self.conn() as c:
            c.send(h.build_request("POST", "/chunked", [("Transfer-Encoding", "chunked")]))
            c.send(h.chunked(pieces))
            r = c.read_response()
            echo = r.json()
            self.assertEqual(r.status, 200)
            self.assertEqual(echo["body_bytes"], len(whole))
            self.assertEqual(echo["body_sha256"], hashlib.sha256(whole).hexdigest())
            # The connection is still in sync.
            self.assertEqual(c.request("GET", "/after").json()["path"], "/after")

    def test_small_chunked_bodies_sent_with_the_head(self):
        # The whole message arrives in one read: the parser first takes only the chunk header,
        # and the body must still be read from what is buffered (this used to hang).
        for sizes in ((10,), (100,), (16000,), (20000, 3), (3, 20000), (40000, 100), (1, 1, 1)):
            pieces = [os.urandom(n) for n in sizes]
            whole = b"".join(pieces)
            with self.conn() as c:
                c.send(h.build_request("POST", "/chunked", [("Transfer-Encoding", "chunked")]) +
                       h.chunked(pieces))
                r = c.read_response()
                self.assertEqual(r.status, 200, sizes)
                self.assertEqual(r.json()["body_bytes"], len(whole), sizes)
                self.assertEqual(r.json()["body_sha256"], hashlib.sha256(whole).hexdigest())

    def test_small_chunked_responses(self):
        # The upstream's whole chunked response arrives in one read, too.
        with self.conn() as c:
            for n in (1, 10, 100, 5000, 70000):
                r = c.request("GET", "/bytes/%d?chunked=1" % n)
                self.assertEqual(r.status, 200)
                self.assertEqual(len(r.body), n)

    def test_expect_100_continue_raw(self):
        body = os.urandom(100000)
        head = h.build_request("POST", "/expect", [("Expect", "100-continue"),
                                                   ("Content-Length", str(len(body)))])
        with self.conn() as c:
            c.send(head)
            try:
                interim = c.read_response(stop_at_interim=True)
            except h.HttpError as e:
                self.fail("no 100 Continue before the body was sent: %s" % e)
            self.assertEqual(interim.status, 100)
            c.send(body)
            r = c.read_response()
            self.assertEqual(r.status, 200, repr(r))
            self.assertEqual(r.json()["body_sha256"], hashlib.sha256(body).hexdigest())

    def test_expect_100_continue_curl(self):
        data = os.urandom(2 * 1024 * 1024)  # curl sends Expect: 100-continue above 1 MiB
        path = self.stack.path("upload.bin")
        with open(path, "wb") as f:
            f.write(data)
        p = h.curl("-v", "--data-binary", "@" + path,
                   "http://127.0.0.1:%d/curl-expect" % self.tp.ports["public"], timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr.decode(errors="replace"))
        err = p.stderr.decode(errors="replace")
        self.assertIn("Expect: 100-continue", err)
        self.assertRegex(err, r"< HTTP/1\.1 100")
        echo = json.loads(p.stdout)
        self.assertEqual(echo["body_bytes"], len(data))
        self.assertEqual(echo["body_sha256"], hashlib.sha256(data).hexdigest())

    def test_head_204_304_have_no_body(self):
        with self.conn() as c:
            r = c.request("HEAD", "/head")
            self.assertEqual(r.status, 200, repr(r))
            r = c.request("HEAD", "/bytes/100000")
            self.assertEqual(r.status, 200, repr(r))
            self.assertIn(r.header("content-length"), ("100000", None))
            self.assertEqual(c.request("GET", "/status/204").status, 204)
            self.assertEqual(c.request("GET", "/status/304").status, 304)
            # Had any of those carried a body, this response would not parse.
            self.assertEqual(c.request("GET", "/after").json()["path"], "/after")
            c.settimeout(0.3)
            with self.assertRaises(socket.timeout, msg="stray bytes after the last response"):
                extra = c.sock.recv(1)
                if not extra:
                    raise AssertionError("connection closed")

    # malformed requests: 400 and close

    def assertRejected(self, raw, status=400, listener="public"):
        with self.conn(listener) as c:
            c.send(raw)
            closed, data = c.wait_closed(h.scaled(3))
        self.assertTrue(data, "no response to %r" % raw)
        r = h.parse_response_bytes(data)
        self.assertEqual(r.status, status, "%r -> %r" % (raw, r))
        self.assertTrue(closed, "connection left open after %d for %r" % (status, raw))
        return r

    def test_rejects_content_length_with_transfer_encoding(self):
        self.assertRejected(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
                            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n")

    def test_rejects_two_different_content_lengths(self):
        self.assertRejected(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
                            b"Content-Length: 6\r\n\r\nhello!")

    def test_rejects_bad_chunk_size(self):
        self.assertRejected(b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                            b"zz\r\nhello\r\n0\r\n\r\n")

    def test_rejects_obs_fold(self):
        self.assertRejected(b"GET /x HTTP/1.1\r\nHost: a\r\nX-Folded: a\r\n b\r\n\r\n")

    def test_rejects_bare_lf(self):
        self.assertRejected(b"GET /x HTTP/1.1\r\nHost: a\nX-A: b\r\n\r\n")
        self.assertRejected(b"GET /x HTTP/1.1\nHost: a\n\n")

    def test_rejects_space_in_header_name(self):
        self.assertRejected(b"GET /x HTTP/1.1\r\nHost: a\r\nX Bad: 1\r\n\r\n")
        self.assertRejected(b"GET /x HTTP/1.1\r\nHost: a\r\nX-Bad : 1\r\n\r\n")

    # limits (the "strict" listener)

    def test_uri_too_long_414(self):
        ok = self.tp.get("/" + "a" * 900, listener_name="strict")
        self.assertEqual(ok.status, 200, repr(ok))
        r = self.tp.get("/" + "a" * 2000, listener_name="strict")
        self.assertEqual(r.status, 414, repr(r))

    def test_header_block_too_large_431(self):
        ok = self.tp.get("/h", listener_name="strict", headers=[("X-Big", "b" * 3000)])
        self.assertEqual(ok.status, 200, repr(ok))
        r = self.tp.get("/h", listener_name="strict", headers=[("X-Big", "b" * 5000)])
        self.assertEqual(r.status, 431, repr(r))

    def test_long_header_field_arriving_in_pieces_is_not_a_long_uri(self):
        # The request line is parsed first; a header field longer than max_uri_bytes that
        # arrives over several reads is within the header limit (200) or over it (431), never
        # a 414.
        for size, status in ((2500, 200), (6000, 431)):
            c = self.conn("strict")
            try:
                c.send(b"GET /h HTTP/1.1\r\nX-Big: " + b"b" * (size // 2))
                time.sleep(0.1)
                c.send(b"b" * (size - size // 2) + b"\r\nHost: a\r\nConnection: close\r\n\r\n")
                r = c.read_response()
                self.assertEqual(r.status, status, repr(r))
            finally:
                c.close()

    def test_too_many_headers_431(self):
        few = [("X-H%d" % i, "v") for i in range(15)]
        ok = self.tp.get("/h", listener_name="strict", headers=few)
        self.assertEqual(ok.status, 200, repr(ok))
        many = [("X-H%d" % i, "v") for i in range(25)]
        r = self.tp.get("/h", listener_name="strict", headers=many)
        self.assertEqual(r.status, 431, repr(r))

    def _send_until_response(self, c, head, piece, total):
        """Sends head, then body pieces up to total bytes, stopping once a response arrives."""
        c.send(head)
        sent = 0
        deadline = time.monotonic() + h.scaled(10)
        while time.monotonic() < deadline:
            readable, _, _ = select.select([c.sock], [], [], 0.2 if sent == 0 else 0.01)
            if readable or sent >= total:
                break
            try:
                c.send(piece)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(piece)
        return c.read_response()

    def test_body_too_large_413(self):
        ok = self.tp.request("POST", "/b", listener_name="strict", body=b"x" * 500000)
        self.assertEqual(ok.status, 200, repr(ok))
        total = 2 * 1024 * 1024
        with self.conn("strict") as c:
            head = h.build_request("POST", "/b", [("Content-Length", str(total))])
            r = self._send_until_response(c, head, b"x" * 16384, total)
        self.assertEqual(r.status, 413, repr(r))

    def test_chunked_body_too_large_413(self):
        total = 2 * 1024 * 1024
        piece = b"4000\r\n" + b"y" * 0x4000 + b"\r\n"
        with self.conn("strict") as c:
            head = h.build_request("POST", "/b", [("Transfer-Encoding", "chunked")])
            r = self._send_until_response(c, head, piece, total)
        self.assertEqual(r.status, 413, repr(r))

    def test_slowloris_cut_by_header_timeout_408(self):
        # header_timeout is 1s on "strict": trickle a header a byte at a time, forever.
        start = time.monotonic()
        with self.conn("strict", timeout=10) as c:
            c.send(b"GET /slow HTTP/1.1\r\nHost: a\r\n")
            trickle = b"X-Slow: " + b"z" * 1000
            for i in range(len(trickle)):
                readable, _, _ = select.select([c.sock], [], [], 0.1)
                if readable or time.monotonic() - start > h.scaled(5):
                    break
                try:
                    c.send(trickle[i:i + 1])
                except (BrokenPipeError, ConnectionResetError):
                    break
            closed, got = c.wait_closed(h.scaled(3))
        elapsed = time.monotonic() - start
        self.assertTrue(got, "no response to a slowloris client after %.1fs" % elapsed)
        self.assertEqual(h.parse_response_bytes(got).status, 408)
        self.assertTrue(closed, "slowloris connection left open")
        self.assertGreater(elapsed, 0.8)
        self.assertLess(elapsed, h.scaled(3.0), "cut after %.1fs, header_timeout is 1s" % elapsed)

    def test_idle_keepalive_connection_closed(self):
        with self.conn("idle") as c:
            # Activity resets the idle timer: 4 requests 0.5s apart span 2x idle_timeout.
            for i in range(4):
                self.assertEqual(c.request("GET", "/idle/%d" % i).status, 200)
                if i < 3:
                    time.sleep(0.5)
            start = time.monotonic()
            closed, _ = c.wait_closed(h.scaled(4))
            elapsed = time.monotonic() - start
        self.assertTrue(closed, "idle connection not closed within %.0fs" % h.scaled(4))
        self.assertGreater(elapsed, 0.8, "closed after %.2fs, idle_timeout is 1s" % elapsed)

    def test_public_listener_keeps_idle_connection(self):
        # Default idle_timeout (60s): a 1.5s pause is fine there.
        with self.conn() as c:
            self.assertEqual(c.request("GET", "/a").status, 200)
            time.sleep(1.5)
            self.assertEqual(c.request("GET", "/b").status, 200)


if __name__ == "__main__":
    unittest.main()
