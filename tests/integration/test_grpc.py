"""gRPC through Turnpike, with python3-grpcio on both ends: a real gRPC server (generic handlers
over raw bytes, so no generated code is needed) behind an HTTP/2 cluster (h2c, and h2 over TLS
with ALPN), a real gRPC client in front (h2c, and TLS to the listener). All four call types with
trailers intact (grpc-status, grpc-message, custom trailing metadata), and the gateway's own
errors answered as trailers-only gRPC statuses: DEADLINE_EXCEEDED for a route timeout,
UNAVAILABLE with the server down, UNIMPLEMENTED without a route. Also an HTTP/1.1 client reaching
the HTTP/2 backend (protocol translation)."""

import os
import re
import subprocess
import sys
import threading
import time
import unittest
from concurrent import futures

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import tls_certs  # noqa: E402

API = "api.example.test"
BACKEND = "backend.example.test"


def _ident(b):
    return b


class EchoService(grpc.GenericRpcHandler):
    """/test.Echo/{Unary,ServerStream,ClientStream,Bidi,Fail,Slow,Wait} over raw bytes."""

    def __init__(self):
        self.cancelled = threading.Event()

    def service(self, details):
        m = details.method
        if m == "/test.Echo/Unary":
            return grpc.unary_unary_rpc_method_handler(self.unary, _ident, _ident)
        if m == "/test.Echo/ServerStream":
            return grpc.unary_stream_rpc_method_handler(self.server_stream, _ident, _ident)
        if m == "/test.Echo/ClientStream":
            return grpc.stream_unary_rpc_method_handler(self.client_stream, _ident, _ident)
        if m == "/test.Echo/Bidi":
            return grpc.stream_stream_rpc_method_handler(self.bidi, _ident, _ident)
        if m == "/test.Echo/Fail":
            return grpc.unary_unary_rpc_method_handler(self.fail, _ident, _ident)
        if m == "/test.Echo/Slow":
            return grpc.unary_unary_rpc_method_handler(self.slow, _ident, _ident)
        if m == "/test.Echo/Wait":
            return grpc.unary_unary_rpc_method_handler(self.wait, _ident, _ident)
        return None

    def unary(self, req, ctx):
        md = dict(ctx.invocation_metadata())
        ctx.set_trailing_metadata((("x-trailer", "t-" + md.get("x-call", "")),
                                   ("x-authority", md.get(":authority", ""))))
        return b"echo:" + req

    def server_stream(self, req, ctx):
        n = int(req)
        for i in range(n):
            yield b"%d:" % i + b"x" * 1000
        ctx.set_trailing_metadata((("x-count", str(n)),))

    def client_stream(self, it, ctx):
        total, count = 0, 0
        for msg in it:
            total += len(msg)
            count += 1
        return b"%d/%d" % (count, total)

    def bidi(self, it, ctx):
        for msg in it:
            yield msg[::-1]

    def fail(self, req, ctx):
        ctx.set_trailing_metadata((("x-why", "because"),))
        ctx.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad input: " + req.decode())

    def slow(self, req, ctx):
        time.sleep(3)
        return req

    def wait(self, req, ctx):
        """Runs for up to 5 s unless the call is cancelled (which it notes)."""
        end = time.monotonic() + 5
        while time.monotonic() < end:
            if not ctx.is_active():
                self.cancelled.set()
                return b""
            time.sleep(0.02)
        return b"done"


def start_grpc_server(creds=None, service=None):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((service or EchoService(),))
    if creds is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", creds)
    server.start()
    return server, port


