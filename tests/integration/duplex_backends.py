"""Peers for test_duplex.py: an HTTP/1.1 backend on raw sockets, an HTTP/2 backend on python3-h2,
and the matching downstream clients. Both backends run the same handlers, chosen by the request
path, and record what they saw of every request (a Record: head time, body pieces as they
arrived, trailers, HTTP/2 frames, when the peer went away), so a test can assert on timing and
framing from the backend's side.

Handlers (query parameters in brackets), named by the path's last segment that names one
(/via-h1/sse: sse; /head/chunked: head; none: ok):
  ok              read the body, answer 200 "ok"
  head            read the body, answer 200 "got N bytes"
  echo            answer 200 at once, echo every body piece as it arrives, end after the body
  early           answer 200 and "early\\n" at once, then read the body, then "received N bytes"
  trailers        read the body, answer "payload" then trailers x-checksum (of the request body)
                  and grpc-status 0
  trailers-only   read the body, answer a head and then trailers, no body at all (HTTP/2:
                  HEADERS then HEADERS+END_STREAM; HTTP/1.1: a chunked body with no data chunk)
  reject          [after=1048576, hold=10] read `after` body bytes, answer 413 (HTTP/1.1:
                  Connection: close, then FIN, then no more reading for `hold` seconds;
                  HTTP/2: END_STREAM then RST_STREAM NO_ERROR)
  slow            [delay=10] read the body, then wait `delay` seconds watching for the client to
                  go away (connection closed / stream reset); answer 200 if it did not
  sse             [events=60, interval=1] text/event-stream, one event per interval
  download        [bytes] a streamed (length-less) body of that many bytes of PATTERN
  stall           [after=1048576, hold=10] read `after` body bytes, then stop reading for `hold`s

The HTTP/2 peers do their socket I/O on one thread (select, non-blocking; safe with TLS) and
take data from the peer's flow-control window only as the handler (or test) reads it, so a
reader that stops really stops the sender.
"""

import collections
import hashlib
import select
import socket
import ssl
import threading
import time
import traceback
import urllib.parse

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from hyperframe.frame import Frame

PATTERN = bytes(ord("a") + i % 26 for i in range(256 * 1024))
BODY_KEEP = 4 * 1024 * 1024  # a Record keeps at most this much of the body itself
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


class Gone(Exception):
    """The peer went away (connection closed or reset, HTTP/2 stream reset)."""


class SendTimeout(AssertionError):
    """No HTTP/2 flow-control window opened in time; .sent bytes of the data went out."""

    def __init__(self, msg, sent):
        super().__init__(msg)
        self.sent = sent


# ---------------------------------------------------------------------------------------------
# What a backend saw


class Record:
    """One request as a backend saw it. Times are time.monotonic()."""

    def __init__(self, proto, method, path, headers, conn_id):
        self.proto = proto  # "http1" or "h2"
        self.method = method
        self.target = path
        self.path, _, query = path.partition("?")
        self.query = {k: v[-1] for k, v in urllib.parse.parse_qs(query).items()}
        self.headers = [(k.lower(), v) for k, v in headers]
        self.conn_id = conn_id
        self.t_head = time.monotonic()
        self.body = bytearray()  # the first BODY_KEEP bytes
        self.body_len = 0
        self.sha = hashlib.sha256()
        self.body_events = []  # (time, bytes) per piece as it arrived
        self.t_end = None  # request body complete
        self.trailers = None
        self.t_closed = None  # peer went away before the exchange finished
        self.how_closed = None
        self.reset_code = None  # HTTP/2: RST_STREAM error code received
        self.frames = []  # HTTP/2: (type, flags, length) of the frames received on the stream
        self.sent_events = []  # (time, what) the handler sent, e.g. SSE event ids
        self.sent_bytes = 0
        self.t_responded = None
        self.done = False  # handler finished
        self.error = None

    def header(self, name):
        vals = [v for k, v in self.headers if k == name.lower()]
        return ", ".join(vals) if vals else None

    def add_body(self, data):
        if len(self.body) < BODY_KEEP:
            self.body += data[:BODY_KEEP - len(self.body)]
        self.body_len += len(data)
        self.sha.update(data)
        self.body_events.append((time.monotonic(), len(data)))

    def frame_summary(self):
        return ["%s%s(%d)" % (t, "[" + ",".join(f) + "]" if f else "", n)
                for t, f, n in list(self.frames)]

    def __repr__(self):
        return ("<Record %s %s %s body=%d end=%s trailers=%s closed=%s(%s) reset=%s frames=%s>"
                % (self.proto, self.method, self.target, self.body_len, self.t_end is not None,
                   self.trailers, self.t_closed is not None, self.how_closed, self.reset_code,
                   self.frame_summary()[:12]))


class FrameLog:
    """Splits a received HTTP/2 byte stream into frame headers: (type, flags, length) per stream."""

    def __init__(self, skip=0):
        self.skip = skip
        self.buf = bytearray()
        self.by_stream = collections.defaultdict(list)

    def feed(self, data):
        self.buf += data
        if self.skip:
            n = min(self.skip, len(self.buf))
            del self.buf[:n]
            self.skip -= n
        while len(self.buf) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(bytes(self.buf[:9])))
            if len(self.buf) < 9 + length:
                break
            name = type(frame).__name__.replace("Frame", "").upper()
            name = {"WINDOWUPDATE": "WINDOW_UPDATE", "RSTSTREAM": "RST_STREAM",
                    "PUSHPROMISE": "PUSH_PROMISE", "GOAWAY": "GOAWAY"}.get(name, name)
            flags = tuple(sorted(f for f in frame.flags))
            self.by_stream[frame.stream_id].append((name, flags, length))
            del self.buf[:9 + length]


