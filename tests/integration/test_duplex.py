"""Full-duplex proxying, as a user sees it: Turnpike forwards a request's head as soon as it has
it, moves the request body and the response at the same time, passes trailers both ways and
ends the exchange when either side does.

Every pair of downstream and upstream protocol is covered (HTTP/1.1 and cleartext HTTP/2 on each
side, plus TLS on the listener for HTTP/1.1 and HTTP/2 clients); backends and clients are the
Python peers in duplex_backends.py. The same test bodies also run with Turnpike taken out
(Control* classes: the client talks straight to the backend), which proves that the backends and
clients behave as each case assumes, so a failure through Turnpike is Turnpike's.

Cases (numbers as in the issue):
  1  the request head reaches the backend before any request body exists (<= 1s)
  2  echo ping-pong: the client waits for the echo of body piece N before sending piece N+1
  3  the response head and body reach the client while the request body is still arriving
  4  trailers: HTTP/2 request trailers reach an HTTP/2 backend; HTTP/2 response trailers reach
     HTTP/2 and HTTP/1.1 clients (chunked trailer section, after TE: trailers); a response of
     HEADERS then trailers and no DATA stays that (no Content-Length: 0 for HTTP/1.1)
  5  HEADERS, then an empty DATA frame with END_STREAM, is forwarded as such (not folded into
     HEADERS with END_STREAM)
  6  a backend that answers 413 after 1 MiB of a 100 MiB upload: the client has the 413 within
     a few seconds (route timeout 30s, so a 502/504 after the timeout is clearly different)
  7  a client that goes away (closes before the slow answer, or mid-upload; HTTP/2: also
     RST_STREAM) makes the backend see its connection closed / stream reset within ~2s
  8  server-sent events through a route with `timeout: 5s`: every event arrives within ~0.5s
     of the backend sending it, for 60 events (DUPLEX_SSE_EVENTS) a second apart. Assumption:
     a route's timeout is a deadline for the response head (and at most an inactivity bound
     for the body), never a limit on how long a response that keeps flowing may last.
  9  back-pressure: a client that stops reading a 200 MiB response, and a backend that stops
     reading a 200 MiB upload, grow Turnpike's RSS by less than 16 MiB
After each case that passes, the proxy still serves a plain request (no stuck state).

Waits are a few seconds each (stretched by h.scaled() under the sanitizers): a half-duplex proxy
fails these tests quickly instead of hanging until ctest's timeout.
"""

import os
import select
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import duplex_backends as db  # noqa: E402
import harness as h  # noqa: E402
import tls_certs  # noqa: E402

MIB = 1024 * 1024
API = "api.example.test"
BACKEND = "backend.example.test"
HEAD_WAIT = h.scaled(1.0)  # the backend has the request head this soon
ROUND_WAIT = h.scaled(2.0)  # one echo round trip
ANSWER_WAIT = h.scaled(5.0)  # "within a few seconds"
GONE_WAIT = h.scaled(2.0)  # the backend learns that the client went away
ROUTE_TIMEOUT = "30s"
SSE_EVENTS = int(os.environ.get("DUPLEX_SSE_EVENTS", "60"))
SSE_INTERVAL = 1.0
SSE_LAG = h.scaled(0.5)
# ASan's quarantine holds freed memory back; under the sanitizers it is cut to 4 MiB and the
# shadow memory gets some room too.
RSS_LIMIT_MIB = 32 if h.SANITIZE else 16
BIG = 200 * MIB


class Uploader(threading.Thread):
    """Sends `total` body bytes on a client's current request in the background, until done,
    stopped, or the connection / stream fails. .sent counts what the client handed over."""

    def __init__(self, client, total, block=64 * 1024):
        super().__init__(daemon=True)
        self.client = client
        self.total = total
        self.block = b"u" * block
        self.sent = 0
        self.error = None
        self.stopped = threading.Event()

    def run(self):
        while self.sent < self.total and not self.stopped.is_set():
            piece = self.block[:self.total - self.sent]
            try:
                if self.client.proto == "h2":
                    self._send_h2(piece)
                else:
                    self._send_raw(piece)
            except (db.Gone, OSError, ValueError) as e:  # ValueError: socket closed
                self.error = "%s: %s" % (type(e).__name__, e)
                return

    def _send_h2(self, piece):
        while piece and not self.stopped.is_set():
            try:
                self.client.send(piece, timeout=0.5, stop=self.stopped)
                self.sent += len(piece)
                return
            except db.SendTimeout as e:  # no window yet (back-pressure): the rest, later
                self.sent += e.sent
                piece = piece[e.sent:]

    def _send_raw(self, piece):
        # A plain socket another thread reads from: wait for room with select, then one send
        # (never sendall with a timeout, which may send part and raise).
        view = memoryview(piece)
        sock = self.client.sock
        while view and not self.stopped.is_set():
            _, writable, _ = select.select([], [sock], [], 0.5)
            if writable:
                n = sock.send(view)
                view = view[n:]
                self.sent += n

    def stop(self):
        self.stopped.set()
        self.join(5)


