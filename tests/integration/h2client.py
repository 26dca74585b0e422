"""A raw HTTP/2 client for tests that must send what well-behaved libraries refuse to: frames
built with hyperframe, header blocks encoded with hpack, no validation of our own. It reads
frames back one at a time so a test can assert the exact RST_STREAM or GOAWAY it gets."""

import socket
import ssl
import time

from hpack import Encoder, Decoder
from hyperframe.frame import (ContinuationFrame, DataFrame, Frame, GoAwayFrame, HeadersFrame,
                              PingFrame, RstStreamFrame, SettingsFrame, WindowUpdateFrame)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# RFC 9113 section 7 error codes.
NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
INTERNAL_ERROR = 0x2
FLOW_CONTROL_ERROR = 0x3
STREAM_CLOSED = 0x5
FRAME_SIZE_ERROR = 0x6
REFUSED_STREAM = 0x7
CANCEL = 0x8
COMPRESSION_ERROR = 0x9
ENHANCE_YOUR_CALM = 0xB


class Closed(Exception):
    pass


class RawH2:
    """One HTTP/2 connection. send_*() write frames; next_frame() returns the next one read."""

    def __init__(self, port, host="127.0.0.1", timeout=5, tls_context=None, server_name=None,
                 settings=None, preface=True):
        raw = socket.create_connection((host, port), timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls_context is not None:
            raw = tls_context.wrap_socket(raw, server_hostname=server_name)
        self.sock = raw
        self.sock.settimeout(timeout)
        self.buf = bytearray()
        self.enc = Encoder()
        self.dec = Decoder()
        self.never_indexed = {}  # stream id -> names its answer sent "never indexed"
        self.dec.max_allowed_table_size = 65536
        self.eof = False
        self.streams = {}
        self.stalled = set()  # stream ids whose window the client never reopens
        self.last_goaway = None
        if preface:
            self.sock.sendall(PREFACE + SettingsFrame(0, settings=settings or {}).serialize())

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- sending -------------------------------------------------------------------------

    def send(self, *frames):
        self.sock.sendall(b"".join(f if isinstance(f, bytes) else f.serialize() for f in frames))

    def block(self, headers):
        return self.enc.encode(headers)

    def request_headers(self, path="/", method="GET", authority="localhost", extra=()):
        return [(":method", method), (":scheme", "http"), (":authority", authority),
                (":path", path)] + list(extra)

    def send_headers(self, stream_id, headers, end_stream=True):
        flags = ["END_HEADERS"] + (["END_STREAM"] if end_stream else [])
        self.send(HeadersFrame(stream_id, self.block(headers), flags=flags))

    def send_data(self, stream_id, data, end_stream=False):
        self.send(DataFrame(stream_id, data, flags=["END_STREAM"] if end_stream else []))

    def get(self, stream_id, path, **kw):
        self.send_headers(stream_id, self.request_headers(path, **kw))

    # --- receiving -----------------------------------------------------------------------

    def _fill(self, n, deadline):
        while len(self.buf) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise socket.timeout("no frame before the deadline")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, ssl.SSLError) as e:
                raise Closed(str(e))
            if not chunk:
                self.eof = True
                raise Closed("connection closed")
            self.buf += chunk

    def next_frame(self, timeout=5):
        deadline = time.monotonic() + timeout
        self._fill(9, deadline)
        frame, length = Frame.parse_frame_header(memoryview(bytes(self.buf[:9])))
        self._fill(9 + length, deadline)
        frame.parse_body(memoryview(bytes(self.buf[9:9 + length])))
        del self.buf[:9 + length]
        return frame

    def frames_until(self, predicate, timeout=5):
        """Reads frames until predicate(frame) is true; returns (frame, all frames read).
        Acknowledges SETTINGS on the way. Raises Closed if the connection ends first."""
        seen = []
        deadline = time.monotonic() + timeout
        while True:
            f = self.next_frame(max(0.01, deadline - time.monotonic()))
            seen.append(f)
            if isinstance(f, SettingsFrame) and "ACK" not in f.flags:
                try:
                    self.send(SettingsFrame(0, flags=["ACK"]))
                except OSError:
                    pass
            if predicate(f):
                return f, seen

    def goaway(self, timeout=5):
        """Reads until a GOAWAY; returns it (or raises if the connection closes without one)."""
        f, _ = self.frames_until(lambda f: isinstance(f, GoAwayFrame), timeout)
        return f

    def closed_after_goaway(self, timeout=5):
        """After a GOAWAY, the server closes the connection: True once EOF is read."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                self.next_frame(max(0.01, deadline - time.monotonic()))
        except Closed:
            return True
        except socket.timeout:
            return False
        return False

    def _dispatch(self, f, window_updates=True):
        """Records a frame in self.streams (every HEADERS block is decoded, so the HPACK state
        stays in step whichever stream a test waits for)."""
        if isinstance(f, SettingsFrame) and "ACK" not in f.flags:
            self.send(SettingsFrame(0, flags=["ACK"]))
            return
        if isinstance(f, GoAwayFrame):
            self.last_goaway = f
            return
        if f.stream_id == 0:
            return
        st = self.streams.setdefault(f.stream_id, {"headers": None, "body": bytearray(),
                                                   "trailers": None, "rst": None,
                                                   "done": False})
        if isinstance(f, RstStreamFrame):
            st["rst"] = f.error_code
            st["done"] = True
            return
        if isinstance(f, (HeadersFrame, ContinuationFrame)):
            fields = self.dec.decode(f.data)
            decoded = {k.decode() if isinstance(k, bytes) else k:
                       v.decode() if isinstance(v, bytes) else v
                       for k, v in fields}
            # Names sent as "literal, never indexed" (RFC 7541 §6.2.3), for the HPACK tests.
            st.setdefault("never_indexed", set()).update(
                (t[0].decode() if isinstance(t[0], bytes) else t[0])
                for t in fields if not getattr(t, "indexable", True))
            if st["headers"] is None:
                st["headers"] = decoded
            else:
                st["trailers"] = decoded
        elif isinstance(f, DataFrame):
            st["body"] += f.data
            if window_updates and f.flow_controlled_length and f.stream_id not in self.stalled:
                self.send(WindowUpdateFrame(0, f.flow_controlled_length),
                          WindowUpdateFrame(f.stream_id, f.flow_controlled_length))
            elif f.flow_controlled_length:
                # A stalled stream: the connection window is still returned, so the other
                # streams keep flowing, but the stream's own window stays shut.
                self.send(WindowUpdateFrame(0, f.flow_controlled_length))
        if "END_STREAM" in f.flags:
            st["done"] = True

    def response(self, stream_id, timeout=5, window_updates=True):
        """Reads until one stream ends: (headers dict incl. ':status', body bytes, trailers,
        RST_STREAM error code or None). Frames of other streams are recorded on the way."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.streams.get(stream_id)
            if st and st["done"]:
                del self.streams[stream_id]
                self.never_indexed[stream_id] = st.get("never_indexed", set())
                return st["headers"], bytes(st["body"]), st["trailers"], st["rst"]
            f = self.next_frame(max(0.01, deadline - time.monotonic()))
            self._dispatch(f, window_updates)


__all__ = ["RawH2", "Closed", "PREFACE", "ContinuationFrame", "DataFrame", "GoAwayFrame",
           "HeadersFrame", "PingFrame", "RstStreamFrame", "SettingsFrame", "WindowUpdateFrame"]
