"""HTTP/2 downstream: h2c with prior knowledge sharing the HTTP/1.1 port (preface detection), an
h2c-only listener, h2 over TLS by ALPN; requests proxied to an HTTP/1.1 upstream with the right
header mapping; multiplexing and flow control (a stalled stream does not stall the others, a
slow reader does not make Turnpike buffer); RFC 9113 strictness (malformed requests are stream
errors, bad frames connection errors); the abuse limits (rapid reset, CONTINUATION, SETTINGS /
PING / empty DATA floods) answered with GOAWAY ENHANCE_YOUR_CALM while other connections carry
on; graceful drain with GOAWAY; config errors.

Clients: curl (--http2-prior-knowledge, --http2 over TLS), nghttp, h2load, and a raw frame
client (h2client.py: hyperframe + hpack) for what libraries refuse to send.
"""

import hashlib
import json
import os
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import tls_certs  # noqa: E402
from h2client import (RawH2, ContinuationFrame, DataFrame, GoAwayFrame,  # noqa: E402
                      HeadersFrame, PingFrame, RstStreamFrame, SettingsFrame)
import h2client  # noqa: E402

API = "api.example.test"


def curl(args, timeout=30):
    p = subprocess.run(["curl", "-sS", "--max-time", str(timeout)] + args,
                       capture_output=True, timeout=timeout + 5)
    return p


class H2Case(h.TurnpikeCase):
    def setUp(self):
        super().setUp()
        self.echo = self.stack.echo(threads=2)
        self.admin_port = h.free_port()

    def start(self, protocols=("http1", "h2c"), http2=None, limits=None, tls=None,
              extra_listeners=(), routes=None, **kw):
        lst = h.listener("main", h.free_port(), **(limits or {}))
        if protocols is not None:
            lst["protocols"] = list(protocols)
        if http2:
            lst["http2"] = http2
        if tls:
            lst["tls"] = tls
        routes = routes or [
            {"name": "hello", "match": {"path": "/hello"},
             "respond": {"status": 200, "body": "hello\n"}},
            {"name": "all", "match": {"path_prefix": "/"}, "backend": "echo"},
        ]
        cfg = h.config(self.admin_port, [lst] + list(extra_listeners),
                       [h.cluster("echo", self.echo)], routes, **kw)
        self.tp = self.stack.turnpike(cfg)
        return self.tp

    def url(self, path, listener="main"):
        return "http://127.0.0.1:%d%s" % (self.tp.ports[listener], path)

    def raw(self, listener="main", **kw):
        return RawH2(self.tp.ports[listener], timeout=h.scaled(5), **kw)

    def assert_serving(self, listener="main"):
        """A fresh h2c connection still gets answers."""
        with self.raw(listener) as c:
            c.get(1, "/hello")
            hd, body, _, rst = c.response(1, timeout=h.scaled(5))
            self.assertIsNone(rst)
            self.assertEqual((hd[":status"], body), ("200", b"hello\n"))


