"""Upstream failures as the client sees them: 502 when the upstream is down, resets or closes
early; 504 when it is too slow; a JSON body with the request id; never a hang, never a crash;
and the client connection stays usable after a gateway error.
"""

import os
import select
import socket
import struct
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


class LoopbackServer:
    """A threaded TCP server on a free loopback port: each connection runs serve(conn, n) on a
    thread of its own (n counts connections from 1)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.addr = "127.0.0.1:%d" % self.port
        self._conns = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self._conns += 1
            threading.Thread(target=self.serve, args=(conn, self._conns), daemon=True).start()

    def serve(self, conn, number):
        raise NotImplementedError

    def close(self):
        self._stop.set()
        self.sock.close()
        self._thread.join(2)


class MisbehavingUpstream(LoopbackServer):
    """A loopback upstream that fails on purpose; the request path picks how:
    /bad/close          reads the request head, closes without answering
    /bad/reset          reads the request head, resets the connection (RST)
    /bad/partial-head   sends half a status line and headers, closes
    /bad/mid-body       sends headers (Content-Length: 100000) and 1000 body bytes, closes
    /bad/stall-body     sends headers and 1000 body bytes, then goes silent for 5s
    /bad/mid-request    reads the request head and a little body, closes (request body unread)
    /bad/interim-flood  sends interim (100 Continue) responses as fast as it can, never a final one
    /bad/interim-slow   sends an interim response every 100 ms, never a final one
    """

    def serve(self, conn, number):
        conn.settimeout(5)
        try:
            data = b""
            while b"\r\n\r\n" not in data:
                d = conn.recv(65536)
                if not d:
                    return
                data += d
            path = data.split(b" ", 2)[1].decode("latin-1")
            if path.startswith("/bad/reset"):
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            elif path.startswith("/bad/partial-head"):
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Len")
            elif path.startswith("/bad/mid-body") or path.startswith("/bad/stall-body"):
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"m" * 1000)
                if path.startswith("/bad/stall-body"):
                    self._stop.wait(5)
            elif path.startswith("/bad/mid-request"):
                conn.recv(1000)
            elif path.startswith("/bad/interim"):
                pause = 0.1 if path.startswith("/bad/interim-slow") else 0
                end = time.monotonic() + 10
                while time.monotonic() < end and not self._stop.is_set():
                    conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                    if pause:
                        time.sleep(pause)
        except OSError:
            pass
        finally:
            conn.close()


class UpstreamErrorsTest(h.TurnpikeCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        s = cls.cstack
        echo = s.echo("echo")
        cls.bad = MisbehavingUpstream()
        clusters = [
            h.cluster("echo", echo),
            h.cluster("down", "127.0.0.1:%d" % h.free_port()),  # nothing listens there
            h.cluster("bad", cls.bad),
        ]
        routes = [
            {"name": "down", "match": {"path_prefix": "/down"}, "backend": "down"},
            {"name": "slow", "match": {"path_prefix": "/delay"}, "backend": "echo",
             "timeout": "500ms"},
            {"name": "bad", "match": {"path_prefix": "/bad"}, "backend": "bad",
             "timeout": "500ms", "idle_timeout": "700ms"},
            {"name": "ok", "match": {"path_prefix": "/"}, "backend": "echo"},
        ]
        cfg = h.config(h.free_port(), [h.listener("public", h.free_port())], clusters, routes)
        cls.tp = s.turnpike(cfg)

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        cls.bad.close()

    def tearDown(self):
        self.assertIsNone(self.tp.proc.poll(), "turnpike died:\n" + self.tp.proc.describe())
        super().tearDown()

    def assertStillUsable(self, c):
        r = c.request("GET", "/ok/after")
        self.assertEqual(r.status, 200, "connection unusable after a gateway error: %r" % r)
        self.assertEqual(r.json()["path"], "/ok/after")

    def test_upstream_down_502(self):
        with self.tp.conn(timeout=h.scaled(5)) as c:
            start = time.monotonic()
            r = c.request("GET", "/down/x")
            self.assertLess(time.monotonic() - start, h.scaled(2.0))
            self.assertJsonError(r, 502)
            self.assertStillUsable(c)

    def test_slow_upstream_504(self):
        with self.tp.conn(timeout=h.scaled(5)) as c:
            start = time.monotonic()
            r = c.request("GET", "/delay/3000")
            elapsed = time.monotonic() - start
            self.assertJsonError(r, 504)
            self.assertGreater(elapsed, 0.4, "504 before the 500ms route timeout")
            self.assertLess(elapsed, h.scaled(1.5), "504 took %.2fs (timeout 500ms)" % elapsed)
            self.assertStillUsable(c)

    def test_fast_enough_upstream_is_not_cut(self):
        r = self.tp.get("/delay/100")
        self.assertEqual(r.status, 200, repr(r))

    def test_upstream_closes_without_answer_502(self):
        with self.tp.conn(timeout=h.scaled(5)) as c:
            self.assertJsonError(c.request("GET", "/bad/close"), 502)
            self.assertStillUsable(c)

    def test_upstream_reset_502(self):
        with self.tp.conn(timeout=h.scaled(5)) as c:
            self.assertJsonError(c.request("GET", "/bad/reset"), 502)
            self.assertStillUsable(c)

    def test_upstream_partial_head_502(self):
        with self.tp.conn(timeout=h.scaled(5)) as c:
            self.assertJsonError(c.request("GET", "/bad/partial-head"), 502)
            self.assertStillUsable(c)

    def test_endless_interim_responses_do_not_hold_the_request(self):
        # A hostile backend answering 100 Continue forever: past 16 interim responses the answer
        # is 502; sent slowly, the response-head deadline (500 ms, however many came) gives 504.
        with self.tp.conn(timeout=h.scaled(5)) as c:
            start = time.monotonic()
            r = c.request("GET", "/bad/interim-flood")
            self.assertJsonError(r, 502)
            self.assertLess(time.monotonic() - start, h.scaled(1.0))
            start = time.monotonic()
            r = c.request("GET", "/bad/interim-slow")
            elapsed = time.monotonic() - start
            self.assertJsonError(r, 504)
            self.assertLess(elapsed, h.scaled(1.5), "interim responses kept the request %.1fs" %
                            elapsed)
            self.assertStillUsable(c)

    def test_upstream_closes_mid_request_body_502(self):
        # The upstream hangs up while Turnpike is still streaming the request body to it.
        total = 8 * 1024 * 1024
        with self.tp.conn(timeout=h.scaled(5)) as c:
            c.send(h.build_request("POST", "/bad/mid-request", [("Content-Length", str(total))]))
            piece, sent = b"q" * 65536, 0
            deadline = time.monotonic() + h.scaled(10)
            while sent < total and time.monotonic() < deadline:
                readable, _, _ = select.select([c.sock], [], [], 0.005)
                if readable:
                    break
                try:
                    c.send(piece)
                except (BrokenPipeError, ConnectionResetError):
                    break
                sent += len(piece)
            r = c.read_response()
        self.assertJsonError(r, 502)

    def test_upstream_closes_mid_response_body(self):
        # Headers already went out: the client must see a truncated body and a closed
        # connection, not a hang and not a second response.
        with self.tp.conn(timeout=h.scaled(5)) as c:
            start = time.monotonic()
            with self.assertRaises(h.HttpError) as ctx:
                c.request("GET", "/bad/mid-body")
            self.assertNotIn("timed out", str(ctx.exception), "client left hanging")
            self.assertLess(time.monotonic() - start, h.scaled(3))

    def test_upstream_stalls_mid_response_body(self):
        # The route's idle_timeout bounds body inactivity: the client is cut, not left hanging.
        with self.tp.conn(timeout=h.scaled(4)) as c:
            start = time.monotonic()
            with self.assertRaises(h.HttpError) as ctx:
                c.request("GET", "/bad/stall-body")
            elapsed = time.monotonic() - start
            self.assertNotIn("timed out", str(ctx.exception), "client left hanging")
            self.assertLess(elapsed, h.scaled(3))

    def test_upstream_error_status_passed_through(self):
        r = self.tp.get("/status/503")
        self.assertEqual(r.status, 503)
        self.assertEqual(r.header("x-upstream-name"), "echo", "not the upstream's own 503")
        self.assertEqual(r.json()["path"], "/status/503")


class StaleBackend(LoopbackServer):
    """Answers the first request of each connection (keep-alive), then reads the next request on
    that connection and closes without answering: what a pooled connection that the backend
    dropped looks like to a proxy that has already sent a request on it. Records every request
    it read as (method, path, connection number)."""

    def __init__(self):
        self.seen = []
        super().__init__()

    @staticmethod
    def _read_request(conn):
        data = b""
        while b"\r\n\r\n" not in data:
            d = conn.recv(65536)
            if not d:
                return None
            data += d
        head, rest = data.split(b"\r\n\r\n", 1)
        length = 0
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                length = int(v)
        while len(rest) < length:
            rest += conn.recv(65536)
        method, path = head.split(b" ")[:2]
        return method.decode(), path.decode()

    def serve(self, conn, number):
        conn.settimeout(5)
        try:
            req = self._read_request(conn)
            if req is None:
                return
            self.seen.append(req + (number,))
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            req = self._read_request(conn)
            if req is not None:
                self.seen.append(req + (number,))  # read, and never answered
        except OSError:
            pass
        finally:
            conn.close()


class StaleConnectionRetryTest(h.TurnpikeCase):
    """The one-shot retry of a request on a pooled connection the backend dropped: only when the
    request may run twice. A GET is sent again on a fresh connection; a POST, whose bytes the
    backend may have acted on, is answered 502 and reaches the backend once."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.backend = StaleBackend()
        routes = [{"name": "stale", "match": {"path_prefix": "/"}, "backend": "stale"}]
        cfg = h.config(h.free_port(), [h.listener("public", h.free_port())],
                       [h.cluster("stale", cls.backend)], routes, workers=1)
        cls.tp = cls.cstack.turnpike(cfg)

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        cls.backend.close()

    def count(self, method, path):
        return sum(1 for m, p, _ in self.backend.seen if (m, p) == (method, path))

    def test_idempotent_request_is_sent_again_non_idempotent_is_not(self):
        self.assertEqual(self.tp.get("/warm-1").status, 200)  # leaves a pooled connection
        r = self.tp.request("POST", "/once", body=b"charge the card")
        self.assertJsonError(r, 502)
        time.sleep(0.2)
        self.assertEqual(self.count("POST", "/once"), 1, self.backend.seen)

        self.assertEqual(self.tp.get("/warm-2").status, 200)
        r = self.tp.get("/twice")
        self.assertEqual(r.status, 200, "a GET on a dropped pooled connection is retried")
        self.assertEqual(r.text(), "ok")
        self.assertEqual(self.count("GET", "/twice"), 2, self.backend.seen)
        conns = [n for m, p, n in self.backend.seen if p == "/twice"]
        self.assertNotEqual(conns[0], conns[1], "the retry went out on a fresh connection")


if __name__ == "__main__":
    unittest.main()
