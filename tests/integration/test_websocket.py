"""WebSocket through Turnpike: HTTP/1.1 Upgrade proxied as a tunnel to a python3-websockets echo
server (ws_backend.py): text and binary messages, a 4 MiB message, the close handshake both
ways, the route's idle timeout (and traffic keeping a tunnel open), `websocket: false`, wss over
a TLS listener, and RFC 8441 (WebSocket over an HTTP/2 extended CONNECT stream, hand-framed)
translated to an HTTP/1.1 upgrade upstream."""

import asyncio
import json
import os
import ssl
import struct
import sys
import time
import unittest

import websockets

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import tls_certs  # noqa: E402
import h2client  # noqa: E402
from h2client import RawH2, DataFrame  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
API = "api.example.test"


def ws_frame(payload, opcode=0x1, mask=b"\x01\x02\x03\x04"):
    """One final, masked client frame."""
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


def parse_server_frame(data):
    """(opcode, payload) of one unmasked server frame at the start of data."""
    opcode = data[0] & 0x0F
    n = data[1] & 0x7F
    off = 2
    if n == 126:
        n = struct.unpack("!H", data[2:4])[0]
        off = 4
    elif n == 127:
        n = struct.unpack("!Q", data[2:10])[0]
        off = 10
    return opcode, data[off:off + n]


