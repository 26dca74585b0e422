"""Request buffering (routes[].request_buffering) as a user sees it: on a route that buffers,
Turnpike reads the request body before it takes an upstream connection, so a slow upload holds
no backend connection; a route without the key still streams (the backend has the request head
before the body is done).

Cases:
  1  a slow HTTP/1.1 upload (chunked, in pieces over ~1 s): buffered, the backend has no
     connection until the client has sent its last byte, and gets the body whole with a
     Content-Length; streamed, the backend has the head while the body is still coming
  2  the same over h2c (HTTP/2 flow control lets the whole body in, window by window)
  3  a body larger than max_bytes (1 MiB through a 64 KiB buffer, chunked and Content-Length,
     HTTP/1.1 and h2c) reaches the backend complete and unchanged
  4  Expect: 100-continue on a buffering route: Turnpike answers 100 at once (curl does not wait
     for its 1 s expect timeout; a raw client gets the 100 before it sends a byte of body)
  5  a buffered PUT is retried on a 503 (retry: retriable-status): the client gets the other
     endpoint's 200, and the 503 endpoint saw the whole body too
  6  a client that stalls mid-body gets 408 after the listener's body_timeout and its connection
     closed (HTTP/1.1) or its stream answered (h2c), as on a streaming route; one that leaves is
     logged 499; no upstream connection is ever opened, and Turnpike serves the next request
The backends are the in-process peers of duplex_backends.py (and harness.CannedBackend), so
their timestamps share the test's clock.
"""

import hashlib
import json
import os
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import duplex_backends as db  # noqa: E402
import harness as h  # noqa: E402

KIB = 1024
MIB = 1024 * KIB
PIECES = 5
PIECE_GAP = 0.2  # five pieces 0.2 s apart: an upload of about a second
HEAD_WAIT = h.scaled(1.0)  # a streaming route has the request head upstream this soon
ANSWER_WAIT = h.scaled(5.0)
STALL_TIMEOUT = 1.0  # the stall test's listeners[].limits.body_timeout


def payload(n, seed=0):
    return bytes((i * 7 + seed) % 251 for i in range(n))


def sha(data):
    return hashlib.sha256(data).hexdigest()


class BufferingCase(h.TurnpikeCase):
    """One Turnpike per test in front of a duplex_backends.H1Backend, with a route of each kind:
    /buffered (1 MiB), /small (64 KiB) and /streamed (no request_buffering)."""

    def start(self, body_timeout="10s", workers=2, extra_clusters=(), extra_routes=()):
        self.backend = db.H1Backend()
        stack_describe = self.stack.describe
        self.stack.describe = lambda: stack_describe() + "\n" + self.backend.describe()
        lst = h.listener("main", h.free_port(), body_timeout=body_timeout)
        lst["protocols"] = ["http1", "h2c"]
        clusters = [h.cluster("up", self.backend.addr)] + list(extra_clusters)
        routes = list(extra_routes) + [
            {"name": "buffered", "match": {"path_prefix": "/buffered"}, "backend": "up",
             "request_buffering": {"max_bytes": "1MiB"}},
            {"name": "small", "match": {"path_prefix": "/small"}, "backend": "up",
             "request_buffering": {"max_bytes": "64KiB"}},
            {"name": "streamed", "match": {"path_prefix": "/streamed"}, "backend": "up"},
        ]
        self.log_path = self.stack.path("access.log")
        cfg = h.config(h.free_port(), [lst], clusters, routes, access_log=self.log_path,
                       workers=workers)
        self.tp = self.stack.turnpike(cfg)
        self.port = self.tp.ports["main"]
        self.clients = []
        return self.tp

    def tearDown(self):
        for c in getattr(self, "clients", []):
            c.close()
        if hasattr(self, "backend"):
            self.backend.stop()
        super().tearDown()

    def client(self, proto):
        c = db.H1Client(self.port) if proto == "http1" else db.H2Client(self.port)
        self.clients.append(c)
        return c

    def log_lines(self, n, timeout=None):
        """The first n access-log lines (the log is flushed every 200 ms)."""
        def read():
            try:
                with open(self.log_path) as f:
                    lines = [json.loads(line) for line in f if line.strip()]
            except OSError:
                return None
            return lines if len(lines) >= n else None
        return h.wait_for(read, timeout or h.scaled(5), what="%d access-log lines" % n)

    def assert_no_upstream(self, why):
        with self.backend.cond:
            self.assertEqual((self.backend.connections, len(self.backend.records)), (0, 0),
                             "%s: %r" % (why, self.backend.records))

    def plain_request_works(self):
        c = self.client("http1")
        c.open("POST", "/buffered/head", length=5)
        c.send(b"hello")
        status, _ = c.head(ANSWER_WAIT)
        self.assertEqual((status, c.read_all(ANSWER_WAIT)), (200, b"got 5 bytes"))


