"""gRPC interop through Turnpike: the official interop test cases (grpc/grpc's
doc/interop-test-descriptions.md) with python3-grpcio on both ends, the messages of the
`grpc.testing` protos that Debian's grpc-proto ships, compiled with protoc at start-up.

The server is an interop TestService written here on grpc's generic handler API (EmptyCall,
UnaryCall, StreamingOutputCall, StreamingInputCall, FullDuplexCall, HalfDuplexCall, with the
spec's Echo Status, Echo Metadata and interval_us features). FullDuplexCall answers each
request as it arrives, so a proxy that holds the upstream's response until the client has
finished its request stream (half-duplex) fails ping_pong. Every step that waits for the other
side is bounded by a short timeout, so such a proxy fails fast with a message that says what
did not arrive, instead of hanging.

The same case list runs over the four ways through Turnpike (client -> Turnpike over h2c or
TLS with ALPN h2; Turnpike -> server over h2c or h2 with TLS), and straight against the server
(cleartext and TLS) as a control: a case that passes there and fails through Turnpike is
Turnpike's failure. Each case asserts what the gRPC client sees: status code, details,
messages and their sizes, initial and trailing metadata, timing bounds; where the server's
view matters (cancellation, deadlines, the bytes it received) it also asserts what the server
saw, which it records per call under the client's x-test-call-id.

Cases: the spec's empty_unary, large_unary, client_streaming, server_streaming, ping_pong,
empty_stream, cancel_after_begin, cancel_after_first_response, timeout_on_sleeping_server,
custom_metadata (unary and full duplex), status_code_and_message (unary and full duplex),
special_status_message, unimplemented_method and unimplemented_service; and beyond it: 4 MiB
messages each way, a status without a message, a deadline that expires mid-stream, a call that
reaches the server before the client's first message, a cancelled server stream, initial
metadata then trailers with no message in between (OK, and an error status), HalfDuplexCall.

The cases run in child processes, one per combination (see "Process isolation" at the end):
grpcio's client aborts its whole process on some malformed responses.

Needs the packages grpc-proto and protobuf-compiler (scripts/install-deps.sh)."""

import hashlib
import importlib.util
import io
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import uuid
from concurrent import futures

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import tls_certs  # noqa: E402

PROTO_ROOT = "/usr/share/grpc-proto"  # Debian's grpc-proto
PROTOC = "/usr/bin/protoc"  # Debian's protobuf-compiler (3.21, like python3-protobuf)

API = "api.example.test"  # the name on Turnpike's listener certificate
BACKEND = "backend.example.test"  # the name on the gRPC server's certificate

SERVICE = "grpc.testing.TestService"
MAX_MESSAGE = 8 * 1024 * 1024  # both ends: room for the 4 MiB messages and their framing
FOUR_MIB = 4 * 1024 * 1024
CHANNEL_OPTIONS = [("grpc.max_send_message_length", MAX_MESSAGE),
                   ("grpc.max_receive_message_length", MAX_MESSAGE)]

# How long one step may take (a reply to a ping, the end of a call after half-close, the server
# noticing a cancellation). On loopback each takes milliseconds; a proxy that holds a message
# fails the step instead of hanging the suite.
STEP = h.scaled(2.0)
# How many times the cases whose failure depends on timing repeat their call.
REPEAT = 30
# A safety deadline on calls that have no deadline of their own in the spec.
CALL_DEADLINE = h.scaled(10.0)

CUSTOM_INITIAL = ("x-grpc-test-echo-initial", "test_initial_metadata_value")
CUSTOM_TRAILING = ("x-grpc-test-echo-trailing-bin", b"\xab\xab\xab")
SPECIAL_MESSAGE = "\t\ntest with whitespace\r\nand Unicode BMP \u263a and non-BMP \U0001f608\t\n"

pb = None  # namespace of the generated message classes, set by setUpModule
_PKI = None  # InteropPki, set by setUpModule

# See "Process isolation" at the end: by default the cases run in child processes.
CHILD_ARG = "--interop-child"
PKI_ENV = "TP_GRPC_INTEROP_PKI"
CHILD = len(sys.argv) > 1 and sys.argv[1] == CHILD_ARG
INPROCESS = os.environ.get("TP_GRPC_INTEROP_INPROCESS", "") == "1"
ISOLATED = not (CHILD or INPROCESS)  # this process is the parent that supervises children


class _Messages:
    """The generated classes, by their proto names."""

    def __init__(self, empty_mod, messages_mod):
        self.Empty = empty_mod.Empty
        for name in ("SimpleRequest", "SimpleResponse", "Payload", "EchoStatus",
                     "ResponseParameters", "StreamingInputCallRequest",
                     "StreamingInputCallResponse", "StreamingOutputCallRequest",
                     "StreamingOutputCallResponse"):
            setattr(self, name, getattr(messages_mod, name))


