"""Integration-test harness: starts the real turnpike binary and real echo upstreams on free
loopback ports, talks to them over raw sockets (and curl), and cleans up every process it
started (by PID, never by name).

Environment (set by ctest, see tests/CMakeLists.txt):
  TURNPIKE_BIN, ECHO_BIN  the binaries under test
  TP_SOURCE_DIR           the repository root
  TP_SANITIZE             "1" under the ASan/UBSan build: longer timeouts, smaller volumes

Standard library only; run with Debian's /usr/bin/python3.
"""

import atexit
import collections
import fcntl
import glob
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("TP_SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE))
SANITIZE = os.environ.get("TP_SANITIZE", "").lower() in ("1", "on", "true", "yes")


def _find_binary(env_name, name):
    path = os.environ.get(env_name)
    if path:
        return path
    # Run by hand: the newest build in build/*/ (or build/ itself).
    candidates = glob.glob(os.path.join(SOURCE_DIR, "build", "*", name))
    candidates += glob.glob(os.path.join(SOURCE_DIR, "build", name))
    candidates = [c for c in candidates if os.access(c, os.X_OK)]
    if not candidates:
        raise RuntimeError("%s not set and no build/*/%s found" % (env_name, name))
    return max(candidates, key=os.path.getmtime)


TURNPIKE_BIN = _find_binary("TURNPIKE_BIN", "turnpike")
ECHO_BIN = _find_binary("ECHO_BIN", "turnpike-echo")


def scaled(seconds):
    """A timeout, stretched under the sanitizers (everything runs 2-5x slower there)."""
    return seconds * 4 if SANITIZE else seconds


# ---------------------------------------------------------------------------------------------
# Ports, files, /proc


# Ports for listeners come from a range the kernel never hands out on its own (below
# ip_local_port_range, 32768-60999 on Debian), so no outgoing connection and no `bind(0)` can
# hold one. Each port is claimed with an flock on a file in PORT_LOCK_DIR that this process keeps
# until it exits: two tests running at once (ctest -j) and two calls in one test never get the same
# port, which bind-close-reuse could not promise (Turnpike binds with SO_REUSEPORT, so a port picked
# twice is not even refused).
PORT_RANGE = (20000, 32000)
PORT_LOCK_DIR = os.path.join(tempfile.gettempdir(), "turnpike-test-ports")
_claimed_ports = {}


def _bindable(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_port():
    """A loopback port that no other test process holds and nothing listens on right now; this
    process keeps it until it exits, and never gets it twice."""
    os.makedirs(PORT_LOCK_DIR, exist_ok=True)
    lo, hi = PORT_RANGE
    first = random.randrange(lo, hi)
    for i in range(hi - lo):
        port = lo + (first - lo + i) % (hi - lo)
        if port in _claimed_ports:
            continue
        fd = os.open(os.path.join(PORT_LOCK_DIR, str(port)), os.O_CREAT | os.O_RDWR, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        if not _bindable(port):
            os.close(fd)
            continue
        _claimed_ports[port] = fd
        return port
    raise RuntimeError("no free port in %d-%d" % PORT_RANGE)


def rss_kib(pid):
    """Resident set size of a process in KiB (VmRSS from /proc/PID/status)."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS for pid %d" % pid)


class RssSampler(threading.Thread):
    """Samples a process's VmRSS every `interval` seconds until stop(); keeps the peak."""

    def __init__(self, pid, interval=0.05):
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.baseline = rss_kib(pid)
        self.peak = self.baseline
        self.samples = 0
        self._stop_event = threading.Event()

    def run(self):
        while not self._stop_event.is_set():
            try:
                self.peak = max(self.peak, rss_kib(self.pid))
                self.samples += 1
            except (OSError, RuntimeError):
                return
            self._stop_event.wait(self.interval)

    def stop(self):
        self._stop_event.set()
        self.join(5)
        return self

    @property
    def growth_mib(self):
        return (self.peak - self.baseline) / 1024.0


def wait_for(predicate, timeout, interval=0.05, what="condition"):
    """Polls predicate() until it returns a truthy value; raises AssertionError on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


# ---------------------------------------------------------------------------------------------
# YAML output (block style; strings double-quoted, which YAML reads like JSON strings)


def _yaml_scalar(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    return json.dumps(str(v))


def to_yaml(obj, indent=0):
    pad = " " * indent
    lines = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, (dict, list)) and v:
                lines.append("%s%s:" % (pad, k))
                lines.append(to_yaml(v, indent + 2))
            elif isinstance(v, (dict, list)):
                lines.append("%s%s: %s" % (pad, k, "{}" if isinstance(v, dict) else "[]"))
            else:
                lines.append("%s%s: %s" % (pad, k, _yaml_scalar(v)))
    elif isinstance(obj, list):
        for item in obj:
            if isinstance(item, (dict, list)) and item:
                inner = to_yaml(item, indent + 2).splitlines()
                lines.append("%s- %s" % (pad, inner[0][indent + 2:]))
                lines.extend(inner[1:])
            else:
                lines.append("%s- %s" % (pad, _yaml_scalar(item)))
    else:
        lines.append(pad + _yaml_scalar(obj))
    return "\n".join(lines)


def config(admin_port, listeners, clusters=(), routes=(), access_log="off", workers=2,
           drain_timeout="5s", **extra):
    """A turnpike config as a dict, in the issue's contract shape."""
    cfg = {
        "workers": workers,
        "admin": {"listen": "127.0.0.1:%d" % admin_port},
        "listeners": list(listeners),
        "clusters": list(clusters),
        "routes": list(routes),
        "access_log": {"path": access_log},
        "drain_timeout": drain_timeout,
    }
    cfg.update(extra)
    return cfg


def listener(name, port, **limits):
    entry = {"name": name, "listen": "127.0.0.1:%d" % port}
    if limits:
        entry["limits"] = limits
    return entry


def cluster(name, *endpoints, **extra):
    entry = {"name": name, "endpoints": [getattr(e, "addr", e) for e in endpoints]}
    entry.setdefault("connect_timeout", "1s")
    entry.update(extra)
    return entry


# ---------------------------------------------------------------------------------------------
# Processes

_live = set()
_live_lock = threading.Lock()


class Proc:
    """A child process with stdout/stderr captured to files; stopped by PID. `stdout` (a file
    descriptor, e.g. a pipe's write end) replaces the stdout file."""

    def __init__(self, argv, workdir, label, env=None, stdout=None):
        self.argv = list(argv)
        self.label = label
        self.stdout_path = os.path.join(workdir, label + ".stdout")
        self.stderr_path = os.path.join(workdir, label + ".stderr")
        self._out = open(self.stdout_path, "wb")
        self._err = open(self.stderr_path, "wb")
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        self.popen = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL,
                                      stdout=self._out if stdout is None else stdout,
                                      stderr=self._err, cwd=workdir, env=full_env,
                                      start_new_session=True)
        self.pid = self.popen.pid
        with _live_lock:
            _live.add(self)

    def poll(self):
        return self.popen.poll()

    def wait(self, timeout):
        """Exit status, or raises subprocess.TimeoutExpired."""
        rc = self.popen.wait(timeout)
        self._forget()
        return rc

    def send_signal(self, sig):
        if self.popen.poll() is None:
            self.popen.send_signal(sig)

    def stop(self, sig=signal.SIGTERM, timeout=None):
        """SIGTERM (or sig), wait, then SIGKILL. Returns the exit status."""
        timeout = scaled(10) if timeout is None else timeout
        if self.popen.poll() is None:
            try:
                self.popen.send_signal(sig)
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        self._forget()
        return self.popen.returncode

    def _forget(self):
        with _live_lock:
            _live.discard(self)
        for f in (self._out, self._err):
            if not f.closed:
                f.close()

    def stdout(self):
        return _read_text(self.stdout_path)

    def stderr(self):
        return _read_text(self.stderr_path)

    def describe(self, tail=4000):
        rc = self.popen.poll()
        parts = ["--- %s (pid %d, %s): %s" % (self.label, self.pid,
                                             "running" if rc is None else "exit %s" % rc,
                                             " ".join(self.argv))]
        for name, text in (("stdout", self.stdout()), ("stderr", self.stderr())):
            if text:
                if len(text) > tail:
                    text = "...[%d bytes cut]...\n%s" % (len(text) - tail, text[-tail:])
                parts.append("[%s]\n%s" % (name, text.rstrip()))
        return "\n".join(parts)


def _read_text(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


@atexit.register
def _stop_all_live():
    with _live_lock:
        procs = list(_live)
    for p in procs:
        try:
            p.stop(timeout=5)
        except Exception:  # best effort at interpreter exit
            pass


class Echo:
    """A turnpike-echo upstream. Ports are picked by the server itself (port 0)."""

    def __init__(self, proc, ports, name):
        self.proc = proc
        self.ports = ports
        self.name = name

    @property
    def port(self):
        return self.ports[0]

    @property
    def addr(self):
        return "127.0.0.1:%d" % self.port


class Turnpike:
    def __init__(self, proc, config_path, cfg):
        self.proc = proc
        self.config_path = config_path
        self.cfg = cfg
        self.admin_port = int(cfg["admin"]["listen"].rsplit(":", 1)[1]) if cfg else None
        self.ports = {}
        for lst in (cfg or {}).get("listeners", []):
            self.ports[lst["name"]] = int(lst["listen"].rsplit(":", 1)[1])

    @property
    def pid(self):
        return self.proc.pid

    @property
    def port(self):
        return next(iter(self.ports.values()))

    def admin(self, method, path, timeout=5):
        c = HttpConn(self.admin_port, timeout=timeout)
        try:
            return c.request(method, path, headers=[("Connection", "close")])
        finally:
            c.close()

    def ready_status(self):
        try:
            return self.admin("GET", "/ready", timeout=2).status
        except (OSError, HttpError):
            return None

    def wait_ready(self, timeout=None):
        timeout = scaled(15) if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("turnpike exited with %s during start-up\n%s"
                                     % (self.proc.poll(), self.proc.describe()))
            if self.ready_status() == 200:
                return self
            time.sleep(0.05)
        raise AssertionError("turnpike not ready (admin GET /ready != 200) after %.0fs\n%s"
                             % (timeout, self.proc.describe()))

    def conn(self, listener_name=None, timeout=5):
        port = self.ports[listener_name] if listener_name else self.port
        return HttpConn(port, timeout=timeout)

    def request(self, method, path, listener_name=None, timeout=10, **kw):
        """One request on a fresh connection (Connection: close)."""
        c = self.conn(listener_name, timeout=timeout)
        try:
            headers = list(kw.pop("headers", []))
            if not any(k.lower() == "connection" for k, _ in headers):
                headers.append(("Connection", "close"))
            return c.request(method, path, headers=headers, **kw)
        finally:
            c.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)


class Stack:
    """A temp dir plus every process started into it; stop() ends them all."""

    def __init__(self, label="tp"):
        self.dir = tempfile.mkdtemp(prefix="tp-it-%s-" % label)
        self.procs = []
        self._seq = 0

    def path(self, name):
        return os.path.join(self.dir, name)

    def write(self, name, text):
        p = self.path(name)
        with open(p, "w") as f:
            f.write(text)
        return p

    def _label(self, base):
        self._seq += 1
        return "%02d-%s" % (self._seq, base)

    def run(self, argv, label, env=None, stdout=None):
        proc = Proc(argv, self.dir, self._label(label), env=env, stdout=stdout)
        self.procs.append(proc)
        return proc

    def echo(self, name="echo", threads=1, listens=1, timeout=None):
        argv = [ECHO_BIN, "--name", name, "--threads", str(threads)]
        for _ in range(listens):
            argv += ["--listen", "127.0.0.1:0"]
        proc = self.run(argv, "echo-" + name)
        deadline = time.monotonic() + (scaled(10) if timeout is None else timeout)
        while True:
            ports = [int(line.rsplit(":", 1)[1]) for line in proc.stdout().splitlines()
                     if line.startswith("listening ")]
            if len(ports) == listens:
                return Echo(proc, ports, name)
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("echo server did not start\n" + proc.describe())
            time.sleep(0.02)

    def turnpike(self, cfg, wait=True, args=(), env=None, name="turnpike.yaml", stdout=None):
        """Writes cfg (a dict, or YAML text) and starts `turnpike -c FILE`."""
        text = cfg if isinstance(cfg, str) else to_yaml(cfg) + "\n"
        path = self.write(name, text)
        proc = self.run([TURNPIKE_BIN, "-c", path] + list(args), "turnpike", env=env,
                        stdout=stdout)
        tp = Turnpike(proc, path, cfg if isinstance(cfg, dict) else None)
        if wait:
            tp.wait_ready()
        return tp

    def stop(self):
        for p in reversed(self.procs):
            p.stop()

    def describe(self):
        return "\n".join(p.describe() for p in self.procs)

    def remove(self):
        shutil.rmtree(self.dir, ignore_errors=True)


class CannedBackend:
    """An HTTP/1.1 backend on loopback (a free port) that answers every GET (and POST or PUT, whose
    body it reads) with `status` after
    `delay` seconds, naming itself in X-Upstream-Name like turnpike-echo. For backends the echo
    server cannot play: one that is always slow, or always fails. Stop it with stop()."""

    def __init__(self, name, status=200, delay=0.0, paths=None):
        import http.server
        # Per-path statuses (e.g. {"/healthz": 200}), changeable while it runs; GETs of a path
        # it does not list answer `status`. `hits` counts GETs per path.
        # `active`/`max_active`: requests being answered now / at most at once.
        self.paths = dict(paths or {})
        self.hits = collections.Counter()
        self.seen = []  # (method, target, Host, body) of each request answered
        self.active = 0
        self.max_active = 0
        lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                with lock:
                    outer.active += 1
                    outer.max_active = max(outer.max_active, outer.active)
                try:
                    self.answer()
                finally:
                    with lock:
                        outer.active -= 1

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                self.body = self.rfile.read(n) if n else b""
                self.do_GET()

            do_PUT = do_POST

            def answer(self):
                if delay:
                    time.sleep(delay)
                path = self.path.split("?")[0]
                outer.hits[path] += 1
                outer.seen.append((self.command, self.path, self.headers.get("Host"),
                                   getattr(self, "body", b"")))
                st = outer.paths.get(path, status)
                body = b"%d\n" % st
                self.send_response(st)
                self.send_header("X-Upstream-Name", name)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 128  # the default 5 drops connects under a burst

            def handle_error(self, request, client_address):
                pass  # a client that left (a proxy's per-try timeout): not news

        self.server = Server(("127.0.0.1", free_port()), Handler)
        self.port = self.server.server_address[1]
        self.addr = "127.0.0.1:%d" % self.port
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


REDIS_BIN = "/usr/bin/redis-server"


class Redis:
    """A real redis-server on a free loopback port, no persistence, stopped by PID."""

    def __init__(self, stack, port=None, label="redis"):
        self.stack = stack
        self.port = port or free_port()
        self.label = label
        self.proc = None

    def start(self):
        self.proc = self.stack.run([REDIS_BIN, "--port", str(self.port), "--bind", "127.0.0.1",
                                    "--save", "", "--appendonly", "no"], self.label)
        wait_for(self.ping, scaled(10), what="redis-server on %d" % self.port)
        return self

    def stop(self):
        if self.proc:
            self.proc.stop()
            self.proc = None

    @property
    def address(self):
        return "127.0.0.1:%d" % self.port

    def command(self, *args):
        """One command on a fresh connection; the raw RESP reply."""
        payload = "*%d\r\n" % len(args) + "".join(
            "$%d\r\n%s\r\n" % (len(str(a).encode()), a) for a in args)
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(payload.encode())
            data = b""
            while not data.endswith(b"\r\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            return data.decode()

    def ping(self):
        try:
            return self.command("PING").startswith("+PONG")
        except OSError:
            return False


# ---------------------------------------------------------------------------------------------
# Raw HTTP/1.1 over sockets


class HttpError(Exception):
    """The peer sent something that is not an HTTP response, or closed/timed out mid-way."""


class Response:
    def __init__(self, version, status, reason, headers, body, interim=()):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers  # [(name, value)] as received
        self.body = body  # bytes (None when streamed to a sink)
        self.interim = list(interim)  # 1xx responses that came first
        self.body_bytes = 0

    def header(self, name, default=None):
        vals = [v for k, v in self.headers if k.lower() == name.lower()]
        return ", ".join(vals) if vals else default

    def has_header(self, name):
        return any(k.lower() == name.lower() for k, _ in self.headers)

    def json(self):
        try:
            return json.loads(self.body.decode("utf-8"))
        except (ValueError, AttributeError) as e:
            raise AssertionError("response body is not JSON (%s): %r" % (e, self.body[:500]))

    def text(self):
        return self.body.decode("utf-8", "replace")

    def __repr__(self):
        return "<Response %s %s %r>" % (self.status, self.headers, (self.body or b"")[:300])


def build_request(method, target, headers=(), body=b"", host="localhost"):
    """Request bytes. Adds Host and Content-Length unless given (pass host=None for no Host)."""
    if isinstance(body, str):
        body = body.encode()
    names = {k.lower() for k, _ in headers}
    lines = ["%s %s HTTP/1.1" % (method, target)]
    if host is not None and "host" not in names:
        lines.append("Host: %s" % host)
    lines += ["%s: %s" % (k, v) for k, v in headers]
    if body and "content-length" not in names and "transfer-encoding" not in names:
        lines.append("Content-Length: %d" % len(body))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def chunked(pieces):
    """Encodes byte strings as a chunked body (with the last chunk)."""
    out = b""
    for p in pieces:
        if p:
            out += b"%x\r\n%s\r\n" % (len(p), p)
    return out + b"0\r\n\r\n"


class HttpConn:
    """One client connection; every operation has a timeout."""

    def __init__(self, port, host="127.0.0.1", timeout=5):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.eof = False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def settimeout(self, t):
        self.sock.settimeout(t)

    def send(self, data):
        self.sock.sendall(data)

    def _recv(self, size=1 << 16):
        if self.eof:
            raise HttpError("connection closed by peer")
        try:
            data = self.sock.recv(size)
        except socket.timeout:
            raise HttpError("timed out waiting for data")
        except ConnectionResetError:
            self.eof = True
            raise HttpError("connection reset by peer")
        if not data:
            self.eof = True
            raise HttpError("connection closed by peer")
        return data

    def _fill(self):
        self.buf += self._recv()

    def _line(self):
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = bytes(self.buf[:i + 1])
                del self.buf[:i + 1]
                return line.rstrip(b"\r\n").decode("latin-1")
            if len(self.buf) > 1 << 20:
                raise HttpError("header line too long")
            self._fill()

    def _exact(self, n, sink=None):
        """Reads exactly n bytes; to sink(chunk) if given (then returns None)."""
        if sink is None:
            while len(self.buf) < n:
                self._fill()
            data = bytes(self.buf[:n])
            del self.buf[:n]
            return data
        left = n
        if self.buf:
            take = min(left, len(self.buf))
            sink(bytes(self.buf[:take]))
            del self.buf[:take]
            left -= take
        while left > 0:
            data = self._recv(1 << 18)
            if len(data) > left:
                self.buf += data[left:]
                data = data[:left]
            sink(data)
            left -= len(data)
        return None

    def _until_close(self, sink=None):
        out = bytearray()
        if self.buf:
            if sink:
                sink(bytes(self.buf))
            else:
                out += self.buf
            self.buf.clear()
        while True:
            try:
                data = self._recv(1 << 18)
            except HttpError:
                if self.eof:
                    return None if sink else bytes(out)
                raise
            if sink:
                sink(data)
            else:
                out += data

    def read_head(self):
        line = self._line()
        while line == "":  # tolerate stray CRLF between messages
            line = self._line()
        parts = line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise HttpError("bad status line %r" % line)
        headers = []
        while True:
            h = self._line()
            if h == "":
                break
            k, _, v = h.partition(":")
            headers.append((k.strip(), v.strip()))
        return parts[0], int(parts[1]), parts[2] if len(parts) > 2 else "", headers

    def read_response(self, head=False, sink=None, stop_at_interim=False):
        """Reads one response (skipping 1xx unless stop_at_interim). head=True: request was HEAD."""
        interim = []
        while True:
            version, status, reason, headers = self.read_head()
            if 100 <= status < 200 and status != 101:
                interim.append((status, headers))
                if stop_at_interim:
                    return Response(version, status, reason, headers, b"", interim)
                continue
            break
        resp = Response(version, status, reason, headers, None, interim)
        counted = [0]

        def count(chunk):
            counted[0] += len(chunk)
            sink(chunk)

        use = count if sink else None
        te = (resp.header("transfer-encoding") or "").lower()
        cl = resp.header("content-length")
        if head or status in (204, 304):
            body = b""
        elif "chunked" in te:
            body = self._read_chunked(use)
        elif cl is not None:
            if "," in cl:
                raise HttpError("several Content-Length values: %r" % cl)
            body = self._exact(int(cl), use)
        else:
            body = self._until_close(use)
        resp.body = body
        resp.body_bytes = counted[0] if sink else len(body)
        return resp

    def _read_chunked(self, sink=None):
        out = bytearray()
        while True:
            size_line = self._line()
            size = int(size_line.split(";", 1)[0].strip(), 16)
            if size == 0:
                while self._line() != "":  # trailers
                    pass
                return None if sink else bytes(out)
            data = self._exact(size, sink)
            if data is not None:
                out += data
            if self._line() != "":
                raise HttpError("chunk not followed by CRLF")

    def request(self, method, target, headers=(), body=b"", host="localhost", **kw):
        self.send(build_request(method, target, headers, body, host))
        return self.read_response(head=(method == "HEAD"), **kw)

    def wait_closed(self, timeout):
        """Reads until the peer closes. Returns (closed, data_received_meanwhile)."""
        deadline = time.monotonic() + timeout
        data = bytearray(self.buf)
        self.buf.clear()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False, bytes(data)
            self.sock.settimeout(left)
            try:
                d = self.sock.recv(1 << 16)
            except socket.timeout:
                return False, bytes(data)
            except (ConnectionResetError, BrokenPipeError):
                return True, bytes(data)
            if not d:
                self.eof = True
                return True, bytes(data)
            data += d


def parse_response_bytes(data, head=False):
    """Parses one response from raw bytes already received (e.g. by wait_closed)."""

    class _Fake(HttpConn):
        def __init__(self, raw):
            self.buf = bytearray(raw)
            self.eof = False
            self.sock = None

        def _recv(self, size=0):
            self.eof = True
            raise HttpError("connection closed by peer")

    return _Fake(data).read_response(head=head)


# ---------------------------------------------------------------------------------------------
# curl


def curl(*args, timeout=30, input_bytes=None, stdin=None):
    """Runs curl -sS with args; returns CompletedProcess (stdout/stderr bytes)."""
    return subprocess.run(["curl", "-sS", "--max-time", str(int(timeout))] + list(args),
                          input=input_bytes, stdin=stdin, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=timeout + 10)


def assert_json_error(case, r, status, error=None, challenge=None):
    """A filter's (or Turnpike's) error answer as a client sees it: the status, a JSON body of
    exactly {"error", "request_id"} with the response's X-Request-Id, and with `challenge` the
    WWW-Authenticate header (none on a 403)."""
    case.assertEqual(r.status, status, r)
    case.assertEqual(r.header("content-type"), "application/json", r)
    body = r.json()
    case.assertEqual(set(body), {"error", "request_id"}, body)
    case.assertTrue(body["request_id"])
    case.assertEqual(body["request_id"], r.header("x-request-id"))
    if error is not None:
        case.assertEqual(body["error"], error)
    if challenge is not None:
        case.assertEqual(r.header("www-authenticate"), challenge, r)
    elif status == 403:
        case.assertIsNone(r.header("www-authenticate"), r)
    return body


# ---------------------------------------------------------------------------------------------
# Test case base


class TurnpikeCase(unittest.TestCase):
    """Gives each test self.stack (and each class cls.cstack); prints their logs on failure."""

    cstack = None

    @classmethod
    def setUpClass(cls):
        cls.cstack = Stack(cls.__name__)

    @classmethod
    def tearDownClass(cls):
        if cls.cstack:
            cls.cstack.stop()
            cls.cstack.remove()
            cls.cstack = None

    def setUp(self):
        self.stack = Stack(self._testMethodName)

    def tearDown(self):
        self.stack.stop()

    def run(self, result=None):
        before = len(result.failures) + len(result.errors) if result is not None else 0
        try:
            return super().run(result)
        finally:
            stack = getattr(self, "stack", None)
            if result is not None and len(result.failures) + len(result.errors) > before:
                logs = [s.describe() for s in (self.cstack, stack) if s and s.procs]
                if logs:
                    sys.stderr.write("\n==== process logs for %s ====\n%s\n====\n"
                                     % (self.id(), "\n".join(logs)))
            if stack:
                stack.stop()
                stack.remove()

    # Assertion helpers shared by the test files.

    def assertStatus(self, resp, status, msg=None):
        self.assertEqual(resp.status, status, msg or "unexpected status: %r" % (resp,))

    def assertConfigErrors(self, text, expected, count=None):
        """`turnpike check` rejects the YAML `text` (formatted with free admin and port):
        each (line, column, message) appears as FILE:LINE:COLUMN: MESSAGE, and with `count`,
        the summary says that many errors. Returns stderr."""
        path = self.stack.write("bad.yaml", text.format(admin=free_port(), port=free_port()))
        p = subprocess.run([TURNPIKE_BIN, "check", "-c", path], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=scaled(30))
        err = p.stderr.decode()
        self.assertEqual(p.returncode, 1, err)
        for line, col, message in expected:
            self.assertIn("%s:%d:%d: %s" % (path, line, col, message), err)
        if count is not None:
            self.assertIn("%s: %d errors; configuration rejected" % (path, count), err)
        return err

    def assertJsonError(self, resp, status):
        """A gateway-generated error: status, JSON body with error and request_id."""
        self.assertStatus(resp, status)
        body = resp.json()
        self.assertIsInstance(body, dict)
        self.assertTrue(body.get("error"), "no 'error' in %r" % body)
        self.assertTrue(body.get("request_id"), "no 'request_id' in %r" % body)
        rid = resp.header("x-request-id")
        if rid is not None:
            self.assertEqual(body["request_id"], rid)
        return body