# ---------------------------------------------------------------------------------------------
# Handlers (shared by both backends through the Exchange interface)


def _int(rec, name, default):
    return int(rec.query.get(name, default))


def _float(rec, name, default):
    return float(rec.query.get(name, default))


def h_ok(x):
    x.read_all()
    x.respond(200, [("content-type", "text/plain")], body=b"ok")


def h_head(x):
    x.read_all()
    x.respond(200, [("content-type", "text/plain")], body=b"got %d bytes" % x.rec.body_len)


def h_echo(x):
    x.respond(200, [("content-type", "application/octet-stream")])
    while True:
        piece = x.read()
        if not piece:
            break
        x.send(piece)
    x.end()


def h_early(x):
    x.respond(200, [("content-type", "text/plain")])
    x.send(b"early\n")
    x.read_all()
    x.send(b"received %d bytes\n" % x.rec.body_len)
    x.end()


def h_trailers(x):
    x.read_all()
    x.respond(200, [("content-type", "text/plain")])
    x.send(b"payload")
    x.end([("x-checksum", x.rec.sha.hexdigest()), ("grpc-status", "0")])


def h_trailers_only(x):
    x.read_all()
    x.respond(200, [("content-type", "application/grpc")])
    x.end([("grpc-status", "0"), ("grpc-message", "all-good")])


def h_reject(x):
    after = _int(x.rec, "after", 1 << 20)
    while x.rec.body_len < after:
        if not x.read():
            break
    x.reject(413, b"request body too large\n", hold=_float(x.rec, "hold", 10))


def h_slow(x):
    x.read_all()
    if not x.watch_close(_float(x.rec, "delay", 10)):
        x.respond(200, [("content-type", "text/plain")], body=b"slow done")


def h_sse(x):
    events = _int(x.rec, "events", 60)
    interval = _float(x.rec, "interval", 1.0)
    x.read_all()
    x.respond(200, [("content-type", "text/event-stream"), ("cache-control", "no-cache")])
    start = time.monotonic()
    for i in range(events):
        delay = start + i * interval - time.monotonic()
        if delay > 0 and x.sleep(delay):
            return
        x.rec.sent_events.append((time.monotonic(), i))
        x.send(b"id: %d\nevent: tick\ndata: {\"n\": %d}\n\n" % (i, i))
    x.end()


def h_download(x):
    total = _int(x.rec, "bytes", 1 << 20)
    x.read_all()
    x.respond(200, [("content-type", "application/octet-stream")])
    left = total
    while left > 0:
        piece = PATTERN if left >= len(PATTERN) else PATTERN[:left]
        x.send(piece)
        left -= len(piece)
        x.rec.sent_bytes += len(piece)
    x.end()


def h_stall(x):
    after = _int(x.rec, "after", 1 << 20)
    while x.rec.body_len < after:
        if not x.read():
            break
    x.rec.sent_events.append((time.monotonic(), "stalled"))
    x.sleep(_float(x.rec, "hold", 10))
    x.abort()


HANDLERS = {"ok": h_ok, "head": h_head, "echo": h_echo, "early": h_early, "trailers": h_trailers,
            "trailers-only": h_trailers_only, "reject": h_reject, "slow": h_slow, "sse": h_sse,
            "download": h_download, "stall": h_stall}


def handler_for(path):
    """The handler named by the path's last segment that names one (/head/chunked: head)."""
    for name in reversed(path.split("?", 1)[0].split("/")):
        if name in HANDLERS:
            return HANDLERS[name]
    return h_ok


# ---------------------------------------------------------------------------------------------
# Backend base