class TestSlowUpload(BufferingCase):
    """Cases 1 and 2: a body sent in pieces over about a second."""

    def slow_upload(self, proto, route):
        """Sends a body of PIECES pieces PIECE_GAP apart on `route`; returns (body, the time the
        last piece was sent, the backend's record seen while the client was still sending, the
        backend's record, the response)."""
        self.start()
        body = payload(PIECES * 10 * KIB, seed=len(route))
        c = self.client(proto)
        # No declared length (chunked, or DATA frames without content-length): the backend
        # reads until the client's end, so it cannot answer early.
        c.open("POST", route + "/head")
        step = len(body) // PIECES
        early = None
        for i in range(PIECES):
            if i > 0:
                time.sleep(PIECE_GAP)
            c.send(body[i * step:(i + 1) * step])
            early = early or self.backend.find(route)
        time.sleep(PIECE_GAP / 2)
        early = early or self.backend.find(route)
        with self.backend.cond:
            connections_before_end = self.backend.connections
        t_finish = time.monotonic()
        c.finish()
        rec = self.backend.wait_record(route, ANSWER_WAIT)
        status, headers = c.head(ANSWER_WAIT)
        answer = c.read_all(ANSWER_WAIT)
        self.assertEqual((status, answer), (200, b"got %d bytes" % len(body)), headers)
        self.backend.wait(lambda: rec.t_end is not None, ANSWER_WAIT, "the body's end")
        self.assertEqual((rec.body_len, rec.sha.hexdigest()), (len(body), sha(body)))
        return body, t_finish, early, connections_before_end, rec

    def check_buffered(self, proto):
        body, t_finish, early, conns, rec = self.slow_upload(proto, "/buffered")
        self.assertIsNone(early, "the backend had the request before the body was complete")
        self.assertEqual(conns, 0, "an upstream connection was open while the client uploaded")
        self.assertGreaterEqual(rec.t_head, t_finish,
                                "the backend had the head %.3fs before the client's last byte"
                                % (t_finish - rec.t_head))
        # Held whole, it goes up with its length (the client's framing was chunked or DATA).
        self.assertEqual(rec.header("content-length"), str(len(body)), rec.headers)
        self.assertIsNone(rec.header("transfer-encoding"), rec.headers)
        self.assertEqual(self.log_lines(1)[0]["request_buffered"], len(body))

    def check_streamed(self, proto):
        _, t_finish, early, conns, rec = self.slow_upload(proto, "/streamed")
        self.assertIsNotNone(early, "the streaming route held the head until the body was done")
        self.assertLess(rec.t_head, t_finish - (PIECES - 2) * PIECE_GAP)
        self.assertEqual(rec.header("transfer-encoding"), "chunked", rec.headers)
        self.assertEqual(conns, 1)
        self.assertIsNone(self.log_lines(1)[0]["request_buffered"])

    def test_http1_buffered_backend_connection_only_after_the_last_byte(self):
        self.check_buffered("http1")

    def test_http1_streamed_route_still_streams(self):
        self.check_streamed("http1")

    def test_h2c_buffered_backend_connection_only_after_the_last_byte(self):
        self.check_buffered("h2")

    def test_h2c_streamed_route_still_streams(self):
        self.check_streamed("h2")


class TestLargerThanMaxBytes(BufferingCase):
    """Case 3: 1 MiB through a route that buffers 64 KiB: the first 64 KiB are buffered, the
    rest streams behind them; the backend gets every byte in order."""

    def check(self, proto, chunked):
        self.start()
        body = payload(MIB, seed=3)
        c = self.client(proto)
        c.open("PUT", "/small/head", length=None if chunked else len(body))
        for i in range(0, len(body), 100 * KIB):
            c.send(body[i:i + 100 * KIB], timeout=ANSWER_WAIT)
        c.finish()
        status, headers = c.head(ANSWER_WAIT)
        self.assertEqual((status, c.read_all(ANSWER_WAIT)), (200, b"got %d bytes" % MIB), headers)
        rec = self.backend.wait_record("/small", ANSWER_WAIT)
        self.assertEqual((rec.body_len, rec.sha.hexdigest()), (MIB, sha(body)))
        self.assertEqual(self.log_lines(1)[0]["request_buffered"], 64 * KIB)

    def test_http1_chunked(self):
        self.check("http1", chunked=True)

    def test_http1_content_length(self):
        self.check("http1", chunked=False)

    def test_h2c(self):
        self.check("h2", chunked=False)