class GrpcCase(h.TurnpikeCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.pki = tls_certs.Pki(os.path.join(cls.cstack.dir, "pki"))

    def setUp(self):
        super().setUp()
        self.servers = []
        self.channels = []

    def tearDown(self):
        for c in self.channels:
            c.close()
        for s in self.servers:
            s.stop(0)
        super().tearDown()

    def start(self, upstream_tls=False, listener_tls=False):
        if upstream_tls:
            with open(self.backend_cert.key, "rb") as k, open(self.backend_cert.cert, "rb") as c:
                creds = grpc.ssl_server_credentials(((k.read(), c.read()),))
            server, port = start_grpc_server(creds)
            cluster = h.cluster("grpc", "127.0.0.1:%d" % port, protocol="h2",
                                tls={"ca": self.pki.ca.cert, "server_name": BACKEND})
        else:
            self.service = EchoService()
            server, port = start_grpc_server(service=self.service)
            cluster = h.cluster("grpc", "127.0.0.1:%d" % port, protocol="h2c")
        self.servers.append(server)
        self.grpc_port = port
        lst = h.listener("main", h.free_port())
        if listener_tls:
            lst["tls"] = {"certificates": [{"cert": self.pki.api.cert, "key": self.pki.api.key}]}
        else:
            lst["protocols"] = ["http1", "h2c"]
        routes = [
            {"name": "slow", "match": {"path": "/test.Echo/Slow"}, "backend": "grpc",
             "timeout": "500ms"},
            {"name": "grpc", "match": {"path_prefix": "/test.Echo"}, "backend": "grpc"},
        ]
        cfg = h.config(h.free_port(), [lst], [cluster], routes, access_log="stdout")
        self.tp = self.stack.turnpike(cfg)
        target = "127.0.0.1:%d" % self.tp.ports["main"]
        if listener_tls:
            with open(self.pki.ca.cert, "rb") as f:
                creds = grpc.ssl_channel_credentials(root_certificates=f.read())
            ch = grpc.secure_channel(target, creds,
                                     options=(("grpc.ssl_target_name_override", API),))
        else:
            ch = grpc.insecure_channel(target)
        self.channels.append(ch)
        self.ch = ch
        return ch

    @property
    def backend_cert(self):
        if not hasattr(self, "_backend_cert"):
            self._backend_cert = self.pki.issue_server("backend", [BACKEND])
        return self._backend_cert

    def unary(self, method="/test.Echo/Unary"):
        return self.ch.unary_unary(method, request_serializer=_ident,
                                   response_deserializer=_ident)

    def check_all_call_types(self):
        # Unary, with metadata in and trailing metadata out.
        resp, call = self.unary().with_call(b"ping", metadata=(("x-call", "1"),), timeout=10)
        self.assertEqual(resp, b"echo:ping")
        self.assertEqual(call.code(), grpc.StatusCode.OK)
        trailers = dict(call.trailing_metadata())
        self.assertEqual(trailers.get("x-trailer"), "t-1")
        # Server streaming: 200 messages of 1 KB, then a trailer.
        call = self.ch.unary_stream("/test.Echo/ServerStream", request_serializer=_ident,
                                    response_deserializer=_ident)(b"200", timeout=10)
        msgs = list(call)
        self.assertEqual(len(msgs), 200)
        self.assertEqual(msgs[199], b"199:" + b"x" * 1000)
        self.assertEqual(dict(call.trailing_metadata()).get("x-count"), "200")
        self.assertEqual(call.code(), grpc.StatusCode.OK)
        # Client streaming: 100 messages of 10 KB.
        resp = self.ch.stream_unary("/test.Echo/ClientStream", request_serializer=_ident,
                                    response_deserializer=_ident)(
            iter([os.urandom(10000) for _ in range(100)]), timeout=10)
        self.assertEqual(resp, b"100/1000000")
        # Bidirectional: each message answered in turn.
        msgs = [b"abc", b"hello", os.urandom(50000)]
        out = list(self.ch.stream_stream("/test.Echo/Bidi", request_serializer=_ident,
                                         response_deserializer=_ident)(iter(msgs), timeout=10))
        self.assertEqual(out, [m[::-1] for m in msgs])
        # A server error: status, message and trailing metadata pass through intact.
        with self.assertRaises(grpc.RpcError) as cm:
            self.unary("/test.Echo/Fail")(b"x1", timeout=10)
        e = cm.exception
        self.assertEqual(e.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertEqual(e.details(), "bad input: x1")
        self.assertEqual(dict(e.trailing_metadata()).get("x-why"), "because")


class GrpcThroughTurnpikeTest(GrpcCase):
    def test_all_call_types_over_h2c(self):
        self.start()
        self.check_all_call_types()
        # Many concurrent calls multiplexed over Turnpike's upstream connection.
        fut = [self.unary().future(b"%d" % i, timeout=10) for i in range(200)]
        self.assertEqual([f.result() for f in fut], [b"echo:%d" % i for i in range(200)])

    def test_all_call_types_tls_both_ways(self):
        self.start(upstream_tls=True, listener_tls=True)
        self.check_all_call_types()

    def test_gateway_errors_are_grpc_statuses(self):
        self.start()
        # Route timeout (504) -> DEADLINE_EXCEEDED, well before the client's own deadline.
        t0 = time.monotonic()
        with self.assertRaises(grpc.RpcError) as cm:
            self.unary("/test.Echo/Slow")(b"x", timeout=10)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.DEADLINE_EXCEEDED)
        self.assertLess(time.monotonic() - t0, 2.5)
        self.assertIn("timed out", cm.exception.details())
        # No route (404) -> UNIMPLEMENTED.
        with self.assertRaises(grpc.RpcError) as cm:
            self.unary("/other.Service/Call")(b"x", timeout=10)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNIMPLEMENTED)
        # Server down (502) -> UNAVAILABLE.
        self.servers.pop().stop(0).wait()
        with self.assertRaises(grpc.RpcError) as cm:
            self.unary()(b"x", timeout=10)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE)
        # Raw view: HTTP 200, content-type application/grpc, trailers-only (one HEADERS frame
        # that ends the stream), no body. nghttp, because the answer may come before the
        # request's last DATA frame, and then RST_STREAM(NO_ERROR) follows the response (RFC 9113
        # section 8.1), which curl 7.88 reports as an error.
        empty = self.stack.write("empty.bin", "\0\0\0\0\0")
        p = subprocess.run(["nghttp", "-v", "-H", "content-type: application/grpc",
                            "-H", "te: trailers", "-d", empty,
                            "http://127.0.0.1:%d/test.Echo/Unary" % self.tp.ports["main"]],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
        text = p.stdout.decode(errors="replace")
        received = [line for line in text.splitlines() if " recv " in line]
        self.assertTrue(any(":status: 200" in l for l in received), text)
        self.assertTrue(any("content-type: application/grpc" in l for l in received), text)
        self.assertTrue(any("grpc-status: 14" in l for l in received), text)
        status = next((l for l in received if ":status: 200" in l), "")
        stream = re.search(r"stream_id=(\d+)", status)
        self.assertTrue(stream, text)
        frames = [l for l in received
                  if "frame <" in l and "stream_id=%s>" % stream.group(1) in l]
        self.assertTrue(frames and "HEADERS frame" in frames[0] and "flags=0x05" in frames[0],
                        text)
        self.assertFalse(any("DATA frame" in l for l in frames), text)  # no body

    def test_client_cancellation_reaches_the_server(self):
        self.start()
        # The client cancels a call that has no deadline (so no grpc-timeout for the server
        # to act on): it resets the stream, and Turnpike must pass that on (RST_STREAM
        # upstream) rather than keep the call running on the server until it answers.
        fut = self.unary("/test.Echo/Wait").future(b"")
        time.sleep(0.3)
        self.assertTrue(fut.cancel())
        self.assertTrue(self.service.cancelled.wait(h.scaled(3)),
                        "the server never saw the cancellation")
        h.wait_for(lambda: '"status":499' in self.tp.proc.stdout(), h.scaled(5),
                   what="access log line with status 499")

    def test_http11_client_to_h2_backend(self):
        self.start()
        # gRPC needs HTTP/2 end to end, but a plain HTTP/1.1 request still reaches the h2
        # backend and its answer comes back translated (the server rejects a non-gRPC call with
        # a gRPC status; what matters is that the exchange happened over HTTP/2 upstream).
        ping = self.stack.write("ping.bin", "\0\0\0\0\x04ping")
        p = subprocess.run(["curl", "-sS", "--http1.1", "-i", "-X", "POST",
                            "-H", "content-type: application/grpc",
                            "--data-binary", "@" + ping,
                            "http://127.0.0.1:%d/test.Echo/Unary" % self.tp.ports["main"]],
                           capture_output=True, timeout=30)
        text = p.stdout.decode("latin-1")
        self.assertRegex(text, r"^HTTP/1.1 200", text)
        self.assertIn("echo:ping", text)
        # Trailers arrive as a chunked trailer section.
        self.assertIn("grpc-status: 0", text)


if __name__ == "__main__":
    unittest.main()