class Backend:
    """A listening socket on 127.0.0.1:0 and a thread per connection. Subclasses serve one."""

    proto = None

    def __init__(self, label=None):
        self.label = label or self.proto
        self.cond = threading.Condition()
        self.records = []
        self.errors = []
        self.connections = 0
        self.stopping = threading.Event()
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(128)
        self.port = self.lsock.getsockname()[1]
        self.addr = "127.0.0.1:%d" % self.port
        self._socks = []
        self._threads = []
        t = threading.Thread(target=self._accept_loop, daemon=True, name="%s-accept" % self.label)
        t.start()
        self._threads.append(t)

    def _accept_loop(self):
        while not self.stopping.is_set():
            try:
                sock, _ = self.lsock.accept()
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.cond:
                self.connections += 1
                cid = self.connections
                self._socks.append(sock)
            self.spawn(self._serve_safely, sock, cid, name="%s-conn%d" % (self.label, cid))

    def spawn(self, fn, *args, name=None):
        t = threading.Thread(target=fn, args=args, daemon=True, name=name)
        t.start()
        with self.cond:
            self._threads.append(t)
        return t

    def _serve_safely(self, sock, cid):
        try:
            self.serve(sock, cid)
        except Exception:  # a backend bug must show in the test's output, not vanish
            self.error(traceback.format_exc())
        finally:
            try:
                sock.close()
            except OSError:
                pass

    def error(self, text):
        with self.cond:
            self.errors.append(text)
            self.cond.notify_all()

    def add_record(self, rec):
        with self.cond:
            self.records.append(rec)
            self.cond.notify_all()

    def changed(self):
        with self.cond:
            self.cond.notify_all()

    def run_handler(self, x):
        try:
            handler_for(x.rec.target)(x)
        except Gone as e:
            x.mark_closed(str(e) or "gone")
        except Exception:
            x.rec.error = traceback.format_exc()
            self.error(x.rec.error)
            try:
                x.abort()
            except Exception:
                pass
        finally:
            x.rec.done = True
            self.changed()

    # --- what tests call -------------------------------------------------------------------

    def wait(self, predicate, timeout, what="condition"):
        """Waits until predicate() is truthy (re-checked whenever the backend records
        something); returns its value, or raises AssertionError naming `what`."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                value = predicate()
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("%s backend: timed out after %.1fs waiting for %s; "
                                         "records: %r%s"
                                         % (self.label, timeout, what, self.records[-4:],
                                            "; errors: %s" % self.errors if self.errors else ""))
                self.cond.wait(min(left, 0.1))

    def find(self, path_part, n=1):
        """The n-th record (1-based) whose path contains path_part, or None."""
        with self.cond:
            found = [r for r in self.records if path_part in r.path]
            return found[n - 1] if len(found) >= n else None

    def wait_record(self, path_part, timeout, n=1, what=None):
        return self.wait(lambda: self.find(path_part, n), timeout,
                         what or "the request head of %s" % path_part)

    def describe(self):
        with self.cond:
            lines = ["--- %s backend on %s: %d connections, %d requests"
                     % (self.label, self.addr, self.connections, len(self.records))]
            lines += ["  %r" % r for r in self.records[-10:]]
            lines += ["  ERROR: %s" % e for e in self.errors]
        return "\n".join(lines)

    def stop(self):
        self.stopping.set()
        try:
            self.lsock.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone does not)
        except OSError:
            pass
        try:
            self.lsock.close()
        except OSError:
            pass
        with self.cond:
            socks = list(self._socks)
            threads = list(self._threads)
            self.cond.notify_all()
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + 3
        for t in threads:
            t.join(max(0.01, deadline - time.monotonic()))


class _ExchangeBase:
    def __init__(self, backend, rec):
        self.backend = backend
        self.rec = rec

    def read_all(self):
        while self.read():
            pass

    def sleep(self, seconds):
        """Sleeps; True when the backend is stopping (the handler should return)."""
        return self.backend.stopping.wait(seconds)

    def mark_closed(self, how):
        with self.backend.cond:
            if self.rec.t_closed is None and not self.rec.done:
                self.rec.t_closed = time.monotonic()
                self.rec.how_closed = how
            self.backend.cond.notify_all()


# ---------------------------------------------------------------------------------------------
# HTTP/1.1 backend (raw sockets)


class _Reader:
    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()
        self.eof = None  # None, or how the connection ended ("EOF", "reset")

    def fill(self):
        if self.eof:
            raise Gone(self.eof)
        try:
            data = self.sock.recv(1 << 18)
        except ConnectionResetError:
            data, self.eof = b"", "reset"
        except socket.timeout:
            raise Gone("backend read timeout")
        except OSError as e:
            data, self.eof = b"", "error %s" % e
        if not data:
            self.eof = self.eof or "EOF"
            raise Gone(self.eof)
        self.buf += data

    def line(self):
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = bytes(self.buf[:i + 1])
                del self.buf[:i + 1]
                return line.rstrip(b"\r\n").decode("latin-1")
            if len(self.buf) > 1 << 20:
                raise Gone("line too long")
            self.fill()

    def some(self, limit):
        if not self.buf:
            self.fill()
        data = bytes(self.buf[:limit])
        del self.buf[:len(data)]
        return data


class H1Exchange(_ExchangeBase):
    def __init__(self, backend, rec, sock, reader):
        super().__init__(backend, rec)
        self.sock = sock
        self.r = reader
        te = (rec.header("transfer-encoding") or "").lower()
        cl = rec.header("content-length")
        self.chunked = "chunked" in te
        self.left = None if self.chunked else int(cl or 0)  # CL bytes still to come
        self.chunk_left = 0
        self.body_done = not self.chunked and self.left == 0
        if self.body_done:
            rec.t_end = rec.t_head
        self.resp_chunked = False
        self.resp_started = False
        self.resp_done = False
        self.close_after = False

    # --- request body ---

    def _piece(self):
        if self.body_done:
            return b""
        if not self.chunked:
            data = self.r.some(min(self.left, 1 << 18))
            self.left -= len(data)
            if self.left == 0:
                self.body_done = True
            return data
        if self.chunk_left == 0:
            size_line = self.r.line()
            size = int(size_line.split(";", 1)[0].strip() or "0", 16)
            if size == 0:
                trailers = []
                while True:
                    line = self.r.line()
                    if line == "":
                        break
                    k, _, v = line.partition(":")
                    trailers.append((k.strip().lower(), v.strip()))
                self.rec.trailers = trailers or None
                self.body_done = True
                return b""
            self.chunk_left = size
        data = self.r.some(min(self.chunk_left, 1 << 18))
        self.chunk_left -= len(data)
        if self.chunk_left == 0:
            if self.r.line() != "":
                raise Gone("chunk not followed by CRLF")
        return data

    def read(self):
        """The next piece of request body as it arrives; b"" at its end."""
        try:
            data = self._piece()
        except Gone as e:
            self.mark_closed(str(e))
            raise
        with self.backend.cond:
            if data:
                self.rec.add_body(data)
            elif self.rec.t_end is None:
                self.rec.t_end = time.monotonic()
            self.backend.cond.notify_all()
        if not data and not self.body_done:
            return self.read()
        return data

    # --- response ---

    def _send(self, data):
        try:
            self.sock.sendall(data)
        except OSError as e:
            self.mark_closed("send failed: %s" % e)
            raise Gone("send failed: %s" % e)

    def respond(self, status, headers=(), body=None, close=False):
        lines = ["HTTP/1.1 %d %s" % (status, {200: "OK", 413: "Payload Too Large"}.get(
            status, "Status"))]
        lines += ["%s: %s" % (k, v) for k, v in headers]
        if body is not None:
            lines.append("Content-Length: %d" % len(body))
        else:
            lines.append("Transfer-Encoding: chunked")
            self.resp_chunked = True
        if close:
            lines.append("Connection: close")
            self.close_after = True
        self.resp_started = True
        with self.backend.cond:
            self.rec.t_responded = time.monotonic()
        self._send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b""))
        if body is not None:
            self.resp_done = True

    def send(self, data):
        if data:
            self._send(b"%x\r\n%s\r\n" % (len(data), data))

    def end(self, trailers=None):
        tail = "".join("%s: %s\r\n" % (k, v) for k, v in (trailers or ()))
        self._send(b"0\r\n" + tail.encode("latin-1") + b"\r\n")
        self.resp_done = True

    def reject(self, status, body, hold):
        self.respond(status, [("content-type", "text/plain")], body=body, close=True)
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        # No more reading: a backend that refused an upload does not swallow the rest of it.
        self.sleep(hold)
        self.abort()

    def watch_close(self, timeout):
        """True when the client side closed (EOF or reset) within timeout; keeps any bytes."""
        deadline = time.monotonic() + timeout
        while not self.backend.stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            r, _, _ = select.select([self.sock], [], [], min(left, 0.1))
            if r:
                try:
                    self.r.fill()
                except Gone as e:
                    self.mark_closed(str(e))
                    return True
        return False

    def abort(self):
        self.close_after = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class H1Backend(Backend):
    proto = "http1"

    def serve(self, sock, cid):
        sock.settimeout(120)
        reader = _Reader(sock)
        while not self.stopping.is_set():
            try:
                line = reader.line()
                while line == "":
                    line = reader.line()
                method, target, _ = line.split(" ", 2)
                headers = []
                while True:
                    hl = reader.line()
                    if hl == "":
                        break
                    k, _, v = hl.partition(":")
                    headers.append((k.strip(), v.strip()))
            except Gone:
                return  # idle keep-alive connection closed
            rec = Record("http1", method, target, headers, cid)
            self.add_record(rec)
            x = H1Exchange(self, rec, sock, reader)
            self.run_handler(x)
            if x.close_after or not x.resp_done or rec.t_closed is not None:
                return
            if not x.body_done:  # the handler answered without reading it all
                return
            if (rec.header("connection") or "").lower() == "close":
                return


# ---------------------------------------------------------------------------------------------
# HTTP/2 plumbing shared by the backend and the client


class _H2Stream:
    def __init__(self, sid):
        self.sid = sid
        self.inbox = collections.deque()  # (data, flow-controlled length)
        self.ended = False  # remote END_STREAM
        self.gone = None  # why the stream can no longer be used
        self.headers = None
        self.t_headers = None
        self.trailers = None
        self.reset_code = None
        self.informational = []


class H2Peer:
    """One HTTP/2 connection: an I/O thread (select on the socket, non-blocking, so TLS is
    safe), the h2 state machine under self.cond, and stream helpers any thread may call."""

    def __init__(self, sock, client_side, cond=None, name="h2", settings=None,
                 connection_window=None):
        self.sock = sock
        self.cond = cond or threading.Condition()
        cfg = h2.config.H2Configuration(client_side=client_side, header_encoding="utf-8",
                                        validate_inbound_headers=True)
        self.conn = h2.connection.H2Connection(config=cfg)
        self.frames = FrameLog(skip=0 if client_side else len(PREFACE))
        self.streams = {}
        self.closed = None
        self.goaway = None
        self.errors = []
        self.out = bytearray()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        with self.cond:
            if settings:
                self.conn.local_settings = h2.settings.Settings(client=client_side,
                                                                initial_values=settings)
            self.conn.initiate_connection()
            if connection_window:
                self.conn.increment_flow_control_window(connection_window)
            self._flush()
        self.sock.setblocking(False)
        self.thread = threading.Thread(target=self._io_loop, daemon=True, name=name)

    def start(self):
        self.thread.start()
        return self

    # --- I/O thread ------------------------------------------------------------------------

    def _flush(self):  # with self.cond held
        data = self.conn.data_to_send()
        if data:
            self.out += data
            try:
                self._wake_w.send(b"x")
            except OSError:
                pass

    def _io_loop(self):
        try:
            while self.closed is None:
                with self.cond:
                    want_write = bool(self.out)
                pending = isinstance(self.sock, ssl.SSLSocket) and self.sock.pending()
                if pending:
                    r, w = [self.sock], []
                else:
                    r, w, _ = select.select([self.sock, self._wake_r],
                                            [self.sock] if want_write else [], [], 0.5)
                if self._wake_r in r:
                    try:
                        self._wake_r.recv(4096)
                    except OSError:
                        pass
                if self.sock in r:
                    try:
                        data = self.sock.recv(1 << 17)
                    except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                        data = None
                    except (ConnectionResetError, OSError) as e:
                        self._close("reset: %s" % e)
                        break
                    if data == b"":
                        self._close("EOF")
                        break
                    if data:
                        self._received(data)
                if self.sock in w:
                    with self.cond:
                        chunk = bytes(self.out[:1 << 17])
                    try:
                        n = self.sock.send(chunk)
                    except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                        n = 0
                    except OSError as e:
                        self._close("send failed: %s" % e)
                        break
                    with self.cond:
                        del self.out[:n]
        except Exception:
            if self.closed is None:
                self.errors.append(traceback.format_exc())
            self._close("I/O thread failed")
        finally:
            for s in (self.sock, self._wake_r, self._wake_w):
                try:
                    s.close()
                except OSError:
                    pass

    def _received(self, data):
        self.frames.feed(data)
        with self.cond:
            try:
                events = self.conn.receive_data(data)
            except h2.exceptions.ProtocolError as e:
                self.errors.append("protocol error from peer: %r" % e)
                self._flush()
                self.cond.notify_all()
                return
            for ev in events:
                self._event(ev)
            self._flush()
            self.cond.notify_all()

    def _stream(self, sid):
        st = self.streams.get(sid)
        if st is None:
            st = self.streams[sid] = _H2Stream(sid)
        return st

    def _event(self, ev):  # with self.cond held
        if isinstance(ev, h2.events.DataReceived):
            st = self._stream(ev.stream_id)
            if ev.data or ev.flow_controlled_length:
                st.inbox.append((ev.data, ev.flow_controlled_length))
        elif isinstance(ev, h2.events.StreamEnded):
            self._stream(ev.stream_id).ended = True
        elif isinstance(ev, h2.events.TrailersReceived):
            self._stream(ev.stream_id).trailers = list(ev.headers)
        elif isinstance(ev, h2.events.StreamReset):
            st = self._stream(ev.stream_id)
            st.reset_code = ev.error_code
            st.gone = st.gone or "RST_STREAM %s" % ev.error_code
            self._discard(st)
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.goaway = ev.error_code
        elif isinstance(ev, (h2.events.ResponseReceived, h2.events.RequestReceived)):
            st = self._stream(ev.stream_id)
            st.headers = list(ev.headers)
            st.t_headers = time.monotonic()
        elif isinstance(ev, h2.events.InformationalResponseReceived):
            self._stream(ev.stream_id).informational.append(list(ev.headers))
        self.on_event(ev)

    def on_event(self, ev):  # with self.cond held; for subclasses
        pass

    def _discard(self, st):  # with self.cond held
        """A reset stream gives the credit of its unread DATA back to the connection window,
        so the connection's other streams keep flowing. (The data stays readable: a complete
        response may be followed by RST_STREAM NO_ERROR.)"""
        kept = collections.deque()
        while st.inbox:
            data, flen = st.inbox.popleft()
            if flen:
                self.conn.acknowledge_received_data(flen, st.sid)
            kept.append((data, 0))
        st.inbox = kept
        self._flush()

    def _close(self, how):
        with self.cond:
            if self.closed is None:
                self.closed = how
            for st in self.streams.values():
                if not st.gone:
                    st.gone = "connection closed (%s)" % how
            self.on_close(how)
            self.cond.notify_all()
        try:  # the I/O thread closes the socket; shutdown (and the wake-up) end its select
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    def on_close(self, how):  # with self.cond held
        pass

    def close(self):
        self._close("closed locally")
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(2)
        elif not self.thread.is_alive():
            try:
                self.sock.close()
            except OSError:
                pass

    # --- stream operations (any thread) ----------------------------------------------------

    def wait_until(self, predicate, deadline, what):
        with self.cond:
            while True:
                value = predicate()
                if value:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("HTTP/2: timed out waiting for %s" % what)
                self.cond.wait(min(left, 0.1))

    def send_headers(self, sid, headers, end_stream=False):
        with self.cond:
            if self.closed:
                raise Gone("connection closed (%s)" % self.closed)
            self.conn.send_headers(sid, headers, end_stream=end_stream)
            self._flush()

    def send_data(self, sid, data, end_stream=False, timeout=60, stop=None):
        """Sends as the peer's flow-control windows allow. Raises Gone if the stream is reset
        or the connection closes; AssertionError if no window opened within timeout."""
        view = memoryview(bytes(data))
        total = len(view)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                st = self.streams.get(sid)
                if st is not None and st.gone:
                    raise Gone(st.gone)
                if self.closed:
                    raise Gone("connection closed (%s)" % self.closed)
                if not view:
                    if end_stream:
                        self.conn.end_stream(sid)
                        self._flush()
                    return
                try:
                    window = self.conn.local_flow_control_window(sid)
                except h2.exceptions.StreamClosedError:
                    raise Gone("stream closed")
                if window <= 0 or len(self.out) > 1 << 20:
                    if stop is not None and stop.is_set():
                        raise Gone("stopped")
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise SendTimeout("HTTP/2: no flow-control window to send on stream "
                                          "%d for %.1fs" % (sid, timeout), total - len(view))
                    self.cond.wait(min(left, 0.1))
                    continue
                n = min(window, self.conn.max_outbound_frame_size, len(view))
                last = end_stream and n == len(view)
                try:
                    self.conn.send_data(sid, view[:n].tobytes(), end_stream=last)
                except h2.exceptions.StreamClosedError:
                    raise Gone("stream closed")
                self._flush()
                view = view[n:]
                if last:
                    return

    def end_stream(self, sid):
        with self.cond:
            self.conn.end_stream(sid)
            self._flush()

    def reset(self, sid, code=h2.errors.ErrorCodes.CANCEL):
        with self.cond:
            try:
                self.conn.reset_stream(sid, code)
            except h2.exceptions.StreamClosedError:
                pass
            st = self._stream(sid)
            if not st.gone:
                st.gone = "reset locally"
            self._discard(st)

    def read(self, sid, timeout=60, ack=True):
        """Next piece of DATA received on sid (and hands its flow-control credit back), b""
        at END_STREAM; raises Gone if the stream is reset or the connection closes first."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                st = self._stream(sid)
                while st.inbox:
                    data, flen = st.inbox.popleft()
                    if ack and flen:
                        self.conn.acknowledge_received_data(flen, sid)
                        self._flush()
                    if data:
                        return data
                if st.ended:
                    return b""
                if st.gone:
                    raise Gone(st.gone)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("HTTP/2: timed out reading stream %d" % sid)
                self.cond.wait(min(left, 0.1))