class DuplexCase(h.TurnpikeCase):
    """One Turnpike (per test) between clients of kind DOWN and a Python backend of kind UP.
    DIRECT: no Turnpike, the client talks straight to the backend (the control runs)."""

    DOWN = "h1"  # h1, h2c, h1-tls, h2-tls
    UP = "http1"  # http1, h2c, h2 (HTTP/2 over TLS)
    DIRECT = False
    pki = None

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        if cls.DOWN.endswith("-tls") or cls.UP == "h2":
            cls.pki = tls_certs.Pki(os.path.join(cls.cstack.dir, "pki"))
            cls.backend_cert = cls.pki.issue_server("backend", [BACKEND])

    def setUp(self):
        super().setUp()
        self.clients = []
        if self.UP == "http1":
            self.backend = db.H1Backend()
        elif self.UP == "h2c":
            self.backend = db.H2Backend()
        else:
            self.backend = db.H2Backend(cert=self.backend_cert.cert, key=self.backend_cert.key)
        stack_describe = self.stack.describe
        self.stack.describe = lambda: stack_describe() + "\n" + self.backend.describe()
        if self.DIRECT:
            self.tp = None
            self.port = self.backend.port
            return
        lst = h.listener("main", h.free_port())
        if self.DOWN.endswith("-tls"):
            lst["tls"] = {"certificates": [{"cert": self.pki.api.cert, "key": self.pki.api.key}]}
            lst["protocols"] = ["http1", "h2"]
        else:
            lst["protocols"] = ["http1", "h2c"]
        cluster = h.cluster("up", self.backend.addr, protocol=self.UP)
        if self.UP == "h2":
            cluster["tls"] = {"ca": self.pki.ca.cert, "server_name": BACKEND}
        routes = [{"name": "all", "match": {"path_prefix": "/"}, "backend": "up",
                   "timeout": ROUTE_TIMEOUT}]
        cfg = h.config(h.free_port(), [lst], [cluster], routes, access_log="stdout")
        env = None
        if h.SANITIZE:
            opts = os.environ.get("ASAN_OPTIONS", "")
            env = {"ASAN_OPTIONS": (opts + ":" if opts else "") + "quarantine_size_mb=4"}
        self.tp = self.stack.turnpike(cfg, env=env)
        self.port = self.tp.ports["main"]

    def tearDown(self):
        for c in self.clients:
            c.close()
        self.backend.stop()
        super().tearDown()

    # --- helpers ---------------------------------------------------------------------------

    def client(self):
        if self.DOWN == "h1":
            c = db.H1Client(self.port)
        elif self.DOWN == "h2c":
            c = db.H2Client(self.port)
        elif self.DOWN == "h1-tls":
            c = db.H1Client(self.port, tls=db.tls_client_context(self.pki.ca.cert, "http/1.1"),
                            server_name=API)
        else:  # h2-tls: Turnpike's TLS listener, or (direct) the TLS backend itself
            c = db.H2Client(self.port, tls=db.tls_client_context(self.pki.ca.cert, "h2"),
                            server_name=BACKEND if self.DIRECT else API)
        self.clients.append(c)
        return c

    def step(self, what, fn, *args):
        """Runs one client/backend step; a timeout or a closed connection fails the test with
        `what` (the user-visible expectation) first."""
        try:
            return fn(*args)
        except AssertionError as e:
            msg = "%s: %s" % (what, e)
        except (db.Gone, OSError) as e:
            msg = "%s: the connection or stream ended instead (%s: %s)" % (
                what, type(e).__name__, e)
        raise self.failureException(msg)  # outside the except: no chained traceback

    def assertStillServes(self):
        """A plain request on a new connection still gets its answer."""
        c = self.client()
        c.open("GET", "/after/ok", body_follows=False)
        status, _ = self.step("a plain request after the case", c.head, ANSWER_WAIT)
        body = self.step("the plain request's body", c.read_all, ANSWER_WAIT)
        self.assertEqual((status, body), (200, b"ok"))
        c.close()

    def through(self):
        return "directly" if self.DIRECT else "through Turnpike"

    def rss_sampler(self):
        if self.DIRECT:
            return None
        s = h.RssSampler(self.tp.pid)
        s.start()
        return s

    def assertRssBounded(self, sampler, what):
        if sampler is None:
            return
        sampler.stop()
        self.assertGreater(sampler.samples, 5, "RSS hardly sampled")
        self.assertLess(sampler.growth_mib, RSS_LIMIT_MIB,
                        "%s: Turnpike's RSS grew by %.1f MiB (baseline %.1f MiB, peak %.1f MiB)"
                        % (what, sampler.growth_mib, sampler.baseline / 1024.0,
                           sampler.peak / 1024.0))