def generate_messages():
    """protoc --python_out for grpc/testing/{empty,messages}.proto into a temp dir, imported
    from there by file (the generated package path `grpc.testing` would clash with grpcio's own
    `grpc` package; test.proto's services are not needed: both ends use generic handlers)."""
    for path, package in ((PROTOC, "protobuf-compiler"),
                          (os.path.join(PROTO_ROOT, "grpc/testing/messages.proto"),
                           "grpc-proto")):
        if not os.path.exists(path):
            raise RuntimeError("%s is missing: install the Debian package %s "
                               "(scripts/install-deps.sh)" % (path, package))
    out = tempfile.mkdtemp(prefix="tp-grpc-pb2-")
    try:
        p = subprocess.run([PROTOC, "-I" + PROTO_ROOT, "--python_out=" + out,
                            "grpc/testing/empty.proto", "grpc/testing/messages.proto"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
        if p.returncode != 0:
            raise RuntimeError("protoc failed:\n" + p.stdout.decode("utf-8", "replace"))
        mods = []
        for name in ("empty", "messages"):
            spec = importlib.util.spec_from_file_location(
                "tp_interop_%s_pb2" % name, os.path.join(out, "grpc", "testing",
                                                          name + "_pb2.py"))
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            mods.append(mod)
        return _Messages(*mods)
    finally:
        shutil.rmtree(out, ignore_errors=True)


class InteropPki:
    """The three certificates these tests need: a CA, Turnpike's listener certificate (API)
    and the gRPC server's (BACKEND), both from that CA. Made once by the parent process (see
    "Process isolation" below), read by the child processes from the same directory."""

    def __init__(self, directory, generate):
        self.dir = directory
        if generate:
            pki = tls_certs.Pki(directory, generate=False)
            self.ca = pki.make_ca("ca", "Turnpike gRPC Interop CA")
            pki.ca = self.ca
            self.api = pki.issue_server("api", [API])
            self.backend = pki.issue_server("backend", [BACKEND])
        else:
            for name in ("ca", "api", "backend"):
                setattr(self, name, tls_certs.Cert(os.path.join(directory, name + ".pem"),
                                                   os.path.join(directory, name + ".key")))


def setUpModule():
    global pb, _PKI
    if not ISOLATED:
        pb = generate_messages()
    shared = os.environ.get(PKI_ENV)
    if shared:
        _PKI = InteropPki(shared, generate=False)
    else:
        _PKI = InteropPki(tempfile.mkdtemp(prefix="tp-grpc-interop-pki-"), generate=True)
        _PKI.owned = True
        os.environ[PKI_ENV] = _PKI.dir  # the children inherit it


def tearDownModule():
    if _PKI is not None and getattr(_PKI, "owned", False):
        shutil.rmtree(_PKI.dir, ignore_errors=True)
        os.environ.pop(PKI_ENV, None)


def zeros(n):
    return b"\0" * n


def read(path):
    with open(path, "rb") as f:
        return f.read()


_STATUS_BY_NUMBER = {sc.value[0]: sc for sc in grpc.StatusCode}


# ---------------------------------------------------------------------------------------------
# The interop server


class CallRecord:
    """What the server saw of one call, found by the client's x-test-call-id."""

    def __init__(self, method):
        self.method = method
        self.ended = threading.Event()  # the call is over on the server, for any reason
        self.ended_at = None
        # The request stream ended without an error: END_STREAM, but also (grpcio's server
        # cannot tell them apart reliably) a cancellation that raced the read.
        self.half_closed = threading.Event()
        self.linger = 0  # x-test-linger-after-half-close: seconds to stay open after it
        self.request_sizes = []  # payload sizes of the requests received, in order
        self.request_digests = []
        self.responses_sent = 0
        self.stream_error = None  # reading the requests failed (the call was cancelled)
        self.time_remaining = None  # the deadline the server got (grpc-timeout), in seconds

    def on_end(self):
        self.ended_at = time.monotonic()
        self.ended.set()

    def describe(self):
        return ("server saw: %d request(s) %s, %d response(s) sent, %s, %s"
                % (len(self.request_sizes), self.request_sizes, self.responses_sent,
                   "request stream ended" if self.half_closed.is_set()
                   else "request stream still open" if self.stream_error is None
                   else "request stream failed (%s)" % self.stream_error,
                   "call ended" if self.ended.is_set() else "call still running"))


class TestService:
    """grpc.testing.TestService as the interop spec's server features describe it."""

    def __init__(self):
        self._lock = threading.Lock()
        self._calls = {}
        self._new_call = threading.Condition(self._lock)
        P = pb
        self.handler = grpc.method_handlers_generic_handler(SERVICE, {
            "EmptyCall": grpc.unary_unary_rpc_method_handler(
                self.empty_call, P.Empty.FromString, P.Empty.SerializeToString),
            "UnaryCall": grpc.unary_unary_rpc_method_handler(
                self.unary_call, P.SimpleRequest.FromString,
                P.SimpleResponse.SerializeToString),
            "StreamingOutputCall": grpc.unary_stream_rpc_method_handler(
                self.streaming_output_call, P.StreamingOutputCallRequest.FromString,
                P.StreamingOutputCallResponse.SerializeToString),
            "StreamingInputCall": grpc.stream_unary_rpc_method_handler(
                self.streaming_input_call, P.StreamingInputCallRequest.FromString,
                P.StreamingInputCallResponse.SerializeToString),
            "FullDuplexCall": grpc.stream_stream_rpc_method_handler(
                self.full_duplex_call, P.StreamingOutputCallRequest.FromString,
                P.StreamingOutputCallResponse.SerializeToString),
            "HalfDuplexCall": grpc.stream_stream_rpc_method_handler(
                self.half_duplex_call, P.StreamingOutputCallRequest.FromString,
                P.StreamingOutputCallResponse.SerializeToString),
            # UnimplementedCall is left out on purpose: the server answers UNIMPLEMENTED.
        })

    # Bookkeeping

    def _begin(self, ctx, method):
        """Registers the call, echoes metadata (Echo Metadata feature)."""
        md = ctx.invocation_metadata()
        rec = CallRecord(method)
        rec.time_remaining = ctx.time_remaining()
        linger = dict(md).get("x-test-linger-after-half-close")
        rec.linger = float(linger) if linger else 0
        if not ctx.add_callback(rec.on_end):  # the call is already over
            rec.on_end()
        call_id = None
        initial = trailing = None
        for k, v in md:
            if k == "x-test-call-id":
                call_id = v
            elif k == CUSTOM_INITIAL[0]:
                initial = v
            elif k == CUSTOM_TRAILING[0]:
                trailing = v
        if initial is not None:
            ctx.send_initial_metadata(((CUSTOM_INITIAL[0], initial),))
        if trailing is not None:
            ctx.set_trailing_metadata(((CUSTOM_TRAILING[0], trailing),))
        if call_id:
            with self._lock:
                self._calls[call_id] = rec
                self._new_call.notify_all()
        return rec

    def record(self, call_id, timeout):
        """The server's record of a call, or None if it has not arrived within timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while call_id not in self._calls:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._new_call.wait(left)
            return self._calls[call_id]

    @staticmethod
    def _note_request(rec, payload):
        rec.request_sizes.append(len(payload.body))
        rec.request_digests.append(hashlib.sha256(payload.body).hexdigest())

    @staticmethod
    def _echo_status(ctx, status):
        """Echo Status: a request's response_status ends the call with that status."""
        if status.code != 0:
            ctx.abort(_STATUS_BY_NUMBER[status.code], status.message)

    @staticmethod
    def _sleep(ctx, seconds):
        """interval_us: sleeps, but gives up as soon as the call is over (False)."""
        end = time.monotonic() + seconds
        while True:
            if not ctx.is_active():
                return False
            left = end - time.monotonic()
            if left <= 0:
                return True
            time.sleep(min(left, 0.01))

    def _respond(self, ctx, rec, params):
        """One StreamingOutputCallResponse per ResponseParameters, after its interval."""
        for p in params:
            if p.interval_us and not self._sleep(ctx, p.interval_us / 1e6):
                return False
            rec.responses_sent += 1
            yield pb.StreamingOutputCallResponse(payload=pb.Payload(body=zeros(p.size)))
        return True

    # Methods

    def empty_call(self, req, ctx):
        self._begin(ctx, "EmptyCall")
        return pb.Empty()

    def unary_call(self, req, ctx):
        rec = self._begin(ctx, "UnaryCall")
        self._note_request(rec, req.payload)
        self._echo_status(ctx, req.response_status)
        if req.response_type != 0:  # only COMPRESSABLE exists
            ctx.abort(grpc.StatusCode.INVALID_ARGUMENT, "unsupported response_type")
        rec.responses_sent += 1
        return pb.SimpleResponse(payload=pb.Payload(body=zeros(req.response_size)))

    def streaming_output_call(self, req, ctx):
        rec = self._begin(ctx, "StreamingOutputCall")
        self._note_request(rec, req.payload)
        ok = yield from self._respond(ctx, rec, req.response_parameters)
        if ok:
            self._echo_status(ctx, req.response_status)

    def streaming_input_call(self, request_iterator, ctx):
        rec = self._begin(ctx, "StreamingInputCall")
        total = 0
        try:
            for req in request_iterator:
                self._note_request(rec, req.payload)
                total += len(req.payload.body)
        except grpc.RpcError as e:
            rec.stream_error = repr(e) or "RpcError"
            return None
        rec.half_closed.set()
        return pb.StreamingInputCallResponse(aggregated_payload_size=total)

    def full_duplex_call(self, request_iterator, ctx):
        """Answers each request as it arrives (what exposes a half-duplex proxy)."""
        rec = self._begin(ctx, "FullDuplexCall")
        try:
            for req in request_iterator:
                self._note_request(rec, req.payload)
                self._echo_status(ctx, req.response_status)
                ok = yield from self._respond(ctx, rec, req.response_parameters)
                if not ok:
                    return
        except grpc.RpcError as e:
            rec.stream_error = repr(e) or "RpcError"
            return
        rec.half_closed.set()
        # Test extension: stay open a while after half-close, unless the call is cancelled.
        # A cancellation then ends the call at once; a half-close (what a proxy that turns
        # RST_STREAM into END_STREAM would send) does not.
        if rec.linger:
            self._sleep(ctx, rec.linger)

    def half_duplex_call(self, request_iterator, ctx):
        """Buffers the requests until half-close, then answers them in order."""
        rec = self._begin(ctx, "HalfDuplexCall")
        reqs = []
        try:
            for req in request_iterator:
                self._note_request(rec, req.payload)
                reqs.append(req)
        except grpc.RpcError as e:
            rec.stream_error = repr(e) or "RpcError"
            return
        rec.half_closed.set()
        for req in reqs:
            self._echo_status(ctx, req.response_status)
            ok = yield from self._respond(ctx, rec, req.response_parameters)
            if not ok:
                return


def start_server(service, tls):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32),
                         options=CHANNEL_OPTIONS)
    server.add_generic_rpc_handlers((service.handler,))
    if tls:
        creds = grpc.ssl_server_credentials(((read(_PKI.backend.key),
                                              read(_PKI.backend.cert)),))
        port = server.add_secure_port("127.0.0.1:0", creds)
    else:
        port = server.add_insecure_port("127.0.0.1:0")
    if not port:
        raise RuntimeError("the gRPC server could not bind a port")
    server.start()
    return server, port