# ---------------------------------------------------------------------------------------------
# HTTP/2 backend


class H2Exchange(_ExchangeBase):
    def __init__(self, backend, rec, peer, sid):
        super().__init__(backend, rec)
        self.peer = peer
        self.sid = sid

    def read(self):
        try:
            data = self.peer.read(self.sid, timeout=120)
        except Gone as e:
            self.mark_closed(str(e))
            raise
        with self.backend.cond:
            if data:
                self.rec.add_body(data)
            elif self.rec.t_end is None:
                self.rec.t_end = time.monotonic()
            self.backend.cond.notify_all()
        return data

    def respond(self, status, headers=(), body=None):
        hdrs = [(":status", str(status))] + list(headers)
        with self.backend.cond:
            self.rec.t_responded = time.monotonic()
        if body is None:
            self.peer.send_headers(self.sid, hdrs)
        elif body:
            self.peer.send_headers(self.sid, hdrs + [("content-length", str(len(body)))])
            self.peer.send_data(self.sid, body, end_stream=True)
        else:
            self.peer.send_headers(self.sid, hdrs, end_stream=True)

    def send(self, data):
        try:
            self.peer.send_data(self.sid, data, timeout=120, stop=self.backend.stopping)
        except AssertionError as e:
            raise Gone(str(e))

    def end(self, trailers=None):
        if trailers:
            self.peer.send_headers(self.sid, list(trailers), end_stream=True)
        else:
            self.peer.send_data(self.sid, b"", end_stream=True)

    def reject(self, status, body, hold):
        self.respond(status, [("content-type", "text/plain")], body=body)
        # RFC 9113 8.1: a complete response before the request is complete, then NO_ERROR.
        self.peer.reset(self.sid, h2.errors.ErrorCodes.NO_ERROR)

    def watch_close(self, timeout):
        st = self.peer.streams[self.sid]
        deadline = time.monotonic() + timeout
        with self.peer.cond:
            while not st.gone and not self.backend.stopping.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.peer.cond.wait(min(left, 0.1))
        if st.gone:
            self.mark_closed(st.gone)
            return True
        return False

    def abort(self):
        self.peer.reset(self.sid, h2.errors.ErrorCodes.CANCEL)