class WebSocketTest(h.TurnpikeCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.pki = tls_certs.Pki(os.path.join(cls.cstack.dir, "pki"))

    def setUp(self):
        super().setUp()
        proc = self.stack.run(["/usr/bin/python3", os.path.join(HERE, "ws_backend.py")], "ws")
        self.ws_port = h.wait_for(
            lambda: next((int(l.split()[1]) for l in proc.stdout().splitlines()
                          if l.startswith("listening ")), None), h.scaled(10),
            what="ws backend")

    def start(self, websocket=None, tls=False, protocols=("http1", "h2c")):
        lst = h.listener("main", h.free_port())
        if tls:
            lst["tls"] = {"certificates": [{"cert": self.pki.api.cert, "key": self.pki.api.key}]}
        else:
            lst["protocols"] = list(protocols)
        route = {"name": "ws", "match": {"path_prefix": "/"}, "backend": "ws"}
        if websocket is not None:
            route["websocket"] = websocket
        cfg = h.config(h.free_port(), [lst], [h.cluster("ws", "127.0.0.1:%d" % self.ws_port)],
                       [route], access_log="stdout")
        self.tp = self.stack.turnpike(cfg)
        self.base = "ws://127.0.0.1:%d" % self.tp.ports["main"]

    def run_async(self, coro, timeout=30):
        return asyncio.run(asyncio.wait_for(coro, h.scaled(timeout)))

    def test_echo_large_messages_and_close_handshake(self):
        self.start()

        async def go():
            async with websockets.connect(self.base + "/chat?room=1", max_size=16 * 1024 * 1024,
                                          ping_interval=None) as ws:
                await ws.send("hello")
                self.assertEqual(await ws.recv(), "hello")
                blob = os.urandom(4 * 1024 * 1024)
                await ws.send(blob)
                self.assertEqual(await ws.recv(), blob)
                await ws.send("whoami")
                seen = json.loads(await ws.recv())
                self.assertEqual(seen["path"], "/chat?room=1")
                hdrs = {k.lower(): v for k, v in seen["headers"].items()}
                self.assertEqual(hdrs.get("x-forwarded-for"), "127.0.0.1", hdrs)
                for i in range(50):
                    await ws.send("m%d" % i)
                self.assertEqual([await ws.recv() for _ in range(50)],
                                 ["m%d" % i for i in range(50)])
                await ws.close(1000, "bye")
                return ws.close_code
        self.assertEqual(self.run_async(go()), 1000)
        # The access log says 101 for the tunnel.
        h.wait_for(lambda: '"status":101' in self.tp.proc.stdout(), h.scaled(5),
                   what="access log line with status 101")

    def test_server_initiated_close(self):
        self.start()

        async def go():
            async with websockets.connect(self.base + "/", ping_interval=None) as ws:
                await ws.send("close:4000")
                with self.assertRaises(websockets.ConnectionClosed):
                    await ws.recv()
                return ws.close_code, ws.close_reason
        self.assertEqual(self.run_async(go()), (4000, "as asked"))

    def test_idle_timeout_closes_tunnel_but_traffic_keeps_it(self):
        self.start(websocket={"idle_timeout": "1s"})

        async def go():
            async with websockets.connect(self.base + "/", ping_interval=None) as ws:
                # Traffic every 400 ms for 2.5 s: longer than the idle timeout, still open.
                end = time.monotonic() + 2.5
                while time.monotonic() < end:
                    await asyncio.sleep(0.4)
                    await ws.send("tick")
                    self.assertEqual(await ws.recv(), "tick")
                # Silence: the tunnel closes about a second after the last message.
                t0 = time.monotonic()
                with self.assertRaises(websockets.ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 10)
                return time.monotonic() - t0
        waited = self.run_async(go())
        self.assertGreater(waited, 0.8)
        self.assertLess(waited, h.scaled(4))

    def test_websocket_false_refuses_upgrade(self):
        self.start(websocket=False)

        async def go():
            with self.assertRaises(websockets.InvalidStatusCode) as cm:
                async with websockets.connect(self.base + "/", ping_interval=None):
                    pass
            return cm.exception.status_code
        self.assertEqual(self.run_async(go()), 403)

    def test_wss_over_tls_listener(self):
        self.start(tls=True)
        ctx = ssl.create_default_context(cafile=self.pki.ca.cert)

        async def go():
            uri = "wss://%s:%d/secure" % (API, self.tp.ports["main"])
            async with websockets.connect(uri, ssl=ctx, ping_interval=None,
                                          host="127.0.0.1", port=self.tp.ports["main"],
                                          server_hostname=API) as ws:
                await ws.send(b"\x00\x01binary")
                return await ws.recv()
        self.assertEqual(self.run_async(go()), b"\x00\x01binary")

    def test_rfc8441_websocket_over_http2(self):
        self.start()
        with RawH2(self.tp.ports["main"], timeout=h.scaled(5)) as c:
            # The server offers SETTINGS_ENABLE_CONNECT_PROTOCOL (0x8) = 1.
            f, _ = c.frames_until(lambda f: isinstance(f, h2client.SettingsFrame)
                                  and "ACK" not in f.flags)
            self.assertEqual(f.settings.get(0x8), 1, f.settings)
            c.send_headers(1, [(":method", "CONNECT"), (":protocol", "websocket"),
                               (":scheme", "http"), (":path", "/h2chat"),
                               (":authority", "localhost"), ("sec-websocket-version", "13")],
                           end_stream=False)
            got = bytearray()
            hd = None
            deadline = time.monotonic() + h.scaled(5)
            while hd is None and time.monotonic() < deadline:
                fr = c.next_frame()
                c._dispatch(fr)
                st = c.streams.get(1)
                if st and st["headers"]:
                    hd = st["headers"]
            self.assertEqual(hd[":status"], "200")
            self.assertNotIn("sec-websocket-accept", hd)
            c.send(DataFrame(1, ws_frame(b"hello over h2")))
            while len(got) < 2 + len(b"hello over h2") and time.monotonic() < deadline:
                fr = c.next_frame()
                c._dispatch(fr)
                got = c.streams[1]["body"]
            self.assertEqual(parse_server_frame(bytes(got)), (0x1, b"hello over h2"))
            # Close: the server answers with its close frame and ends the stream.
            c.streams[1]["body"] = bytearray()
            c.send(DataFrame(1, ws_frame(struct.pack("!H", 1000), opcode=0x8)))
            _, body, _, rst = c.response(1, timeout=h.scaled(10))
            self.assertEqual(parse_server_frame(body)[0], 0x8)


if __name__ == "__main__":
    unittest.main()