class H2cServingTest(H2Case):
    def test_curl_prior_knowledge_and_http11_share_the_port(self):
        self.start()
        p = curl(["--http2-prior-knowledge", "-w", "\n@@%{http_code} %{http_version}",
                  "-H", "Cookie: a=1", "-H", "Cookie: b=2", self.url("/svc/x?q=1")])
        self.assertEqual(p.returncode, 0, p.stderr)
        body, _, meta = p.stdout.rpartition(b"\n@@")
        self.assertEqual(meta, b"200 2")
        echo = json.loads(body)
        self.assertEqual((echo["method"], echo["path"], echo["query"]), ("GET", "/svc/x", "q=1"))
        hdrs = echo["headers"]
        # :authority became Host for the HTTP/1.1 upstream; cookies were joined (RFC 9113 8.2.3).
        self.assertEqual(hdrs.get("host"), "127.0.0.1:%d" % self.tp.ports["main"])
        self.assertEqual(hdrs.get("cookie"), "a=1; b=2")
        self.assertEqual(hdrs.get("x-forwarded-proto"), "http")
        for k in hdrs:
            self.assertFalse(k.startswith(":"), hdrs)
        # HTTP/1.1 on the same port.
        p = curl(["--http1.1", "-w", "\n@@%{http_code} %{http_version}", self.url("/hello")])
        self.assertEqual(p.stdout, b"hello\n\n@@200 1.1")

    def test_request_id_is_never_indexed(self):
        """X-Request-Id is unique to each response: HPACK sends it as a literal never indexed
        (RFC 7541 §6.2.3) rather than filling the dynamic table with values that never repeat;
        the other fields are indexed as usual."""
        self.start()
        c = self.raw()
        ids = set()
        for sid in (1, 3, 5):
            c.get(sid, "/svc/x")
            hd, _, _, _ = c.response(sid, timeout=h.scaled(5))
            self.assertEqual(hd[":status"], "200")
            ids.add(hd["x-request-id"])
            self.assertIn("x-request-id", c.never_indexed[sid])
            self.assertNotIn("content-type", c.never_indexed[sid])
        self.assertEqual(len(ids), 3)
        c.close()

    def test_bodies_both_ways_and_multiplexing(self):
        self.start()
        data = os.urandom(3 * 1024 * 1024 + 17)
        path = self.stack.write("up.bin", "")
        with open(path, "wb") as f:
            f.write(data)
        p = curl(["--http2-prior-knowledge", "--data-binary", "@" + path, self.url("/upload")])
        self.assertEqual(p.returncode, 0, p.stderr)
        echo = json.loads(p.stdout)
        self.assertEqual(echo["body_bytes"], len(data))
        self.assertEqual(echo["body_sha256"], hashlib.sha256(data).hexdigest())
        # Several streams at once on one connection, with a large download among them.
        p = subprocess.run(["nghttp", "-n", "-s", self.url("/bytes/5000000"), self.url("/hello"),
                            self.url("/bytes/10"), self.url("/delay/200")],
                           capture_output=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        text = p.stdout.decode()
        for path_, size in (("/bytes/5000000", "4M"), ("/hello", "6"), ("/bytes/10", "10")):
            self.assertRegex(text, r"200\s+%s\s+%s" % (size.replace(".", r"\."), path_), text)
        # Exact bytes of a large download.
        p = curl(["--http2-prior-knowledge", self.url("/bytes/2000000")])
        self.assertEqual(len(p.stdout), 2000000)
        self.assertTrue(p.stdout.startswith(b"abcdefghijklmnopqrstuvwxyz"))

    def test_h2load_many_streams(self):
        self.start()
        p = subprocess.run(["h2load", "-n", "4000", "-c", "4", "-m", "32", self.url("/echo")],
                           capture_output=True, timeout=60)
        text = p.stdout.decode()
        self.assertIn("4000 succeeded, 0 failed, 0 errored", text, text)
        self.assertIn("status codes: 4000 2xx", text, text)

    def test_h2c_only_listener_refuses_http11_with_goaway(self):
        self.start(protocols=["h2c"])
        with self.raw(preface=False) as c:
            c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            g = c.goaway()
            self.assertEqual(g.error_code, h2client.PROTOCOL_ERROR)
            self.assertTrue(c.closed_after_goaway())
        p = curl(["--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_code}",
                  self.url("/hello")])
        self.assertEqual(p.stdout, b"200")

    def test_http1_only_listener_ignores_preface(self):
        self.start(protocols=None)  # the default: http1 only
        p = curl(["--http2-prior-knowledge", self.url("/hello")])
        self.assertNotEqual(p.returncode, 0)  # HTTP/1.1 400 to an h2 client is a failure
        p = curl(["--http1.1", self.url("/hello")])
        self.assertEqual(p.stdout, b"hello\n")

    def test_local_answers_and_errors_map_to_h2(self):
        self.start(limits={"max_body_bytes": "1000"})
        with self.raw() as c:
            c.get(1, "/nowhere/../hello")
            hd, body, _, rst = c.response(1)
            self.assertEqual(hd[":status"], "200")
            # A body over max_body_bytes: 413, then RST_STREAM NO_ERROR to stop the upload.
            c.send_headers(3, c.request_headers("/up", "POST"), end_stream=False)
            c.send_data(3, b"x" * 1500, end_stream=False)
            hd, body, _, rst = c.response(3)
            self.assertEqual(hd[":status"], "413", body)
            self.assertEqual(json.loads(body)["error"], "request body too large")
            # HEAD: headers only.
            c.get(5, "/bytes/100", method="HEAD")
            hd, body, _, rst = c.response(5)
            self.assertEqual((hd[":status"], hd.get("content-length"), body), ("200", "100", b""))
            # Upstream down -> 502 with a JSON body.
        self.echo.proc.stop()
        with self.raw() as c:
            c.get(1, "/x")
            hd, body, _, _ = c.response(1)
            self.assertEqual(hd[":status"], "502")
            self.assertEqual(hd["content-type"], "application/json")


class H2TlsTest(H2Case):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.pki = tls_certs.Pki(os.path.join(cls.cstack.dir, "pki"))

    def test_curl_and_nghttp_over_tls_alpn_h2(self):
        tls = {"certificates": [{"cert": self.pki.api.cert, "key": self.pki.api.key}]}
        self.start(protocols=None, tls=tls, http2={"max_concurrent_streams": 50})
        port = self.tp.ports["main"]
        base = "https://%s:%d" % (API, port)
        resolve = "%s:%d:127.0.0.1" % (API, port)
        p = curl(["--http2", "--cacert", self.pki.ca.cert, "--resolve", resolve,
                  "-w", "\n@@%{http_code} %{http_version}", base + "/svc"])
        self.assertEqual(p.returncode, 0, p.stderr)
        body, _, meta = p.stdout.rpartition(b"\n@@")
        self.assertEqual(meta, b"200 2")
        echo = json.loads(body)
        self.assertEqual(echo["headers"].get("x-forwarded-proto"), "https")
        self.assertEqual(echo["headers"].get("host"), "%s:%d" % (API, port))
        # nghttp negotiates h2 by ALPN and multiplexes.
        p = subprocess.run(["nghttp", "-n", "-s", "https://127.0.0.1:%d/bytes/300000" % port,
                            "https://127.0.0.1:%d/hello" % port], capture_output=True, timeout=30)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(p.stdout.decode(), r"200\s+6\s+/hello")
        # h2load over TLS.
        p = subprocess.run(["h2load", "-n", "1000", "-c", "2", "-m", "16",
                            "https://127.0.0.1:%d/hello" % port], capture_output=True, timeout=60)
        self.assertIn("1000 succeeded, 0 failed", p.stdout.decode(), p.stdout.decode())
        self.assertIn("h2", p.stdout.decode())


class H2StrictnessTest(H2Case):
    """Malformed requests are stream errors (RST_STREAM PROTOCOL_ERROR), never a 400; the
    connection survives them."""

    def test_malformed_requests_are_stream_errors(self):
        self.start()
        base = [(":method", "GET"), (":scheme", "http"), (":authority", "x"), (":path", "/")]
        cases = {
            "missing :path": base[:3],
            "missing :method": base[1:],
            "duplicate :path": base + [(":path", "/again")],
            "unknown pseudo-header": base + [(":weird", "1")],
            "pseudo-header after regular": base[:3] + [("accept", "*/*"), (":path", "/")],
            "connection-specific header": base + [("connection", "keep-alive")],
            "transfer-encoding": base + [("transfer-encoding", "chunked")],
            "te other than trailers": base + [("te", "gzip")],
            "uppercase header name": base + [("X-Upper", "1")],
            "invalid character in name": base + [("x a", "1")],
            "newline in value": base + [("x-a", "1\r\nx-b: 2")],
        }
        with self.raw() as c:
            sid = 1
            for what, hdrs in cases.items():
                c.send_headers(sid, hdrs)
                _, _, _, rst = c.response(sid)
                self.assertEqual(rst, h2client.PROTOCOL_ERROR, what)
                sid += 2
            # content-length that disagrees with the DATA received.
            c.send_headers(sid, base[:3] + [(":path", "/cl"), ("content-length", "10")],
                           end_stream=False)
            c.send_data(sid, b"12345", end_stream=True)
            _, _, _, rst = c.response(sid)
            self.assertEqual(rst, h2client.PROTOCOL_ERROR, "content-length mismatch")
            # The connection is still good.
            sid += 2
            c.get(sid, "/hello")
            hd, body, _, rst = c.response(sid)
            self.assertEqual((hd[":status"], body), ("200", b"hello\n"))

    def test_connection_errors_get_goaway(self):
        only = h.listener("h2only", h.free_port())
        only["protocols"] = ["h2c"]
        self.start(extra_listeners=[only])
        # Bad preface (on a port that speaks only h2c; on a shared port it would be HTTP/1.1).
        with self.raw("h2only", preface=False) as c:
            c.send(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n" + b"\0" * 16)
            self.assertEqual(c.goaway().error_code, h2client.PROTOCOL_ERROR)
        # HEADERS on an even (server-initiated) stream id.
        with self.raw() as c:
            c.get(2, "/hello")
            self.assertEqual(c.goaway().error_code, h2client.PROTOCOL_ERROR)
        # DATA on an idle stream (never opened).
        with self.raw() as c:
            c.send_data(5, b"early", end_stream=True)
            self.assertEqual(c.goaway().error_code, h2client.PROTOCOL_ERROR)
        # DATA after the client closed its side (END_STREAM) of a stream still being served:
        # STREAM_CLOSED (RFC 9113 section 6.1). (Frames on streams long closed are ignored, as
        # nghttp2 keeps no closed streams; the RFC allows that.)
        with self.raw() as c:
            c.get(1, "/delay/1000")
            c.send_data(1, b"late", end_stream=True)
            f, _ = c.frames_until(lambda f: isinstance(f, (GoAwayFrame, RstStreamFrame)))
            self.assertEqual(f.error_code, h2client.STREAM_CLOSED, f)
        # A frame larger than SETTINGS_MAX_FRAME_SIZE (16 KiB).
        with self.raw() as c:
            c.send_headers(1, c.request_headers("/big", "POST"), end_stream=False)
            c.send_data(1, b"x" * 20000)
            self.assertEqual(c.goaway().error_code, h2client.FRAME_SIZE_ERROR)
        # An HPACK dynamic table size update beyond SETTINGS_HEADER_TABLE_SIZE (4096).
        with self.raw() as c:
            c.enc.header_table_size = 65536
            c.get(1, "/hello")
            self.assertEqual(c.goaway().error_code, h2client.COMPRESSION_ERROR)
        # An HPACK block that does not decode.
        with self.raw() as c:
            c.send(HeadersFrame(1, b"\xff\xff\xff\xff\xff\xff", flags=["END_HEADERS"]))
            self.assertEqual(c.goaway().error_code, h2client.COMPRESSION_ERROR)
        self.assert_serving()


class H2AbuseTest(H2Case):
    """Each abuse limit ends the offending connection with GOAWAY ENHANCE_YOUR_CALM; a
    connection opened before the attack keeps working, and so do new ones."""

    def check_attack(self, attack, code=h2client.ENHANCE_YOUR_CALM):
        bystander = self.raw()
        bystander.get(1, "/hello")
        self.assertEqual(bystander.response(1)[0][":status"], "200")
        with self.raw() as c:
            try:
                attack(c)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server may close while we are still sending
            g = c.goaway(timeout=h.scaled(10))
            self.assertEqual(g.error_code, code)
            self.assertTrue(c.closed_after_goaway(timeout=h.scaled(5)))
        bystander.get(3, "/hello")
        self.assertEqual(bystander.response(3)[0][":status"], "200")
        bystander.close()
        self.assert_serving()
        self.assertIsNone(self.tp.proc.poll())

    def test_rapid_reset(self):
        self.start(http2={"max_resets_burst": 200, "max_resets_per_second": 10})

        def attack(c):
            frames = []
            for i in range(400):
                sid = 1 + 2 * i
                frames.append(HeadersFrame(sid, c.block(c.request_headers("/delay/2000")),
                                           flags=["END_HEADERS", "END_STREAM"]))
                frames.append(RstStreamFrame(sid, error_code=h2client.CANCEL))
            c.send(*frames)
        self.check_attack(attack)

    def test_continuation_flood(self):
        self.start()

        def attack(c):
            block = c.block(c.request_headers("/hello"))
            frames = [HeadersFrame(1, block[:1])]
            frames += [ContinuationFrame(1, b"") for _ in range(3)]
            frames += [ContinuationFrame(1, c.block([("x-pad", "a" * 10)])) for _ in range(50)]
            c.send(*frames)
        self.check_attack(attack)

    def test_settings_flood(self):
        self.start(http2={"max_control_frames_burst": 100, "max_control_frames_per_second": 10})
        self.check_attack(lambda c: c.send(*[SettingsFrame(0, settings={0x4: 65535})
                                             for _ in range(500)]))

    def test_ping_flood(self):
        self.start(http2={"max_control_frames_burst": 100, "max_control_frames_per_second": 10})
        self.check_attack(lambda c: c.send(*[PingFrame(0, opaque_data=b"12345678")
                                             for _ in range(500)]))

    def test_empty_data_flood(self):
        self.start()

        def attack(c):
            c.send_headers(1, c.request_headers("/up", "POST"), end_stream=False)
            c.send(*[DataFrame(1, b"") for _ in range(100)])
        self.check_attack(attack)

    def test_header_list_too_large_is_431_and_handlers_are_capped(self):
        self.start(limits={"max_header_bytes": "4KiB"},
                   http2={"max_concurrent_streams": 4})
        with self.raw() as c:
            c.get(1, "/hello", extra=[("x-big", "a" * 5000)])
            hd, _, _, rst = c.response(1)
            self.assertEqual(hd[":status"], "431")
            # The same from a gRPC client: a trailers-only gRPC status, not a JSON 431.
            c.send_headers(3, c.request_headers("/svc.S/M", "POST", extra=[
                ("content-type", "application/grpc"), ("te", "trailers"),
                ("x-big", "a" * 5000)]))
            hd, body, _, rst = c.response(3)
            self.assertEqual((hd[":status"], hd["content-type"], hd["grpc-status"], body),
                             ("200", "application/grpc", "8", b""), hd)
            # Four slow requests, reset by the client at once: their streams are closed, but
            # until their handlers have wound down (the resets cancel them upstream) they count
            # against max_concurrent_streams. The resets and two new requests go out in one
            # write, so they are processed together.
            for i in range(4):
                c.get(5 + 2 * i, "/delay/1000")
            time.sleep(0.2)
            c.send(*[RstStreamFrame(5 + 2 * i, error_code=h2client.CANCEL) for i in range(4)],
                   HeadersFrame(13, c.block(c.request_headers("/hello")),
                                flags=["END_HEADERS", "END_STREAM"]),
                   HeadersFrame(15, c.block(c.request_headers("/hello")),
                                flags=["END_HEADERS", "END_STREAM"]))
            self.assertEqual(c.response(13)[3], h2client.REFUSED_STREAM)
            self.assertEqual(c.response(15)[3], h2client.REFUSED_STREAM)
            # Once they are done (at once: cancelled, not after the upstream's 1 s), new streams
            # are served again.
            time.sleep(0.2)
            c.get(17, "/hello")
            self.assertEqual(c.response(17)[0][":status"], "200")


class H2FlowControlTest(H2Case):
    def test_stalled_stream_does_not_stall_others_and_memory_stays_bounded(self):
        self.start(workers=1)
        pid = self.tp.pid
        with self.raw(settings={0x4: 65535}) as c:
            # Stream 1: 1 GiB, and we never open its window beyond the first 64 KiB.
            c.stalled.add(1)
            c.get(1, "/bytes/1073741824")
            time.sleep(0.3)
            base = h.rss_kib(pid)
            # Other streams on the same connection complete meanwhile (connection window
            # updates for them are sent by c.response()).
            for sid in (3, 5, 7):
                c.get(sid, "/bytes/200000")
                hd, body, _, rst = c.response(sid, timeout=h.scaled(10))
                self.assertEqual((hd[":status"], len(body)), ("200", 200000))
            time.sleep(2)
            grown = (h.rss_kib(pid) - base) / 1024.0
            if not h.SANITIZE:
                self.assertLess(grown, 16, "RSS grew %.1f MiB with a stalled 1 GiB stream" % grown)

    def test_slow_reader_downloading_1gib_keeps_rss_bounded(self):
        self.start(workers=1)
        pid = self.tp.pid
        base = h.rss_kib(pid)
        # curl reads at 20 MB/s while the upstream could send far faster.
        proc = subprocess.Popen(["curl", "-sS", "--http2-prior-knowledge", "--limit-rate", "20M",
                                 "-o", "/dev/null", "--max-time", "4",
                                 self.url("/bytes/1073741824")])
        peak = base
        try:
            end = time.monotonic() + 3.5
            while time.monotonic() < end:
                peak = max(peak, h.rss_kib(pid))
                time.sleep(0.05)
            self.assert_serving()
        finally:
            proc.kill()
            proc.wait()
        if not h.SANITIZE:
            self.assertLess((peak - base) / 1024.0, 16,
                            "RSS %d -> %d KiB while a slow client downloads" % (base, peak))


class H2IdleMemoryTest(H2Case):
    def test_idle_connections_hold_no_buffers(self):
        """An idle h2c connection keeps its HTTP/2 session, not its read buffer or the write
        buffer a large response grew: 300 of them cost under 32 KiB each (about 23 KiB today, most
        of it nghttp2's own 16 KiB frame buffer; 42 KiB before the buffers were released)."""
        self.start(workers=1)
        pid = self.tp.pid

        def open_idle(n):
            conns = []
            for _ in range(n):
                c = self.raw()
                c.get(1, "/bytes/200000")
                hd, body, _, _ = c.response(1, timeout=h.scaled(10))
                self.assertEqual((hd[":status"], len(body)), ("200", 200000))
                conns.append(c)
            return conns

        for c in open_idle(100):  # warm-up: the allocator's arenas and the upstream pool
            c.close()
        time.sleep(0.3)
        base = h.rss_kib(pid)
        conns = open_idle(300)
        time.sleep(0.3)
        per_conn = (h.rss_kib(pid) - base) / 300.0
        for c in conns:
            c.close()
        if not h.SANITIZE:
            self.assertLess(per_conn, 32, "%.1f KiB per idle HTTP/2 connection" % per_conn)


class H2DrainTest(H2Case):
    def test_sigterm_sends_goaway_and_open_streams_finish(self):
        self.start(drain_timeout="10s")
        with self.raw() as c:
            c.get(1, "/delay/1500")
            time.sleep(0.3)
            self.tp.proc.send_signal(15)
            g = c.goaway(timeout=h.scaled(5))
            self.assertEqual(g.error_code, h2client.NO_ERROR)
            self.assertGreaterEqual(g.last_stream_id, 1)
            hd, body, _, rst = c.response(1, timeout=h.scaled(10))
            self.assertIsNone(rst)
            self.assertEqual(hd[":status"], "200")
        self.assertEqual(self.tp.proc.wait(h.scaled(10)), 0)

    def test_idle_connection_gets_goaway(self):
        self.start(limits={"idle_timeout": "500ms"})
        with self.raw() as c:
            # A request that outlasts everything the client sends (its SETTINGS ACK), and no
            # WINDOW_UPDATE after the response: the end of the last request must start the
            # idle clock, nothing the client sends will.
            c.get(1, "/delay/300")
            c.response(1, window_updates=False)
            t0 = time.monotonic()
            g = c.goaway(timeout=h.scaled(5))
            self.assertEqual((g.error_code, g.last_stream_id), (h2client.NO_ERROR, 1))
            self.assertGreater(time.monotonic() - t0, 0.3)
            self.assertTrue(c.closed_after_goaway())


class H2ConfigTest(H2Case):
    def check_errors(self, listener_extra, expected):
        cfg = h.config(self.admin_port, [dict(h.listener("main", h.free_port()),
                                              **listener_extra)],
                       [h.cluster("echo", self.echo)],
                       [{"name": "all", "match": {"path_prefix": "/"}, "backend": "echo"}])
        path = self.stack.write("bad.yaml", h.to_yaml(cfg) + "\n")
        p = subprocess.run([h.TURNPIKE_BIN, "check", "-c", path], capture_output=True,
                           timeout=30)
        self.assertNotEqual(p.returncode, 0)
        err = p.stderr.decode() + p.stdout.decode()
        for e in expected:
            self.assertRegex(err, e)

    def test_protocol_errors_name_file_line_and_key(self):
        self.check_errors({"protocols": ["h2"]},
                          [r"bad\.yaml:\d+:\d+: listeners\[0\]\.protocols: h2 needs tls"])
        self.check_errors({"protocols": ["http1", "h2cc"]},
                          [r"bad\.yaml:\d+:\d+: listeners\[0\]\.protocols\[1\]: unknown protocol "
                           r"'h2cc'.*did you mean 'h2c'"])
        self.check_errors({"http2": {"max_concurrent_streams": 0, "max_frame_size": "1KiB"}},
                          [r"listeners\[0\]\.http2\.max_concurrent_streams",
                           r"listeners\[0\]\.http2\.max_frame_size"])


if __name__ == "__main__":
    unittest.main()