class _BackendPeer(H2Peer):
    def __init__(self, backend, sock, cid):
        self.backend = backend
        self.cid = cid
        self.records = {}
        super().__init__(sock, client_side=False, cond=backend.cond, name="h2b-%d" % cid,
                         settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 256 * 1024},
                         connection_window=16 << 20)

    def on_event(self, ev):
        sid = getattr(ev, "stream_id", None)
        rec = self.records.get(sid)
        if isinstance(ev, h2.events.RequestReceived):
            hdrs = dict(ev.headers)
            rec = Record("h2", hdrs.get(":method"), hdrs.get(":path"), ev.headers, self.cid)
            rec.frames = self.frames.by_stream[ev.stream_id]
            self.records[ev.stream_id] = rec
            self.backend.records.append(rec)
            self.backend.spawn(self.backend.run_handler, H2Exchange(self.backend, rec, self,
                                                                    ev.stream_id),
                               name="h2b-%d-s%d" % (self.cid, ev.stream_id))
        elif rec is not None and isinstance(ev, h2.events.TrailersReceived):
            rec.trailers = [(k.lower(), v) for k, v in ev.headers]
        elif rec is not None and isinstance(ev, h2.events.StreamReset):
            rec.reset_code = ev.error_code
            if rec.t_closed is None and not rec.done:
                rec.t_closed = time.monotonic()
                rec.how_closed = "RST_STREAM %s" % ev.error_code

    def on_close(self, how):
        now = time.monotonic()
        for rec in self.records.values():
            if rec.t_closed is None and not rec.done:
                rec.t_closed = now
                rec.how_closed = "connection closed (%s)" % how