# ---------------------------------------------------------------------------------------------
# The cases, as mixins: each protocol pair's class takes the ones that apply to it.


class CoreCases:
    def test_1_request_head_goes_upstream_before_any_body(self):
        for framing, length in (("chunked / no length", None), ("content-length", 1000)):
            with self.subTest(framing=framing):
                c = self.client()
                c.open("POST", "/head/%s" % ("cl" if length else "chunked"),
                       headers=[("content-type", "application/octet-stream")], length=length)
                rec = self.step("the backend sees the request head (%s) within %.1fs while the "
                                "client has sent no body yet" % (framing, HEAD_WAIT),
                                self.backend.wait_record,
                                "/head/%s" % ("cl" if length else "chunked"), HEAD_WAIT)
                self.assertEqual(rec.body_len, 0)
                if self.UP != "http1":
                    first = rec.frames[0]
                    self.assertEqual(first[0], "HEADERS", rec.frame_summary())
                    self.assertNotIn("END_STREAM", first[1],
                                     "HEADERS of a request with a body to come: %s"
                                     % rec.frame_summary())
                c.send(b"x" * 1000)
                c.finish()
                status, _ = self.step("the answer once the body is sent", c.head, ANSWER_WAIT)
                body = self.step("the answer's body", c.read_all, ANSWER_WAIT)
                self.assertEqual((status, body), (200, b"got 1000 bytes"))
                c.close()
        self.assertStillServes()

    def test_2_echo_ping_pong(self):
        c = self.client()
        c.open("POST", "/echo", headers=[("content-type", "application/octet-stream")])
        total = 0
        for i in range(5):
            piece = b"ping-%d-%s" % (i, os.urandom(6).hex().encode())
            c.send(piece)
            total += len(piece)
            if i == 0:
                status, _ = self.step("round 1: the echo's response head while the request "
                                      "body is still open", c.head, ROUND_WAIT)
                self.assertEqual(status, 200)
            got = self.step("round %d: the echo of body piece %d comes back %s before the "
                            "client sends more" % (i + 1, i + 1, self.through()),
                            c.read_at_least, len(piece), ROUND_WAIT)
            self.assertEqual(got, piece, "round %d" % (i + 1))
        c.finish()
        end = self.step("the response ends after the request does", c.read_some, ANSWER_WAIT)
        self.assertIsNone(end, "more body after the last echo: %r" % (end,))
        rec = self.backend.find("/echo")
        self.assertEqual(rec.body_len, total)
        self.assertIsNotNone(rec.t_end)
        self.assertStillServes()

    def test_3_response_streams_while_request_body_arrives(self):
        c = self.client()
        c.open("POST", "/early", headers=[("content-type", "application/octet-stream")])
        c.send(b"a" * 1000)  # the body has begun; more is to come
        status, _ = self.step("the response head reaches the client while the request body is "
                              "still being sent", c.head, ANSWER_WAIT)
        self.assertEqual(status, 200)
        got = self.step("the response's first body bytes, sent by the backend right after the "
                        "head, reach the client while the request body is still being sent",
                        c.read_at_least, 6, ROUND_WAIT)
        self.assertEqual(got, b"early\n")
        rec = self.backend.find("/early")
        self.assertIsNone(rec.t_end, "the backend already had the whole request body")
        for _ in range(3):
            c.send(b"b" * 1000)
        c.finish()
        rest = self.step("the rest of the response after the request body ends",
                         c.read_all, ANSWER_WAIT)
        self.assertEqual(rest, b"received 4000 bytes\n")
        self.assertStillServes()