# ---------------------------------------------------------------------------------------------
# Client side helpers

_CLOSE = object()


class Responses:
    """Reads a streaming call's responses on a thread into a queue, so that every wait for a
    response, or for the end of the call, has a bound."""

    def __init__(self, case, call, call_id):
        self.case = case
        self.call = call
        self.call_id = call_id
        self._events = queue.Queue()
        self.responses = []
        self.outcome = None  # ("end", call) or ("error", RpcError) once the call is over
        self.ended_at = None
        self.started = time.monotonic()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        try:
            for r in self.call:
                self._events.put(("msg", r, time.monotonic()))
            self._events.put(("end", self.call, time.monotonic()))
        except grpc.RpcError as e:
            self._events.put(("error", e, time.monotonic()))
        except Exception as e:  # noqa: BLE001 -- reported to the test, never lost in a thread
            self._events.put(("error", e, time.monotonic()))

    def cancel(self):
        self.call.cancel()

    def _server_view(self):
        rec = self.case.service.record(self.call_id, 0) if self.case.service else None
        if rec is None:
            return "the server has not seen this call"
        return rec.describe()

    def recv(self, timeout, what):
        """The next response; fails (naming `what`) if the call ends or nothing comes."""
        try:
            kind, value, at = self._events.get(timeout=timeout)
        except queue.Empty:
            kind = None
        if kind is None:
            self.case.fail("%s: no response within %.1fs (%s)"
                           % (what, timeout, self._server_view()))
        if kind != "msg":
            self.outcome = (kind, value)
            self.case.fail("%s: the call ended first with %s (%s)"
                           % (what, describe_status(value), self._server_view()))
        self.responses.append(value)
        return value

    def finish(self, timeout, what):
        """Waits for the end of the call; returns (code, details, elapsed, extra messages).
        Messages that arrive meanwhile are collected in order."""
        deadline = time.monotonic() + timeout
        extra = []
        while self.outcome is None:
            left = deadline - time.monotonic()
            try:
                kind, value, at = self._events.get(timeout=max(left, 0))
            except queue.Empty:
                kind = None
            if kind is None:
                self.case.fail("%s: the call did not end within %.1fs (%d message(s) received;"
                               " %s)" % (what, timeout, len(self.responses) + len(extra),
                                         self._server_view()))
            if kind == "msg":
                extra.append(value)
            else:
                self.outcome = (kind, value)
                self.ended_at = at
        self.responses.extend(extra)
        _, value = self.outcome
        code, details = status_of(value)
        return code, details, self.ended_at - self.started, extra


class Duplex(Responses):
    """A bidi (or client-streaming) call fed from a queue, never from a pre-built list: the
    client can wait for a reply before it sends the next request."""

    def __init__(self, case, method, call_id, metadata=(), timeout=CALL_DEADLINE):
        self._requests = queue.Queue()
        md = [("x-test-call-id", call_id)] + list(metadata)
        call = case.stream_stream(method)(self._iterate(), metadata=md, timeout=timeout)
        super().__init__(case, call, call_id)

    def _iterate(self):
        while True:
            item = self._requests.get()
            if item is _CLOSE:
                return
            yield item

    def send(self, msg):
        self._requests.put(msg)

    def half_close(self):
        self._requests.put(_CLOSE)

    def cancel(self):
        self.call.cancel()
        self._requests.put(_CLOSE)  # frees grpc's request-consuming thread


