"""The accept path's header_timeout under clients that time their first bytes around it.

Before a connection reaches its codec, Turnpike runs a TLS handshake (TLS listeners) or reads
the first bytes to tell HTTP/1.1 from the h2c preface (ports that speak both), each bounded by
the listener's header_timeout. Bytes that arrive in the same event-loop pass as that timer's
expiry once let the timer's handler run after the coroutine that owned the socket had finished:
a use-after-free a client could trigger by timing. Here many clients send their first bytes (a
ClientHello, a TLS client Finished, the h2 preface, an HTTP/1.1 request, garbage, or an EOF)
at random moments within +-20 ms of a 200 ms header_timeout for a while; afterwards the process
must still be up, serve normal requests, stop cleanly, and its stderr must hold no sanitizer
report (run it in the ASan build: scripts/test.sh asan).
"""

import asyncio
import os
import random
import socket
import ssl
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import tls_certs  # noqa: E402
from h2client import PREFACE, RawH2  # noqa: E402
from hyperframe.frame import SettingsFrame  # noqa: E402

API = "api.example.test"
TIMEOUT_MS = 200
JITTER_MS = 20
DURATION_S = 15 if h.SANITIZE else 12
CONCURRENCY = 48 if h.SANITIZE else 96
SANITIZER_MARKS = ("AddressSanitizer", "LeakSanitizer", "UndefinedBehaviorSanitizer",
                   "runtime error:", "ERROR: ")

H1_REQUEST = b"GET /ok HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
H2_START = PREFACE + SettingsFrame(0).serialize()


class Stats:
    def __init__(self):
        self.counts = {}

    def add(self, key):
        self.counts[key] = self.counts.get(key, 0) + 1

    def get(self, key):
        return self.counts.get(key, 0)

    def total(self):
        return sum(self.counts.values())


async def read_all(reader, limit_s):
    """Everything the server sends until it closes (or limit_s passes)."""
    data = b""
    deadline = time.monotonic() + limit_s
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return data, False
        try:
            chunk = await asyncio.wait_for(reader.read(65536), left)
        except asyncio.TimeoutError:
            return data, False
        except (ConnectionError, OSError):
            return data, True
        if not chunk:
            return data, True
        data += chunk


def target_delay(rng):
    return (TIMEOUT_MS + rng.uniform(-JITTER_MS, JITTER_MS)) / 1000.0


async def sleep_until(t0, delay):
    left = t0 + delay - time.monotonic()
    if left > 0:
        await asyncio.sleep(left)


async def send(writer, data):
    try:
        writer.write(data)
        await writer.drain()
        return True
    except (ConnectionError, OSError):
        return False


async def mixed_client(port, rng, stats):
    """HTTP/1.1 + h2c port: the first bytes (or an EOF) around header_timeout."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    t0 = time.monotonic()
    mode = rng.choice(("h1", "h2", "h2_partial", "eof", "garbage"))
    try:
        await sleep_until(t0, target_delay(rng))
        if mode == "eof":
            writer.write_eof()
            await read_all(reader, 1.0)
            stats.add("mixed eof")
            return
        payload = {"h1": H1_REQUEST, "h2": H2_START, "h2_partial": PREFACE[:9],
                   "garbage": bytes(rng.getrandbits(8) for _ in range(64))}[mode]
        if not await send(writer, payload):
            stats.add("mixed %s: reset" % mode)
            return
        data, _ = await read_all(reader, 1.0)
        if mode == "h1":
            stats.add("h1 served" if data.startswith(b"HTTP/1.1 200") else "h1 not served")
        else:
            stats.add("mixed %s: %s" % (mode, "answered" if data else "closed"))
    finally:
        writer.close()


def client_hello(ctx, alpn):
    """A TLS client state machine over memory BIOs and its ClientHello bytes."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx[alpn].wrap_bio(incoming, outgoing, server_hostname=API)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return obj, incoming, outgoing, outgoing.read()