class EarlyAnswerCases:
    def test_6_early_413_reaches_the_client_while_uploading(self):
        total = 100 * MIB
        c = self.client()
        c.open("POST", "/reject?after=%d&hold=10" % MIB,
               headers=[("content-type", "application/octet-stream")], length=total)
        up = Uploader(c, total)
        t0 = time.monotonic()
        up.start()
        try:
            status, hdrs = self.step(
                "the backend's 413 (sent after 1 MiB of the 100 MiB upload) reaches the client "
                "%s within %.0fs" % (self.through(), ANSWER_WAIT), c.head, ANSWER_WAIT)
            elapsed = time.monotonic() - t0
            self.assertEqual(status, 413, "expected the backend's own 413, got %d %r"
                             % (status, hdrs))
            body = self.step("the 413's body", c.read_all, ANSWER_WAIT)
            self.assertEqual(body, b"request body too large\n")
        finally:
            up.stop()
        self.assertLess(elapsed, ANSWER_WAIT)
        self.assertLess(up.sent, total, "the whole upload went through before the 413")
        rec = self.backend.find("/reject")
        self.assertGreaterEqual(rec.body_len, MIB)
        c.close()
        self.assertStillServes()


class DisconnectCases:
    def test_7_client_gone_while_backend_is_slow(self):
        c = self.client()
        c.open("GET", "/slow?delay=10", body_follows=False)
        rec = self.step("the request reaches the slow backend", self.backend.wait_record,
                        "/slow", ANSWER_WAIT)
        time.sleep(0.5)
        t0 = time.monotonic()
        c.disconnect()
        self.step("the backend sees its %s within %.1fs of the client closing its connection"
                  % ("connection closed" if self.UP == "http1" else "stream reset", GONE_WAIT),
                  self.backend.wait, lambda: rec.t_closed, GONE_WAIT, "the client's disconnect")
        self.assertLess(rec.t_closed - t0, GONE_WAIT, rec)
        self.assertStillServes()

    def test_7_client_gone_mid_upload(self):
        c = self.client()
        c.open("POST", "/slow?delay=10", length=10 * MIB,
               headers=[("content-type", "application/octet-stream")])
        self.step("the first MiB of the upload is taken", c.send, b"m" * MIB)
        rec = self.step("the upload reaches the backend", self.backend.wait,
                        lambda: (self.backend.find("/slow") or 0) and
                        self.backend.find("/slow").body_len > 0, ANSWER_WAIT,
                        "body bytes")
        rec = self.backend.find("/slow")
        time.sleep(0.3)
        t0 = time.monotonic()
        c.disconnect()
        self.step("the backend sees its %s within %.1fs of the client dropping the upload"
                  % ("connection closed" if self.UP == "http1" else "stream reset", GONE_WAIT),
                  self.backend.wait, lambda: rec.t_closed, GONE_WAIT, "the client's disconnect")
        self.assertLess(rec.t_closed - t0, GONE_WAIT, rec)
        self.assertLess(rec.body_len, 10 * MIB)
        self.assertIsNone(rec.t_end, "the backend saw a complete body: %r" % rec)
        self.assertStillServes()


class H2ClientResetCases:
    def test_7_h2_client_resets_its_stream(self):
        c = self.client()
        c.open("GET", "/slow?delay=10", body_follows=False)
        rec = self.step("the request reaches the slow backend", self.backend.wait_record,
                        "/slow", ANSWER_WAIT)
        time.sleep(0.5)
        t0 = time.monotonic()
        c.reset()
        self.step("the backend sees the request cancelled within %.1fs of the client's "
                  "RST_STREAM" % GONE_WAIT, self.backend.wait, lambda: rec.t_closed, GONE_WAIT,
                  "the client's RST_STREAM")
        self.assertLess(rec.t_closed - t0, GONE_WAIT, rec)
        # The same connection goes on serving.
        c.open("GET", "/ok", body_follows=False)
        status, _ = self.step("a request on the same connection", c.head, ANSWER_WAIT)
        self.assertEqual((status, c.read_all(ANSWER_WAIT)), (200, b"ok"))