class H2Backend(Backend):
    """HTTP/2 with prior knowledge (h2c), or over TLS with ALPN h2 when given cert and key."""

    proto = "h2"

    def __init__(self, label=None, cert=None, key=None):
        self.tls = None
        if cert:
            self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.tls.load_cert_chain(cert, key)
            self.tls.set_alpn_protocols(["h2"])
        super().__init__(label or ("h2-tls" if cert else "h2c"))

    def serve(self, sock, cid):
        if self.tls is not None:
            sock.settimeout(10)
            sock = self.tls.wrap_socket(sock, server_side=True)
            if sock.selected_alpn_protocol() != "h2":
                self.error("connection %d: ALPN chose %r, not h2"
                           % (cid, sock.selected_alpn_protocol()))
                return
        peer = _BackendPeer(self, sock, cid).start()
        while peer.closed is None and not self.stopping.is_set():
            peer.thread.join(0.2)
        if peer.errors:
            self.error("connection %d: %s" % (cid, "; ".join(peer.errors)))
        peer.close()


# ---------------------------------------------------------------------------------------------
# Downstream clients: one request at a time, the same interface for HTTP/1.1 and HTTP/2


def tls_client_context(ca_file, alpn):
    ctx = ssl.create_default_context(cafile=ca_file)
    ctx.set_alpn_protocols([alpn])
    return ctx