async def tls_client(port, ctx, rng, stats):
    """TLS port: the ClientHello, or the client's Finished (with a request), or garbage, or an
    EOF around header_timeout."""
    mode = rng.choice(("hello", "finished", "finished", "garbage", "eof"))
    alpn = "h1" if mode == "finished" else rng.choice(("h1", "h2"))
    obj, incoming, outgoing, hello = client_hello(ctx, alpn)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    t0 = time.monotonic()
    try:
        if mode != "finished":
            await sleep_until(t0, target_delay(rng))
            if mode == "eof":
                writer.write_eof()
            elif not await send(writer, hello if mode == "hello" else
                                bytes(rng.getrandbits(8) for _ in range(300))):
                stats.add("tls %s: reset" % mode)
                return
            data, _ = await read_all(reader, 1.0)
            stats.add("tls %s: %s" % (mode, "answered" if data else "closed"))
            return
        # The whole handshake, but the last flight (client Finished + a request) is timed.
        if not await send(writer, hello):
            stats.add("tls finished: reset")
            return
        while True:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), 2.0)
            except (asyncio.TimeoutError, ConnectionError, OSError):
                chunk = b""
            if not chunk:
                stats.add("tls finished: server gave up before the Finished")
                return
            incoming.write(chunk)
            try:
                obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                continue
        obj.write(H1_REQUEST)
        flight = outgoing.read()
        await sleep_until(t0, target_delay(rng))
        if not await send(writer, flight):
            stats.add("tls finished: reset")
            return
        data, _ = await read_all(reader, 1.0)
        incoming.write(data)
        plain = b""
        try:
            while True:
                piece = obj.read(65536)
                if not piece:
                    break
                plain += piece
        except (ssl.SSLError, ssl.SSLWantReadError):
            pass
        stats.add("tls served" if plain.startswith(b"HTTP/1.1 200") else "tls not served")
    finally:
        writer.close()


async def hammer(ports, ctx, seed, stats, duration, alive):
    rng = random.Random(seed)
    deadline = time.monotonic() + duration

    async def worker(i):
        wrng = random.Random(rng.random())
        while time.monotonic() < deadline and alive():
            try:
                if wrng.random() < 0.5:
                    await mixed_client(ports["mixed"], wrng, stats)
                else:
                    await tls_client(ports["tls"], ctx, wrng, stats)
            except (ConnectionError, OSError) as e:
                stats.add("connect failed: %s" % type(e).__name__)
                await asyncio.sleep(0.05)

    await asyncio.gather(*(worker(i) for i in range(CONCURRENCY)))