def status_of(call_or_error):
    """(code, details) of a finished call or an RpcError (anything else: the exception)."""
    if hasattr(call_or_error, "code") and callable(call_or_error.code):
        return call_or_error.code(), call_or_error.details()
    return call_or_error, None


def describe_status(value):
    code, details = status_of(value)
    return "%s %r" % (code, details)


def sizes(responses):
    return [len(r.payload.body) for r in responses]


def out_req(response_sizes, payload=0, intervals=None, status=None):
    """A StreamingOutputCallRequest."""
    intervals = intervals or [0] * len(response_sizes)
    req = pb.StreamingOutputCallRequest(
        response_parameters=[pb.ResponseParameters(size=s, interval_us=i)
                             for s, i in zip(response_sizes, intervals)],
        payload=pb.Payload(body=zeros(payload)))
    if status is not None:
        req.response_status.CopyFrom(pb.EchoStatus(code=status[0], message=status[1]))
    return req


# ---------------------------------------------------------------------------------------------
# The cases


class InteropCases:
    """The case list; each subclass says how the client reaches the server."""

    CLIENT_TLS = False  # client -> Turnpike (or the server) over TLS with ALPN h2, else h2c
    UPSTREAM_TLS = False  # Turnpike -> server over h2 with TLS, else h2c
    VIA_TURNPIKE = True  # False: the control, straight to the server

    service = None
    channel = None
    RESULTS = None  # in a child process: the JSON-lines file the parent reads

    @classmethod
    def _report(cls, event):
        if cls.RESULTS:
            with open(cls.RESULTS, "a") as f:
                f.write(json.dumps(event) + "\n")

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        try:
            cls._start()
        except BaseException:
            cls._stop()
            super().tearDownClass()
            raise

    @classmethod
    def _start(cls):
        cls._report({"event": "dirs", "dirs": [cls.cstack.dir]})
        cls.service = TestService()
        server_tls = cls.UPSTREAM_TLS if cls.VIA_TURNPIKE else cls.CLIENT_TLS
        cls.server, cls.server_port = start_server(cls.service, server_tls)
        if cls.VIA_TURNPIKE:
            if cls.UPSTREAM_TLS:
                cluster = h.cluster("interop", "127.0.0.1:%d" % cls.server_port, protocol="h2",
                                    tls={"ca": _PKI.ca.cert, "server_name": BACKEND})
            else:
                cluster = h.cluster("interop", "127.0.0.1:%d" % cls.server_port,
                                    protocol="h2c")
            lst = h.listener("main", h.free_port())
            if cls.CLIENT_TLS:
                lst["tls"] = {"certificates": [{"cert": _PKI.api.cert, "key": _PKI.api.key}]}
            else:
                lst["protocols"] = ["http1", "h2c"]
            # A route timeout far above every deadline here: only the client's deadline counts.
            routes = [{"name": "interop", "match": {"path_regex": "/grpc\\.testing\\.[^/]+/.*"},
                       "backend": "interop", "timeout": "30s"}]
            cfg = h.config(h.free_port(), [lst], [cluster], routes, access_log="stdout")
            cls.tp = cls.cstack.turnpike(cfg, wait=False)
            cls._report({"event": "pid", "pid": cls.tp.pid})
            cls.tp.wait_ready()
            target, name = "127.0.0.1:%d" % cls.tp.ports["main"], API
        else:
            cls.tp = None
            target, name = "127.0.0.1:%d" % cls.server_port, BACKEND
        options = list(CHANNEL_OPTIONS)
        if cls.CLIENT_TLS:
            creds = grpc.ssl_channel_credentials(root_certificates=read(_PKI.ca.cert))
            options.append(("grpc.ssl_target_name_override", name))
            cls.channel = grpc.secure_channel(target, creds, options=options)
        else:
            cls.channel = grpc.insecure_channel(target, options=options)
        grpc.channel_ready_future(cls.channel).result(timeout=h.scaled(10))

    @classmethod
    def _stop(cls):
        if cls.channel is not None:
            cls.channel.close()
            cls.channel = None
        if getattr(cls, "server", None) is not None:
            cls.server.stop(0).wait(5)
            cls.server = None

    @classmethod
    def tearDownClass(cls):
        cls._stop()
        super().tearDownClass()

    def setUp(self):
        super().setUp()
        self._report({"event": "dirs", "dirs": [self.stack.dir]})
        self._open_calls = []
        self.addCleanup(self._cancel_open_calls)

    def run(self, result=None):
        """In a child process: tells the parent when the case starts and how it ended, with
        what the harness printed (the process logs on a failure)."""
        if not self.RESULTS or result is None:
            return super().run(result)
        name = self._testMethodName
        self._report({"event": "start", "test": name})
        before = {k: len(getattr(result, k)) for k in ("failures", "errors", "skipped")}
        saved, captured = sys.stderr, io.StringIO()
        sys.stderr = captured
        try:
            return super().run(result)
        finally:
            sys.stderr = saved
            status, text = "pass", ""
            for kind, label in (("errors", "error"), ("failures", "fail"),
                                ("skipped", "skip")):
                if len(getattr(result, kind)) > before[kind]:
                    status, text = label, getattr(result, kind)[-1][1]
                    break
            self._report({"event": "done", "test": name, "status": status, "text": text,
                          "logs": captured.getvalue()})

    def _cancel_open_calls(self):
        for c in self._open_calls:
            c.cancel()  # no-op on a call that has ended

    # Call helpers

    def method(self, name):
        return "/%s/%s" % (SERVICE, name)

    def stream_stream(self, method):
        return self.channel.stream_stream(
            method, request_serializer=pb.StreamingOutputCallRequest.SerializeToString,
            response_deserializer=pb.StreamingOutputCallResponse.FromString)

    def duplex(self, name="FullDuplexCall", metadata=(), timeout=CALL_DEADLINE):
        call_id = uuid.uuid4().hex
        d = Duplex(self, self.method(name), call_id, metadata, timeout)
        self._open_calls.append(d)
        return d

    def server_stream(self, req, metadata=(), timeout=CALL_DEADLINE):
        """StreamingOutputCall, its responses read by a thread (Responses)."""
        call_id = uuid.uuid4().hex
        mc = self.channel.unary_stream(
            self.method("StreamingOutputCall"),
            request_serializer=pb.StreamingOutputCallRequest.SerializeToString,
            response_deserializer=pb.StreamingOutputCallResponse.FromString)
        md = [("x-test-call-id", call_id)] + list(metadata)
        r = Responses(self, mc(req, metadata=md, timeout=timeout), call_id)
        self._open_calls.append(r)
        return r

    def unary(self, req, metadata=(), timeout=None, call_id=None):
        """UnaryCall: returns (response, call) or raises RpcError."""
        call_id = call_id or uuid.uuid4().hex
        mc = self.channel.unary_unary(self.method("UnaryCall"),
                                      request_serializer=pb.SimpleRequest.SerializeToString,
                                      response_deserializer=pb.SimpleResponse.FromString)
        md = [("x-test-call-id", call_id)] + list(metadata)
        return mc.with_call(req, metadata=md,
                            timeout=CALL_DEADLINE if timeout is None else timeout)

    def assertRpcError(self, fn, code, details=None):
        with self.assertRaises(grpc.RpcError) as cm:
            fn()
        e = cm.exception
        self.assertEqual(e.code(), code, "details: %r" % (e.details(),))
        if details is not None:
            self.assertEqual(e.details(), details)
        return e

    def server_record(self, call_id, what):
        rec = self.service.record(call_id, STEP)
        self.assertIsNotNone(rec, "%s: the call never reached the server" % what)
        return rec

    # empty_unary

    def test_empty_unary(self):
        mc = self.channel.unary_unary(self.method("EmptyCall"),
                                      request_serializer=pb.Empty.SerializeToString,
                                      response_deserializer=pb.Empty.FromString)
        resp, call = mc.with_call(pb.Empty(), timeout=CALL_DEADLINE)
        self.assertIsInstance(resp, pb.Empty)
        self.assertEqual(resp.SerializeToString(), b"")
        self.assertEqual(call.code(), grpc.StatusCode.OK)

    # large_unary, and 4 MiB each way

    def test_large_unary(self):
        resp, call = self.unary(pb.SimpleRequest(response_size=314159,
                                                 payload=pb.Payload(body=zeros(271828))))
        self.assertEqual(call.code(), grpc.StatusCode.OK)
        self.assertEqual(len(resp.payload.body), 314159)
        self.assertEqual(resp.payload.body, zeros(314159))

    def test_large_unary_4mib_each_way(self):
        body = os.urandom(FOUR_MIB)
        call_id = uuid.uuid4().hex
        resp, call = self.unary(pb.SimpleRequest(response_size=FOUR_MIB,
                                                 payload=pb.Payload(body=body)),
                                call_id=call_id)
        self.assertEqual(call.code(), grpc.StatusCode.OK)
        self.assertEqual(len(resp.payload.body), FOUR_MIB)
        self.assertEqual(resp.payload.body, zeros(FOUR_MIB))
        # The server got the 4 MiB request byte for byte.
        rec = self.server_record(call_id, "4 MiB unary")
        self.assertEqual(rec.request_sizes, [FOUR_MIB])
        self.assertEqual(rec.request_digests, [hashlib.sha256(body).hexdigest()])

    # client_streaming

    def test_client_streaming(self):
        mc = self.channel.stream_unary(
            self.method("StreamingInputCall"),
            request_serializer=pb.StreamingInputCallRequest.SerializeToString,
            response_deserializer=pb.StreamingInputCallResponse.FromString)
        reqs = (pb.StreamingInputCallRequest(payload=pb.Payload(body=zeros(n)))
                for n in (27182, 8, 1828, 45904))
        resp, call = mc.with_call(reqs, timeout=CALL_DEADLINE)
        self.assertEqual(call.code(), grpc.StatusCode.OK)
        self.assertEqual(resp.aggregated_payload_size, 74922)

    # server_streaming

    def test_server_streaming(self):
        s = self.server_stream(out_req([31415, 9, 2653, 58979]))
        code, details, _, responses = s.finish(STEP, "server_streaming")
        self.assertEqual(code, grpc.StatusCode.OK, details)
        self.assertEqual(sizes(responses), [31415, 9, 2653, 58979])
        self.assertTrue(all(r.payload.body == zeros(len(r.payload.body)) for r in responses))

    # ping_pong

    def test_ping_pong(self):
        d = self.duplex()
        for i, (req_size, resp_size) in enumerate(((27182, 31415), (8, 9), (1828, 2653),
                                                   (45904, 58979))):
            d.send(out_req([resp_size], payload=req_size))
            r = d.recv(STEP, "ping_pong: the reply to request %d of 4, sent while the client's "
                             "request stream is still open" % (i + 1))
            self.assertEqual(len(r.payload.body), resp_size)
        d.half_close()
        code, details, _, extra = d.finish(STEP, "ping_pong: after half-close")
        self.assertEqual(code, grpc.StatusCode.OK, details)
        self.assertEqual(extra, [], "responses after the fourth")
        self.assertEqual(sizes(d.responses), [31415, 9, 2653, 58979])
        rec = self.server_record(d.call_id, "ping_pong")
        self.assertEqual(rec.request_sizes, [27182, 8, 1828, 45904])
        self.assertTrue(rec.half_closed.is_set(), rec.describe())

    # empty_stream

    def test_empty_stream(self):
        d = self.duplex()
        d.half_close()
        code, details, _, extra = d.finish(STEP, "empty_stream: after an immediate half-close")
        self.assertEqual(code, grpc.StatusCode.OK, details)
        self.assertEqual(extra, [], "an empty stream got responses")

    def test_empty_stream_with_metadata(self):
        # Extra case: the server sends initial metadata, then its trailers, and no message in
        # between (a response of HEADERS, then HEADERS with END_STREAM, no DATA). Repeated:
        # whether the two HEADERS reach a proxy in one read or two is up to timing.
        for i in range(REPEAT):
            d = self.duplex(metadata=[CUSTOM_INITIAL, CUSTOM_TRAILING])
            d.half_close()
            code, details, _, extra = d.finish(STEP, "empty_stream with echoed metadata, "
                                                     "call %d" % (i + 1))
            self.assertEqual(code, grpc.StatusCode.OK, details)
            self.assertEqual(extra, [], "an empty stream got responses")
            self.assertIn(CUSTOM_INITIAL, list(d.call.initial_metadata()))
            self.assertIn(CUSTOM_TRAILING, list(d.call.trailing_metadata()))

    # cancel_after_begin

    def test_cancel_after_begin(self):
        mc = self.channel.stream_unary(
            self.method("StreamingInputCall"),
            request_serializer=pb.StreamingInputCallRequest.SerializeToString,
            response_deserializer=pb.StreamingInputCallResponse.FromString)
        requests = queue.Queue()

        def iterate():
            while True:
                item = requests.get()
                if item is _CLOSE:
                    return
                yield item

        fut = mc.future(iterate(), timeout=CALL_DEADLINE)
        try:
            self.assertTrue(fut.cancel(), "the call could not be cancelled")
            self.assertTrue(fut.cancelled())
            self.assertEqual(fut.code(), grpc.StatusCode.CANCELLED)
        finally:
            requests.put(_CLOSE)

    # The call reaches the server at once, before the client's first message (extra case:
    # request headers must go upstream without waiting for DATA).

    def test_initial_metadata_before_first_message(self):
        d = self.duplex(metadata=[CUSTOM_INITIAL])
        got = []
        t = threading.Thread(target=lambda: got.append(d.call.initial_metadata()), daemon=True)
        t.start()
        t.join(STEP)
        self.assertTrue(got, "no initial metadata within %.1fs of a bidi call whose client has "
                             "not sent a message yet (%s)" % (STEP, d._server_view()))
        self.assertIn(CUSTOM_INITIAL, list(got[0]))
        # Then a normal exchange on the same call.
        d.send(out_req([5], payload=3))
        r = d.recv(STEP, "the reply to the first request")
        self.assertEqual(len(r.payload.body), 5)
        d.half_close()
        code, details, _, _ = d.finish(STEP, "after half-close")
        self.assertEqual(code, grpc.StatusCode.OK, details)

    # cancel_after_first_response

    def test_cancel_after_first_response(self):
        linger = 2.5 * STEP  # the server stays open this long after a half-close
        d = self.duplex(metadata=[("x-test-linger-after-half-close", str(linger))])
        d.send(out_req([31415], payload=27182))
        r = d.recv(STEP, "cancel_after_first_response: the first reply, with the client's "
                         "request stream still open")
        self.assertEqual(len(r.payload.body), 31415)
        cancelled_at = time.monotonic()
        d.cancel()
        code, details, _, _ = d.finish(STEP, "cancel_after_first_response: after cancel")
        self.assertEqual(code, grpc.StatusCode.CANCELLED, details)
        # The server sees the cancellation (RST_STREAM passed on) and soon: neither the
        # call's deadline (CALL_DEADLINE) nor a half-close (the server lingers after one)
        # would end its call within STEP.
        rec = self.server_record(d.call_id, "cancel_after_first_response")
        self.assertTrue(rec.ended.wait(STEP),
                        "the server's call did not end within %.1fs of the cancellation (%s)"
                        % (STEP, rec.describe()))
        self.assertLess(rec.ended_at - cancelled_at, STEP)

    def test_cancel_mid_server_stream(self):
        # Extra case: cancellation reaching the server without any full-duplex need (the
        # request stream is already closed): a server stream cancelled after its first message.
        count = 100  # 5 s of messages, or more under the sanitizers
        s = self.server_stream(out_req([10] * count, intervals=[0] + [int(
            h.scaled(0.05) * 1e6)] * (count - 1)))
        r = s.recv(STEP, "the first message of a server stream")
        self.assertEqual(len(r.payload.body), 10)
        cancelled_at = time.monotonic()
        s.cancel()
        code, details, _, _ = s.finish(STEP, "server stream after cancel")
        self.assertEqual(code, grpc.StatusCode.CANCELLED, details)
        rec = self.server_record(s.call_id, "cancelled server stream")
        self.assertTrue(rec.ended.wait(STEP),
                        "the server did not see the cancellation within %.1fs (%s)"
                        % (STEP, rec.describe()))
        self.assertLess(rec.ended_at - cancelled_at, STEP)
        self.assertLess(rec.responses_sent, count, "the server streamed to the end")

    # timeout_on_sleeping_server

    def test_timeout_on_sleeping_server(self):
        deadline = h.scaled(1.0)
        # One request; the server sleeps 10 s before it would answer; no half-close.
        d = self.duplex(timeout=deadline)
        d.send(out_req([1], payload=27182, intervals=[10_000_000]))
        code, details, elapsed, extra = d.finish(deadline + STEP,
                                                 "timeout_on_sleeping_server")
        self.assertEqual(code, grpc.StatusCode.DEADLINE_EXCEEDED, details)
        self.assertEqual(extra, [])
        self.assertGreater(elapsed, deadline * 0.9)
        self.assertLess(elapsed, deadline + STEP)
        # The server was really sleeping on that request, and the call ended there too.
        rec = self.server_record(d.call_id, "timeout_on_sleeping_server")
        self.assertTrue(rec.ended.wait(STEP), "the server's call outlived the client's "
                                              "deadline by %.1fs (%s)" % (STEP, rec.describe()))
        self.assertEqual(rec.request_sizes, [27182], rec.describe())
        self.assertEqual(rec.responses_sent, 0)
        # The deadline travelled with the call (grpc-timeout passed on upstream).
        self.assertIsNotNone(rec.time_remaining, "the server got no deadline")
        self.assertLessEqual(rec.time_remaining, deadline + 0.1)  # grpc rounds it up

    # A deadline that expires mid-stream

    def test_deadline_expires_mid_stream(self):
        deadline = h.scaled(1.0)
        interval = h.scaled(0.2)
        count = 20  # 4 s of messages: the deadline comes after the fifth or so
        mc = self.channel.unary_stream(
            self.method("StreamingOutputCall"),
            request_serializer=pb.StreamingOutputCallRequest.SerializeToString,
            response_deserializer=pb.StreamingOutputCallResponse.FromString)
        call_id = uuid.uuid4().hex
        t0 = time.monotonic()
        call = mc(out_req(list(range(100, 100 + count)),
                          intervals=[0] + [int(interval * 1e6)] * (count - 1)),
                  metadata=[("x-test-call-id", call_id)], timeout=deadline)
        got, arrivals = [], []
        with self.assertRaises(grpc.RpcError) as cm:
            for r in call:
                got.append(len(r.payload.body))
                arrivals.append(time.monotonic() - t0)
        elapsed = time.monotonic() - t0
        self.assertEqual(cm.exception.code(), grpc.StatusCode.DEADLINE_EXCEEDED,
                         cm.exception.details())
        self.assertGreater(elapsed, deadline * 0.9)
        self.assertLess(elapsed, deadline + STEP)
        # The messages sent before the deadline arrived, in order, as they were sent.
        self.assertGreaterEqual(len(got), 2, "messages before the deadline: %r" % got)
        self.assertLess(len(got), count)
        self.assertEqual(got, list(range(100, 100 + len(got))))
        self.assertLess(arrivals[0], interval * 2,
                        "the first message arrived late (%.2fs): buffered?" % arrivals[0])
        rec = self.server_record(call_id, "deadline mid-stream")
        self.assertTrue(rec.ended.wait(STEP), "the server's call outlived the deadline (%s)"
                        % rec.describe())
        self.assertLess(rec.responses_sent, count)

    # custom_metadata

    def test_custom_metadata_unary(self):
        resp, call = self.unary(pb.SimpleRequest(response_size=314159,
                                                 payload=pb.Payload(body=zeros(271828))),
                                metadata=[CUSTOM_INITIAL, CUSTOM_TRAILING])
        self.assertEqual(call.code(), grpc.StatusCode.OK)
        self.assertEqual(len(resp.payload.body), 314159)
        self.assertIn(CUSTOM_INITIAL, list(call.initial_metadata()))
        self.assertIn(CUSTOM_TRAILING, list(call.trailing_metadata()))

    def test_custom_metadata_full_duplex(self):
        d = self.duplex(metadata=[CUSTOM_INITIAL, CUSTOM_TRAILING])
        d.send(out_req([314159], payload=271828))
        d.half_close()
        code, details, _, extra = d.finish(STEP, "custom_metadata on FullDuplexCall")
        self.assertEqual(code, grpc.StatusCode.OK, details)
        self.assertEqual(sizes(extra), [314159])
        self.assertIn(CUSTOM_INITIAL, list(d.call.initial_metadata()))
        self.assertIn(CUSTOM_TRAILING, list(d.call.trailing_metadata()))

    # status_code_and_message, special_status_message, a status with no message

    def test_status_code_and_message_unary(self):
        self.assertRpcError(
            lambda: self.unary(pb.SimpleRequest(
                response_status=pb.EchoStatus(code=2, message="test status message"))),
            grpc.StatusCode.UNKNOWN, "test status message")

    def test_status_code_and_message_full_duplex(self):
        d = self.duplex()
        d.send(out_req([], status=(2, "test status message")))
        d.half_close()
        code, details, _, extra = d.finish(STEP, "status_code_and_message on FullDuplexCall")
        self.assertEqual((code, details), (grpc.StatusCode.UNKNOWN, "test status message"))
        self.assertEqual(extra, [])

    def test_special_status_message(self):
        self.assertRpcError(
            lambda: self.unary(pb.SimpleRequest(
                response_status=pb.EchoStatus(code=2, message=SPECIAL_MESSAGE))),
            grpc.StatusCode.UNKNOWN, SPECIAL_MESSAGE)

    def test_status_without_message_unary(self):
        e = self.assertRpcError(
            lambda: self.unary(pb.SimpleRequest(response_status=pb.EchoStatus(code=5))),
            grpc.StatusCode.NOT_FOUND)
        self.assertFalse(e.details(), "details on a status sent without a message")

    def test_status_without_message_full_duplex(self):
        # One message, then the status: DATA then trailers without grpc-message.
        d = self.duplex()
        d.send(out_req([7]))
        d.send(out_req([], status=(5, "")))
        d.half_close()
        code, details, _, extra = d.finish(STEP, "a NOT_FOUND status without a message")
        self.assertEqual(code, grpc.StatusCode.NOT_FOUND, details)
        self.assertFalse(details, "details on a status sent without a message")
        self.assertEqual(sizes(extra), [7])

    def test_status_after_initial_metadata(self):
        # Extra case: initial metadata, then an error status, no message (HEADERS, then
        # trailers, no DATA): the client sees both the metadata and the status.
        # Repeated, like test_empty_stream_with_metadata.
        for _ in range(REPEAT):
            e = self.assertRpcError(
                lambda: self.unary(pb.SimpleRequest(response_status=pb.EchoStatus(
                    code=9, message="precondition failed")), metadata=[CUSTOM_INITIAL,
                                                                       CUSTOM_TRAILING]),
                grpc.StatusCode.FAILED_PRECONDITION, "precondition failed")
            self.assertIn(CUSTOM_INITIAL, list(e.initial_metadata()))
            self.assertIn(CUSTOM_TRAILING, list(e.trailing_metadata()))

    # unimplemented_method, unimplemented_service

    def test_unimplemented_method(self):
        mc = self.channel.unary_unary(self.method("UnimplementedCall"),
                                      request_serializer=pb.Empty.SerializeToString,
                                      response_deserializer=pb.Empty.FromString)
        self.assertRpcError(lambda: mc(pb.Empty(), timeout=CALL_DEADLINE),
                            grpc.StatusCode.UNIMPLEMENTED)

    def test_unimplemented_service(self):
        mc = self.channel.unary_unary("/grpc.testing.UnimplementedService/UnimplementedCall",
                                      request_serializer=pb.Empty.SerializeToString,
                                      response_deserializer=pb.Empty.FromString)
        self.assertRpcError(lambda: mc(pb.Empty(), timeout=CALL_DEADLINE),
                            grpc.StatusCode.UNIMPLEMENTED)

    # HalfDuplexCall: the answers come only after half-close (any proxy passes this one).

    def test_half_duplex(self):
        d = self.duplex("HalfDuplexCall")
        for n in (31415, 9):
            d.send(out_req([n], payload=10))
        d.half_close()
        code, details, _, extra = d.finish(STEP, "HalfDuplexCall")
        self.assertEqual(code, grpc.StatusCode.OK, details)
        self.assertEqual(sizes(extra), [31415, 9])