class H1Client:
    """A raw-socket HTTP/1.1 client (optionally TLS) with incremental reads."""

    proto = "http1"

    def __init__(self, port, tls=None, server_name=None, timeout=5):
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            raw = tls.wrap_socket(raw, server_hostname=server_name)
            assert raw.selected_alpn_protocol() in (None, "http/1.1"), \
                raw.selected_alpn_protocol()
        self.sock = raw
        self.buf = bytearray()
        self.eof = None
        self.chunked_req = False
        self.status = None
        self.headers = None
        self.trailers = None
        self._mode = None
        self._left = 0
        self._body_done = False

    # --- request ---

    def open(self, method, path, headers=(), length=None, body_follows=True):
        """Sends a request head: chunked when a body follows and no length is given."""
        lines = ["%s %s HTTP/1.1" % (method, path), "Host: localhost"]
        lines += ["%s: %s" % (k, v) for k, v in headers]
        self.chunked_req = body_follows and length is None
        if self.chunked_req:
            lines.append("Transfer-Encoding: chunked")
        elif length is not None:
            lines.append("Content-Length: %d" % length)
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        return self

    def send(self, data, timeout=None):
        if self.chunked_req:
            if data:
                self.sock.sendall(b"%x\r\n%s\r\n" % (len(data), data))
        else:
            self.sock.sendall(data)

    def finish(self, trailers=None):
        if self.chunked_req:
            tail = "".join("%s: %s\r\n" % (k, v) for k, v in (trailers or ()))
            self.sock.sendall(b"0\r\n" + tail.encode("latin-1") + b"\r\n")

    # --- response ---

    def _fill(self, deadline):
        if self.eof:
            raise Gone(self.eof)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout()
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(1 << 18)
                break
            except socket.timeout:
                continue  # re-checks the deadline (a sender thread may have set the timeout)
            except ConnectionResetError:
                data, self.eof = b"", "reset"
                break
        if not data:
            self.eof = self.eof or "EOF"
            raise Gone(self.eof)
        self.buf += data

    def _line(self, deadline):
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = bytes(self.buf[:i + 1])
                del self.buf[:i + 1]
                return line.rstrip(b"\r\n").decode("latin-1")
            self._fill(deadline)

    def head(self, timeout):
        """(status, [(name, value)]) of the final response. AssertionError on timeout,
        Gone if the connection ends first."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                line = self._line(deadline)
                while line == "":
                    line = self._line(deadline)
                status = int(line.split(" ", 2)[1])
                headers = []
                while True:
                    hl = self._line(deadline)
                    if hl == "":
                        break
                    k, _, v = hl.partition(":")
                    headers.append((k.strip().lower(), v.strip()))
                if 100 <= status < 200:
                    continue
                break
        except socket.timeout:
            raise AssertionError("no response head within %.1fs" % timeout)
        self.status, self.headers = status, headers
        self.trailers = None
        self._left = 0
        self._body_done = False
        hd = dict(headers)
        if "chunked" in hd.get("transfer-encoding", "").lower():
            self._mode = "chunked"
        elif "content-length" in hd:
            self._mode, self._left = "length", int(hd["content-length"])
            self._body_done = self._left == 0
        else:
            self._mode = "close"
        return status, headers

    def read_some(self, timeout):
        """Next piece of response body (as it arrives), or None at its end."""
        deadline = time.monotonic() + timeout
        try:
            return self._read_some(deadline)
        except socket.timeout:
            raise AssertionError("no response body bytes within %.1fs" % timeout)

    def _read_some(self, deadline):
        if self._body_done:
            return None
        if self._mode == "length":
            if not self.buf:
                self._fill(deadline)
            data = bytes(self.buf[:self._left])
            del self.buf[:len(data)]
            self._left -= len(data)
            self._body_done = self._left == 0
            return data
        if self._mode == "close":
            if not self.buf:
                try:
                    self._fill(deadline)
                except Gone:
                    self._body_done = True
                    return None
            data = bytes(self.buf)
            self.buf.clear()
            return data
        if self._left == 0:
            size = int(self._line(deadline).split(";", 1)[0].strip(), 16)
            if size == 0:
                trailers = []
                while True:
                    line = self._line(deadline)
                    if line == "":
                        break
                    k, _, v = line.partition(":")
                    trailers.append((k.strip().lower(), v.strip()))
                self.trailers = trailers
                self._body_done = True
                return None
            self._left = size
        if not self.buf:
            self._fill(deadline)
        data = bytes(self.buf[:self._left])
        del self.buf[:len(data)]
        self._left -= len(data)
        if self._left == 0:
            if self._line(deadline) != "":
                raise Gone("chunk not followed by CRLF")
        return data

    def read_at_least(self, n, timeout):
        """Reads body until at least n bytes; returns them (fewer only if the body ended)."""
        deadline = time.monotonic() + timeout
        out = bytearray()
        while len(out) < n:
            piece = self.read_some(max(0.001, deadline - time.monotonic()))
            if piece is None:
                break
            out += piece
        return bytes(out)

    def read_all(self, timeout):
        deadline = time.monotonic() + timeout
        out = bytearray()
        while True:
            piece = self.read_some(max(0.001, deadline - time.monotonic()))
            if piece is None:
                return bytes(out)
            out += piece

    def disconnect(self):
        self.close()

    def close(self):
        try:  # shutdown first: it also wakes a sender blocked in another thread
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.sock.close()
        except OSError:
            pass


class H2Client:
    """An HTTP/2 client on python3-h2 (prior knowledge, or TLS with ALPN h2); one request at a
    time through the same interface as H1Client, more through the H2Peer underneath."""

    proto = "h2"

    def __init__(self, port, tls=None, server_name=None, timeout=5, window=1 << 20):
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            raw = tls.wrap_socket(raw, server_hostname=server_name)
            assert raw.selected_alpn_protocol() == "h2", raw.selected_alpn_protocol()
        self.scheme = "https" if tls is not None else "http"
        self.peer = H2Peer(raw, client_side=True, name="h2client",
                           settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window,
                                     h2.settings.SettingCodes.ENABLE_PUSH: 0},
                           connection_window=16 << 20).start()
        self.sid = None
        self.trailers = None

    @property
    def stream(self):
        return self.peer.streams.get(self.sid)

    @property
    def frames(self):
        """(type, flags, length) of the frames received on the current stream."""
        return list(self.peer.frames.by_stream[self.sid])

    def open(self, method, path, headers=(), length=None, body_follows=True):
        hdrs = [(":method", method), (":scheme", self.scheme), (":authority", "localhost"),
                (":path", path)] + list(headers)
        if length is not None:
            hdrs.append(("content-length", str(length)))
        with self.peer.cond:
            self.sid = self.peer.conn.get_next_available_stream_id()
            self.peer._stream(self.sid)
            self.peer.conn.send_headers(self.sid, hdrs, end_stream=not body_follows)
            self.peer._flush()
        self.trailers = None
        return self

    def send(self, data, timeout=5, stop=None):
        self.peer.send_data(self.sid, data, timeout=timeout, stop=stop)

    def finish(self, trailers=None):
        if trailers:
            self.peer.send_headers(self.sid, list(trailers), end_stream=True)
        else:
            self.peer.end_stream(self.sid)  # an empty DATA frame with END_STREAM

    def head(self, timeout):
        sid = self.sid

        def got():
            st = self.peer.streams.get(sid)
            if st is not None and st.headers is not None:
                return True
            if st is not None and st.gone:
                raise Gone(st.gone)
            return False

        try:
            self.peer.wait_until(got, time.monotonic() + timeout, "the response head")
        except AssertionError:
            raise AssertionError("no response head within %.1fs" % timeout)
        st = self.stream
        hdrs = [(k, v) for k, v in st.headers if not k.startswith(":")]
        return int(dict(st.headers)[":status"]), hdrs

    def read_some(self, timeout):
        try:
            data = self.peer.read(self.sid, timeout=timeout)
        except AssertionError:
            raise AssertionError("no response body bytes within %.1fs" % timeout)
        if data:
            return data
        self.trailers = self.stream.trailers
        return None

    read_at_least = H1Client.read_at_least
    read_all = H1Client.read_all

    def reset(self, code=h2.errors.ErrorCodes.CANCEL):
        self.peer.reset(self.sid, code)

    def disconnect(self):
        self.close()

    def close(self):
        self.peer.close()