class BackPressureCases:
    def warm_up(self, path):
        c = self.client()
        for _ in range(3):
            if path == "download":
                c.open("GET", "/download?bytes=%d" % (8 * MIB), body_follows=False)
            else:
                c.open("POST", "/ok", length=4 * MIB)
                c.send(b"w" * (4 * MIB))
                c.finish()
            self.step("warm-up", c.head, ANSWER_WAIT)
            self.step("warm-up body", c.read_all, h.scaled(20))
        c.close()

    def test_9_slow_reader_does_not_grow_memory(self):
        self.warm_up("download")
        sampler = self.rss_sampler()
        try:
            c = self.client()
            c.open("GET", "/download?bytes=%d" % BIG, body_follows=False)
            status, _ = self.step("the download's head", c.head, ANSWER_WAIT)
            self.assertEqual(status, 200)
            got = len(self.step("the first 4 MiB", c.read_at_least, 4 * MIB, ANSWER_WAIT))
            rec = self.backend.find("/download")
            time.sleep(1.5)  # the client reads nothing for 3 seconds
            held_at = rec.sent_bytes
            time.sleep(1.5)
            held = rec.sent_bytes
            # Then it reads slowly for a while, then quickly to the end.
            for _ in range(10):
                piece = self.step("body while reading slowly", c.read_some, ANSWER_WAIT)
                got += len(piece or b"")
                time.sleep(0.05)
            deadline = time.monotonic() + h.scaled(60)
            while True:
                piece = self.step("the rest of the download", c.read_some,
                                  max(0.1, deadline - time.monotonic()))
                if piece is None:
                    break
                got += len(piece)
        finally:
            if sampler:
                sampler.stop()
        self.assertEqual(got, BIG)
        self.assertLess(held, BIG // 2, "the backend was not held back while the client "
                        "did not read: it had sent %d MiB" % (held // MIB))
        self.assertLess(held - held_at, 2 * MIB, "the backend kept sending while the client "
                        "did not read (%d MiB in 1.5s)" % ((held - held_at) // MIB))
        self.assertRssBounded(sampler, "a client that stopped reading a %d MiB download"
                              % (BIG // MIB))
        self.assertStillServes()

    def test_9_stalled_backend_does_not_grow_memory(self):
        self.warm_up("upload")
        sampler = self.rss_sampler()
        c = self.client()
        c.open("POST", "/stall?after=%d&hold=8" % MIB, length=BIG,
               headers=[("content-type", "application/octet-stream")])
        up = Uploader(c, BIG)
        up.start()
        try:
            rec = self.step("the upload reaches the backend", self.backend.wait,
                            lambda: (self.backend.find("/stall") or 0) and
                            self.backend.find("/stall").sent_events, ANSWER_WAIT,
                            "the backend to stop reading after 1 MiB")
            rec = self.backend.find("/stall")
            time.sleep(2)
            sent_at = up.sent
            time.sleep(1.5)
            sent = up.sent
        finally:
            up.stop()
            if sampler:
                sampler.stop()
        self.assertLess(sent - sent_at, 2 * MIB, "the client could keep sending (%d MiB in "
                        "1.5s) to a backend that stopped reading" % ((sent - sent_at) // MIB))
        self.assertLess(sent, BIG // 2)
        self.assertLess(rec.body_len, 2 * MIB)
        self.assertRssBounded(sampler, "an upload to a backend that stopped reading (%d MiB "
                              "sent by the client)" % (sent // MIB))
        c.close()
        self.assertStillServes()


class ResponseTrailersCases:
    """Response trailers from the backend reach the client (an HTTP/1.1 client asks for them
    with TE: trailers and gets them as a chunked trailer section)."""

    def test_4_response_trailers(self):
        c = self.client()
        c.open("POST", "/trailers", headers=[("te", "trailers")])
        c.send(b"abc")
        c.finish()
        status, hdrs = self.step("the response head", c.head, ANSWER_WAIT)
        self.assertEqual(status, 200)
        body = self.step("the response body", c.read_all, ANSWER_WAIT)
        self.assertEqual(body, b"payload")
        self.assertIsNotNone(c.trailers, "no trailers reached the client (%r)" % (hdrs,))
        trailers = dict(c.trailers)
        self.assertEqual(trailers.get("x-checksum"),
                         "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
                         c.trailers)
        self.assertEqual(trailers.get("grpc-status"), "0", c.trailers)
        if c.proto == "http1":
            self.assertIn("chunked", dict(hdrs).get("transfer-encoding", ""), hdrs)
        self.assertStillServes()

    def test_4_headers_then_trailers_without_data(self):
        c = self.client()
        c.open("GET", "/trailers-only", headers=[("te", "trailers")], body_follows=False)
        status, hdrs = self.step("the response head", c.head, ANSWER_WAIT)
        self.assertEqual(status, 200)
        hd = dict(hdrs)
        self.assertEqual(hd.get("content-type"), "application/grpc", hdrs)
        self.assertNotIn("grpc-status", hd, "the trailers were folded into the head: %r"
                         % (hdrs,))
        body = self.step("the end of the response", c.read_all, ANSWER_WAIT)
        self.assertEqual(body, b"")
        self.assertIsNotNone(c.trailers, "no trailers reached the client (head %r)" % (hdrs,))
        self.assertEqual(dict(c.trailers).get("grpc-status"), "0", c.trailers)
        self.assertEqual(dict(c.trailers).get("grpc-message"), "all-good", c.trailers)
        if c.proto == "http1":
            self.assertNotIn("content-length", hd, "a response with trailers must be chunked, "
                             "not %r" % (hdrs,))
            self.assertIn("chunked", hd.get("transfer-encoding", ""), hdrs)
        else:
            data = [f for f in c.frames if f[0] == "DATA" and f[2] > 0]
            self.assertEqual(data, [], c.frames)
            headers = [f for f in c.frames if f[0] == "HEADERS"]
            self.assertEqual(len(headers), 2, c.frames)
            self.assertIn("END_STREAM", headers[1][1], c.frames)
        self.assertStillServes()


class H2EndToEndCases:
    """HTTP/2 client and HTTP/2 backend: framing details pass through."""

    def test_4_request_trailers_reach_the_backend(self):
        c = self.client()
        c.open("POST", "/trailers", headers=[("te", "trailers")])
        c.send(b"abc")
        c.finish([("x-request-checksum", "sha-of-abc"), ("x-more", "1")])
        status, _ = self.step("the response head", c.head, ANSWER_WAIT)
        self.assertEqual(status, 200)
        self.assertEqual(self.step("the response body", c.read_all, ANSWER_WAIT), b"payload")
        rec = self.backend.find("/trailers")
        self.assertEqual(rec.body_len, 3)
        self.assertEqual(rec.trailers, [("x-request-checksum", "sha-of-abc"), ("x-more", "1")],
                         "request trailers as the backend saw them; frames: %s"
                         % rec.frame_summary())
        self.assertStillServes()

    def test_5_empty_data_with_end_stream_is_forwarded_as_such(self):
        c = self.client()
        c.open("POST", "/head/empty-data")  # HEADERS without END_STREAM
        c.finish()  # an empty DATA frame with END_STREAM
        status, _ = self.step("the answer", c.head, ANSWER_WAIT)
        self.assertEqual((status, c.read_all(ANSWER_WAIT)), (200, b"got 0 bytes"))
        rec = self.backend.find("/head/empty-data")
        frames = [f for f in rec.frames if f[0] in ("HEADERS", "DATA", "CONTINUATION")]
        self.assertEqual(frames[0][0], "HEADERS", rec.frame_summary())
        self.assertNotIn("END_STREAM", frames[0][1],
                         "the empty DATA+END_STREAM was folded into HEADERS: %s"
                         % rec.frame_summary())
        self.assertEqual(frames[-1], ("DATA", ("END_STREAM",), 0), rec.frame_summary())
        self.assertEqual([f for f in frames if f[0] == "DATA" and f[2] > 0], [],
                         rec.frame_summary())
        self.assertStillServes()


# ---------------------------------------------------------------------------------------------
# Controls: the same cases with Turnpike taken out. They must pass.


class ControlH1Test(CoreCases, EarlyAnswerCases, DisconnectCases, BackPressureCases,
                   ResponseTrailersCases, DuplexCase):
    DOWN, UP, DIRECT = "h1", "http1", True


class ControlH2Test(CoreCases, EarlyAnswerCases, DisconnectCases, BackPressureCases,
                   H2ClientResetCases, ResponseTrailersCases, H2EndToEndCases, DuplexCase):
    DOWN, UP, DIRECT = "h2c", "h2c", True


class ControlH2TlsTest(CoreCases, EarlyAnswerCases, DisconnectCases, H2ClientResetCases,
                       ResponseTrailersCases, H2EndToEndCases, DuplexCase):
    DOWN, UP, DIRECT = "h2-tls", "h2", True


# ---------------------------------------------------------------------------------------------
# Every protocol pair through Turnpike


class H1ToH1Test(CoreCases, EarlyAnswerCases, DisconnectCases, BackPressureCases, DuplexCase):
    DOWN, UP = "h1", "http1"


class H1ToH2cTest(CoreCases, EarlyAnswerCases, DisconnectCases, BackPressureCases,
                  ResponseTrailersCases, DuplexCase):
    DOWN, UP = "h1", "h2c"


class H2cToH1Test(CoreCases, EarlyAnswerCases, DisconnectCases, BackPressureCases,
                  H2ClientResetCases, DuplexCase):
    DOWN, UP = "h2c", "http1"


class H2cToH2cTest(CoreCases, EarlyAnswerCases, DisconnectCases, BackPressureCases,
                   H2ClientResetCases, ResponseTrailersCases, H2EndToEndCases, DuplexCase):
    DOWN, UP = "h2c", "h2c"


class H1TlsToH1Test(CoreCases, DisconnectCases, DuplexCase):
    """HTTP/1.1 over TLS on the listener. (The early-answer and back-pressure cases need a
    sender and a reader on one TLS socket at once, which Python's ssl module does not allow
    safely; the cleartext pairs cover them.)"""

    DOWN, UP = "h1-tls", "http1"


class H2TlsToH2cTest(CoreCases, EarlyAnswerCases, DisconnectCases, H2ClientResetCases,
                     ResponseTrailersCases, H2EndToEndCases, DuplexCase):
    DOWN, UP = "h2-tls", "h2c"


class H2cToH2TlsTest(CoreCases, EarlyAnswerCases, DisconnectCases, H2ClientResetCases,
                     ResponseTrailersCases, H2EndToEndCases, DuplexCase):
    """HTTP/2 over TLS to the backend (cluster protocol h2, ALPN, verified certificate)."""

    DOWN, UP = "h2c", "h2"


# ---------------------------------------------------------------------------------------------
# Server-sent events: long-running, so in a class of its own (all pairs run at once)


class ServerSentEventsTest(h.TurnpikeCase):
    """A backend streams text/event-stream, one event a second (DUPLEX_SSE_EVENTS, default 60),
    through a route with `timeout: 5s`. Every event reaches the client within 0.5s of the
    backend sending it (both sides timestamp with the same monotonic clock), and the route
    timeout does not cut the stream while events flow: the route timeout is taken to be a
    deadline for the response head (and at most an inactivity bound), not a limit on a
    response's total duration. All protocol pairs, and the backends reached directly (the
    control), run concurrently so the case costs one stream's duration."""

    def setUp(self):
        super().setUp()
        self.h1 = db.H1Backend()
        self.h2 = db.H2Backend()
        stack_describe = self.stack.describe
        self.stack.describe = lambda: "\n".join([stack_describe(), self.h1.describe(),
                                                 self.h2.describe()])
        self.pki = tls_certs.Pki(os.path.join(self.stack.dir, "pki"))
        plain = h.listener("main", h.free_port())
        plain["protocols"] = ["http1", "h2c"]
        tls = h.listener("tls", h.free_port())
        tls["tls"] = {"certificates": [{"cert": self.pki.api.cert, "key": self.pki.api.key}]}
        clusters = [h.cluster("h1", self.h1.addr, protocol="http1"),
                    h.cluster("h2", self.h2.addr, protocol="h2c")]
        routes = [{"name": "via-h1", "match": {"path_prefix": "/via-h1"}, "backend": "h1",
                   "timeout": "5s"},
                  {"name": "via-h2", "match": {"path_prefix": "/via-h2"}, "backend": "h2",
                   "timeout": "5s"}]
        cfg = h.config(h.free_port(), [plain, tls], clusters, routes, access_log="stdout")
        self.tp = self.stack.turnpike(cfg)

    def tearDown(self):
        self.h1.stop()
        self.h2.stop()
        super().tearDown()

    def make_client(self, down, port):
        if down == "h1":
            return db.H1Client(port)
        if down == "h2c":
            return db.H2Client(port)
        return db.H2Client(port, tls=db.tls_client_context(self.pki.ca.cert, "h2"),
                           server_name=API)

    def watch(self, name, down, port, path, out):
        """One client reading the event stream; out[name] gets what it saw."""
        res = out[name] = {"status": None, "headers": None, "events": {}, "error": None,
                           "ended": False}
        c = self.make_client(down, port)
        try:
            c.open("GET", "%s/sse?events=%d&interval=%s&pair=%s"
                   % (path, SSE_EVENTS, SSE_INTERVAL, name),
                   headers=[("accept", "text/event-stream")], body_follows=False)
            res["status"], res["headers"] = c.head(ANSWER_WAIT)
            buf = b""
            while True:
                piece = c.read_some(SSE_INTERVAL + h.scaled(5))
                now = time.monotonic()
                if piece is None:
                    res["ended"] = True
                    break
                buf += piece
                while b"\n\n" in buf:
                    event, buf = buf.split(b"\n\n", 1)
                    for line in event.split(b"\n"):
                        if line.startswith(b"id: "):
                            res["events"][int(line[4:])] = now
        except (AssertionError, db.Gone, OSError) as e:
            res["error"] = "%s: %s" % (type(e).__name__, e)
        finally:
            c.close()

    def test_8_events_arrive_as_sent_and_the_route_timeout_does_not_cut_them(self):
        main, tls = self.tp.ports["main"], self.tp.ports["tls"]
        pairs = [  # name, client, port, path prefix, backend
            ("direct-h1", "h1", self.h1.port, "", self.h1),
            ("direct-h2", "h2c", self.h2.port, "", self.h2),
            ("h1-to-h1", "h1", main, "/via-h1", self.h1),
            ("h1-to-h2c", "h1", main, "/via-h2", self.h2),
            ("h2c-to-h1", "h2c", main, "/via-h1", self.h1),
            ("h2c-to-h2c", "h2c", main, "/via-h2", self.h2),
            ("h2tls-to-h2c", "h2-tls", tls, "/via-h2", self.h2),
        ]
        out = {}
        threads = [threading.Thread(target=self.watch, args=(name, down, port, path, out),
                                    daemon=True) for name, down, port, path, _ in pairs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(SSE_EVENTS * SSE_INTERVAL + h.scaled(30))
        for name, _, _, _, backend in pairs:
            with self.subTest(pair=name):
                res = out[name]
                rec = next((r for r in backend.records if r.query.get("pair") == name), None)
                self.assertIsNotNone(rec, "the request never reached the backend: %r" % res)
                self.assertEqual(res["status"], 200, res)
                self.assertEqual(dict(res["headers"]).get("content-type"), "text/event-stream")
                sent = {i: t for t, i in rec.sent_events}
                got = res["events"]
                late = {i: round(got[i] - t, 3) for i, t in sent.items()
                        if i in got and got[i] - t > SSE_LAG}
                missing = sorted(set(range(SSE_EVENTS)) - set(got))
                self.assertEqual(late, {}, "events that took longer than %.1fs to arrive "
                                 "(event: seconds): %s; error: %s" % (SSE_LAG, late,
                                                                      res["error"]))
                self.assertEqual(missing, [], "events that never arrived (%d of %d did); "
                                 "error: %s" % (len(got), SSE_EVENTS, res["error"]))
                self.assertIsNone(res["error"])
                self.assertTrue(res["ended"], "the stream did not end cleanly")
        # And the proxy still serves.
        self.assertEqual(self.tp.get("/via-h1/ok").status, 200)
        self.assertEqual(self.tp.get("/via-h2/ok").status, 200)


if __name__ == "__main__":
    unittest.main()