class TestExpectContinue(BufferingCase):
    """Case 4: Turnpike answers 100 Continue itself so that the body comes."""

    def test_curl_gets_100_at_once(self):
        self.start()
        body = payload(200 * KIB, seed=4)
        path = self.stack.write("body.bin", "")
        with open(path, "wb") as f:
            f.write(body)
        url = "http://127.0.0.1:%d/buffered/head" % self.port
        t0 = time.monotonic()
        r = h.curl("-v", "--http1.1", "-H", "Expect: 100-continue", "--expect100-timeout", "5",
                   "--data-binary", "@" + path, "-o", "-", url, timeout=h.scaled(10))
        took = time.monotonic() - t0
        err = r.stderr.decode("latin-1")
        self.assertEqual(r.returncode, 0, err)
        self.assertEqual(r.stdout, b"got %d bytes" % len(body))
        self.assertIn("HTTP/1.1 100 Continue", err)
        # Without the 100, curl would have waited its whole expect timeout (5 s here).
        self.assertLess(took, h.scaled(2.0), err)
        rec = self.backend.wait_record("/buffered", ANSWER_WAIT)
        self.assertEqual(rec.sha.hexdigest(), sha(body))
        self.assertIsNone(rec.header("expect"))

    def test_raw_client_waits_for_100_before_its_body(self):
        self.start()
        body = payload(5000, seed=5)
        c = self.client("http1")
        c.open("POST", "/buffered/head", headers=[("Expect", "100-continue")], length=len(body))
        deadline = time.monotonic() + h.scaled(1.0)
        try:
            interim = c._line(deadline)
            blank = c._line(deadline)
        except db.socket.timeout:
            self.fail("no 100 Continue within 1 s of the request head")
        self.assertEqual((interim, blank), ("HTTP/1.1 100 Continue", ""))
        self.assert_no_upstream("before the body")
        c.send(body)
        status, _ = c.head(ANSWER_WAIT)
        self.assertEqual((status, c.read_all(ANSWER_WAIT)), (200, b"got 5000 bytes"))


class TestRetry(BufferingCase):
    """Case 5: a buffered PUT is held whole, so a 503 is retried on the other endpoint."""

    def test_buffered_put_is_retried_on_503_with_its_whole_body(self):
        bad = h.CannedBackend("bad", status=503)
        good = h.CannedBackend("good", status=200)
        self.addCleanup(bad.stop)
        self.addCleanup(good.stop)
        route = {"name": "retried", "match": {"path_prefix": "/retry"}, "backend": "pair",
                 "request_buffering": {},
                 "retry": {"on": ["retriable-status"], "statuses": [503]}}
        # One worker: its round robin alternates, so some of the requests meet `bad` first.
        self.start(workers=1, extra_clusters=[h.cluster("pair", bad.addr, good.addr)],
                   extra_routes=[route])
        sent = []
        for i in range(4):
            body = payload(48 * KIB + i, seed=10 + i)
            sent.append(body)
            c = self.client("http1")
            c.open("PUT", "/retry/item%d" % i, length=len(body))
            # The body comes after the head, in two pieces: streamed, it would not be
            # replayable (the first try would have had only part of it).
            c.send(body[:1000])
            time.sleep(0.1)
            c.send(body[1000:])
            status, headers = c.head(ANSWER_WAIT)
            answer = c.read_all(ANSWER_WAIT)
            self.assertEqual((status, answer, dict(headers).get("x-upstream-name")),
                             (200, b"200\n", "good"), "request %d" % i)
        bad_seen = list(bad.seen)
        self.assertGreaterEqual(len(bad_seen), 1, "no request went to the 503 endpoint first")
        bodies = {"/retry/item%d" % i: b for i, b in enumerate(sent)}
        for method, target, _, got in bad_seen:
            self.assertEqual(method, "PUT")
            self.assertEqual(sha(got), sha(bodies[target]), "the 503 endpoint's copy of " + target)
        self.assertEqual(sorted(t for _, t, _, _ in good.seen), sorted(bodies))
        for _, target, _, got in good.seen:
            self.assertEqual(sha(got), sha(bodies[target]), "the 200 endpoint's copy of " + target)
        retried = [e for e in self.log_lines(4) if e["upstream_attempts"] == 2]
        self.assertEqual(len(retried), len(bad_seen))
        for e in retried:
            self.assertEqual((e["status"], e["request_buffered"]),
                             (200, len(bodies[e["path"]])), e)