# The matrix: client -> Turnpike over h2c or TLS (ALPN h2), Turnpike -> server over h2c or h2
# with TLS; and the controls, straight to the server.

COMBINATIONS = {
    "DirectH2cControl": {"VIA_TURNPIKE": False},
    "DirectTlsControl": {"VIA_TURNPIKE": False, "CLIENT_TLS": True},
    "ClientH2cUpstreamH2c": {},
    "ClientH2cUpstreamTls": {"UPSTREAM_TLS": True},
    "ClientTlsUpstreamH2c": {"CLIENT_TLS": True},
    "ClientTlsUpstreamTls": {"CLIENT_TLS": True, "UPSTREAM_TLS": True},
}
CASES = sorted(n for n in dir(InteropCases) if n.startswith("test_"))


# ---------------------------------------------------------------------------------------------
# Process isolation
#
# Debian's grpcio 1.51 client dies of SIGILL (an abort in its C core) when a response ends --
# HEADERS with END_STREAM -- without grpc-status, which is what a client sees when a proxy loses
# the trailers. One such case would take the whole file down with it, and every other result.
# So by default each combination's cases run in a child process (this file with CHILD_ARG),
# which reports each case's start and outcome to a JSON-lines file; the parent turns those into
# its own test results. A child that dies (or hangs) marks the case it was in as failed, with
# the cause, and a new child runs the cases that are left. The parent also stops the Turnpike
# a dead child left behind (by PID) and removes its directories.
# TP_GRPC_INTEROP_INPROCESS=1 runs everything in one process instead (for a debugger).