class DeferAcceptTest(h.TurnpikeCase):
    """listeners[].defer_accept (default on): the kernel hands Turnpike a connection only once its
    first bytes are in (about a second at most), so a client's header_timeout starts then; with it
    off, a silent connection is accepted at once and closed after header_timeout."""

    def test_header_timeout_starts_when_the_client_speaks(self):
        limits = {"header_timeout": "300ms"}
        deferred = h.listener("deferred", h.free_port(), **limits)
        eager = h.listener("eager", h.free_port(), **limits)
        eager["defer_accept"] = False
        # HTTP/1.1 or h2c: header_timeout covers the connection preface from accept on.
        deferred["protocols"] = eager["protocols"] = ["http1", "h2c"]
        routes = [{"name": "ok", "match": {"path_prefix": "/"},
                   "respond": {"status": 200, "body": "ok\n"}}]
        tp = self.stack.turnpike(h.config(h.free_port(), [deferred, eager], [], routes, workers=1))

        quiet = socket.create_connection(("127.0.0.1", tp.ports["deferred"]), timeout=5)
        loud = socket.create_connection(("127.0.0.1", tp.ports["eager"]), timeout=5)
        started = time.monotonic()
        # Accepted at once and silent: closed after header_timeout, with nothing to answer.
        self.assertEqual(loud.recv(4096), b"")
        self.assertLess(time.monotonic() - started, 0.9)
        # Not accepted yet (the kernel waits for its bytes): past header_timeout and still served.
        time.sleep(max(0.0, started + 0.6 - time.monotonic()))
        quiet.sendall(b"GET /late HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertIn(b" 200 ", quiet.recv(4096))
        loud.close()
        quiet.close()


class AcceptTimeoutStressTest(h.TurnpikeCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.pki = tls_certs.Pki(os.path.join(cls.cstack.dir, "pki"))

    def client_contexts(self):
        out = {}
        for name, alpn in (("h1", ["http/1.1"]), ("h2", ["h2", "http/1.1"])):
            ctx = ssl.create_default_context(cafile=self.pki.ca.cert)
            ctx.set_alpn_protocols(alpn)
            out[name] = ctx
        return out

    def test_first_bytes_around_header_timeout(self):
        limits = {"header_timeout": "%dms" % TIMEOUT_MS}
        tls = h.listener("tls", h.free_port(), **limits)
        tls["tls"] = {"certificates": [{"cert": self.pki.api.cert, "key": self.pki.api.key}]}
        tls["protocols"] = ["http1", "h2"]
        mixed = h.listener("mixed", h.free_port(), **limits)
        mixed["protocols"] = ["http1", "h2c"]
        # The timers under test start at accept: with TCP_DEFER_ACCEPT the kernel would hold a
        # connection until its first bytes, and the moments would no longer straddle them.
        tls["defer_accept"] = mixed["defer_accept"] = False
        routes = [{"name": "ok", "match": {"path_prefix": "/"},
                   "respond": {"status": 200, "body": "ok\n"}}]
        cfg = h.config(h.free_port(), [tls, mixed], [], routes, workers=2)
        tp = self.stack.turnpike(cfg)

        stats = Stats()
        seed = int(os.environ.get("TP_STRESS_SEED") or random.randrange(1 << 30))
        asyncio.run(hammer(tp.ports, self.client_contexts(), seed, stats, DURATION_S,
                           lambda: tp.proc.poll() is None))
        summary = "seed %d (TP_STRESS_SEED to repeat), outcomes %s" % (seed, stats.counts)
        sys.stderr.write("\n%d connections; %s\n" % (stats.total(), summary))

        self.assertIsNone(tp.proc.poll(), "turnpike died under the stress\n%s\n%s"
                          % (summary, tp.proc.describe()))
        self.assertGreater(stats.total(), 500, summary)
        # The moments straddled the timeout: some first bytes were in time, some were not.
        self.assertGreater(stats.get("h1 served"), 0, summary)
        self.assertGreater(stats.get("h1 not served"), 0, summary)

        # Still serving, on both ports and over both codecs.
        self.assertEqual(tp.get("/after", listener_name="mixed").status, 200, summary)
        with RawH2(tp.ports["mixed"], timeout=h.scaled(5)) as c:
            c.get(1, "/after")
            headers, _, _, _ = c.response(1, timeout=h.scaled(5))
            self.assertEqual(headers.get(":status"), "200", summary)
        ctx = self.client_contexts()["h1"]
        with socket.create_connection(("127.0.0.1", tp.ports["tls"]), timeout=h.scaled(5)) as raw:
            with ctx.wrap_socket(raw, server_hostname=API) as s:
                s.sendall(H1_REQUEST)
                data = b""
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
        self.assertTrue(data.startswith(b"HTTP/1.1 200"), data[:200])

        rc = tp.proc.stop()
        self.assertEqual(rc, 0, tp.proc.describe())
        err = tp.proc.stderr()
        for mark in SANITIZER_MARKS:
            self.assertNotIn(mark, err, "%s\n%s" % (summary, tp.proc.describe(tail=20000)))


if __name__ == "__main__":
    unittest.main()