class TestStalledClient(BufferingCase):
    """Case 6: a client that stops (or leaves) mid-body while its body is being buffered."""

    def test_http1_stall_gets_408_and_no_upstream_connection(self):
        self.start(body_timeout="%gs" % STALL_TIMEOUT)
        c = self.client("http1")
        c.open("POST", "/buffered/head", length=100 * KIB)
        c.send(b"x" * 1000)
        t0 = time.monotonic()
        status, headers = c.head(h.scaled(STALL_TIMEOUT + 3))
        took = time.monotonic() - t0
        self.assertEqual(status, 408, headers)
        self.assertGreater(took, STALL_TIMEOUT * 0.8)
        self.assertLess(took, h.scaled(STALL_TIMEOUT + 2))
        self.assertEqual(json.loads(c.read_all(ANSWER_WAIT))["error"], "request body timeout")
        # The rest of the body will not be read: the connection closes.
        try:
            c._fill(time.monotonic() + h.scaled(3))
            self.fail("bytes after the 408: %r" % bytes(c.buf))
        except db.Gone:
            pass
        except db.socket.timeout:
            self.fail("the connection stayed open after the 408")
        self.assert_no_upstream("after a stalled upload")
        self.plain_request_works()
        line = [e for e in self.log_lines(2) if e["status"] != 200][0]
        self.assertEqual((line["status"], line["upstream"], line["request_buffered"]),
                         (408, None, 1000), line)

    def test_h2c_stall_gets_408_and_the_connection_goes_on(self):
        self.start(body_timeout="%gs" % STALL_TIMEOUT)
        c = self.client("h2")
        c.open("POST", "/buffered/head", length=100 * KIB)
        c.send(b"x" * 1000)
        t0 = time.monotonic()
        status, _ = c.head(h.scaled(STALL_TIMEOUT + 3))
        took = time.monotonic() - t0
        self.assertEqual(status, 408)
        self.assertLess(took, h.scaled(STALL_TIMEOUT + 2))
        self.assertGreater(took, STALL_TIMEOUT * 0.8)
        self.assert_no_upstream("after a stalled upload")
        # The same HTTP/2 connection serves the next request.
        c.open("POST", "/buffered/head", length=3)
        c.send(b"abc")
        c.finish()
        status, _ = c.head(ANSWER_WAIT)
        self.assertEqual((status, c.read_all(ANSWER_WAIT)), (200, b"got 3 bytes"))

    def test_streamed_route_stall_gets_the_same_408(self):
        # What a stalled body gets without buffering, for comparison: 408 after body_timeout,
        # here with the request already upstream. (Over h2c the body's first bytes come after
        # the head, so the upload sends them before it waits on the client again.)
        self.start(body_timeout="%gs" % STALL_TIMEOUT)
        for proto in ("http1", "h2"):
            c = self.client(proto)
            c.open("POST", "/streamed/head", length=100 * KIB)
            c.send(b"x" * 1000)
            t0 = time.monotonic()
            status, _ = c.head(h.scaled(STALL_TIMEOUT + 3))
            took = time.monotonic() - t0
            self.assertEqual(status, 408, proto)
            self.assertLess(took, h.scaled(STALL_TIMEOUT + 2), proto)
        self.assertEqual(self.backend.connections, 2)

    def test_client_leaving_mid_body_opens_no_upstream_connection(self):
        self.start()
        c = self.client("http1")
        c.open("POST", "/buffered/head", length=100 * KIB)
        c.send(b"x" * 2000)
        time.sleep(0.3)
        c.close()
        line = self.log_lines(1)[0]
        self.assertEqual((line["status"], line["upstream"], line["request_buffered"]),
                         (499, None, 2000), line)
        self.assert_no_upstream("after the client left")
        self.plain_request_works()


class TestConfig(h.TurnpikeCase):
    """Bad request_buffering values are refused with file:line:column and the key."""

    def test_bad_values_are_refused(self):
        text = """\
admin: {{listen: "127.0.0.1:{admin}"}}
listeners: [{{listen: "127.0.0.1:{port}"}}]
clusters: [{{name: up, endpoints: ["127.0.0.1:9"]}}]
routes:
  - match: {{path_prefix: /a}}
    backend: up
    request_buffering: {{max_bytes: 100MiB}}
  - match: {{path_prefix: /b}}
    backend: up
    request_buffering: {{max_bytes: lots}}
  - match: {{path_prefix: /c}}
    backend: up
    request_buffering: {{max_size: 1MiB}}
"""
        self.assertConfigErrors(text, [
            (7, 36, "routes[0].request_buffering.max_bytes: must be between 1 and 64MiB, "
                    "got '100MiB'"),
            (10, 36, "routes[1].request_buffering.max_bytes: invalid size 'lots'"),
            (13, 25, "routes[2].request_buffering: unknown key 'max_size'"),
        ], count=3)


if __name__ == "__main__":
    unittest.main()