CHILD_TIMEOUT = h.scaled(240)
SIGILL_NOTE = ("grpcio 1.51's client dies this way when a response ends (HEADERS with "
               "END_STREAM) without grpc-status, which is what it sees when a proxy loses the "
               "trailers")


def _tail(path, limit=4000):
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return text if len(text) <= limit else "...[%d bytes cut]...\n%s" % (
        len(text) - limit, text[-limit:])


def _alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _stop_orphan(pid):
    """Stops a Turnpike that a dead child started (checked by its command line first)."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            if not f.read().startswith(os.fsencode(h.TURNPIKE_BIN) + b"\0"):
                return
    except OSError:
        return
    for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.kill(pid, sig)
        except OSError:
            return
        end = time.monotonic() + wait
        while time.monotonic() < end:
            if not _alive(pid):
                return
            time.sleep(0.05)


def run_in_children(combination, names):
    """Runs the cases `names` of one combination in child processes; {name: outcome}."""
    results = {}
    remaining = list(names)
    while remaining:
        fd, events_path = tempfile.mkstemp(prefix="tp-grpc-interop-", suffix=".jsonl")
        os.close(fd)
        out_path = events_path + ".out"
        argv = [sys.executable, "-X", "faulthandler", os.path.abspath(__file__), CHILD_ARG,
                combination, events_path] + remaining
        with open(out_path, "wb") as out:
            child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                     stderr=subprocess.STDOUT)
            try:
                rc = child.wait(CHILD_TIMEOUT)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(10)
                rc = None
        events = []
        with open(events_path) as f:
            for line in f:
                if line.strip():
                    events.append(json.loads(line))
        running, pids, dirs = None, [], []
        for ev in events:
            if ev["event"] == "start":
                running = ev["test"]
            elif ev["event"] == "done":
                results[ev["test"]] = ev
                running = None
            elif ev["event"] == "pid":
                pids.append(ev["pid"])
            elif ev["event"] == "dirs":
                dirs += ev["dirs"]
        for pid in pids:  # only a child that died leaves its Turnpike running
            _stop_orphan(pid)
        output = _tail(out_path)
        if running is not None:
            if rc is None:
                why = "hung: the child process running it was killed after %.0fs" % (
                    CHILD_TIMEOUT)
            elif rc < 0:
                name = signal.Signals(-rc).name
                why = "the gRPC client's process died of %s during this case" % name
                if -rc == signal.SIGILL:
                    why += " (%s)" % SIGILL_NOTE
            else:
                why = "the child process exited (%s) during this case" % rc
            fatal = output.rfind("Fatal Python error")
            logs = ["[the child's last output]\n" + (output[fatal:] if fatal >= 0 else output)]
            for d in dirs:
                for fn in sorted(os.listdir(d)) if os.path.isdir(d) else ():
                    if "turnpike" in fn and fn.endswith((".stdout", ".stderr")):
                        logs.append("[%s]\n%s" % (fn, _tail(os.path.join(d, fn))))
            results[running] = {"status": "fail", "text": why, "logs": "\n".join(logs)}
        elif any(n not in results for n in remaining):
            for n in remaining:  # e.g. the child's setUpClass failed
                results.setdefault(n, {"status": "error", "logs": "",
                                       "text": "the child process (exit %s) gave no result:\n%s"
                                       % (rc, output)})
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)
        for p in (events_path, out_path):
            os.unlink(p)
        remaining = [n for n in remaining if n not in results]
    return results


class ChildError(Exception):
    """A case raised an error (not an assertion failure) in the child process."""


class IsolatedCombination(unittest.TestCase):
    """The parent's view of one combination: its cases ran in child processes."""

    COMBINATION = None
    _selected = None
    _results = None

    def __init__(self, methodName="runTest"):
        super().__init__(methodName)
        # The loader builds every case of the run before it runs any: so setUpClass knows
        # which cases were asked for.
        if methodName in CASES:
            type(self)._selected.add(methodName)

    @classmethod
    def setUpClass(cls):
        cls._results = run_in_children(cls.COMBINATION, sorted(cls._selected))

    def run(self, result=None):
        self._logs = None
        try:
            return super().run(result)
        finally:
            if self._logs:  # after the verdict, as the harness prints them
                logs = self._logs.strip()
                if not logs.startswith("===="):  # the harness's own, from the child
                    logs = "==== process logs for %s ====\n%s\n====" % (self.id(), logs)
                sys.stderr.write("\n%s\n" % logs)

    def _outcome_of(self, name):
        r = self._results.get(name)
        if r is None:
            self.fail("no outcome reported for %s" % name)
        if r["status"] == "pass":
            return
        self._logs = r.get("logs")
        if r["status"] == "skip":
            self.skipTest(r["text"])
        if r["status"] == "fail":
            self.fail("in the child process: " + r["text"])
        raise ChildError("in the child process: " + r["text"])


def _make_class(name):
    attrs = dict(COMBINATIONS[name])
    if not ISOLATED:
        return type(name, (InteropCases, h.TurnpikeCase), attrs)
    ns = {"COMBINATION": name, "_selected": set()}
    for case in CASES:
        ns[case] = (lambda case: lambda self: self._outcome_of(case))(case)
    return type(name, (IsolatedCombination,), ns)


for _name in COMBINATIONS:
    globals()[_name] = _make_class(_name)


def child_main(argv):
    """CHILD_ARG COMBINATION EVENTS_FILE CASE...: runs those cases in this process."""
    combination, events_path, names = argv[0], argv[1], argv[2:]
    cls = globals()[combination]
    cls.RESULTS = events_path
    suite = unittest.TestSuite(cls(n) for n in names)
    result = unittest.TextTestRunner(stream=sys.stderr, verbosity=2).run(suite)
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    if CHILD:
        sys.exit(child_main(sys.argv[2:]))
    unittest.main()
