"""Bodies stream through bounded buffers: a 1 GiB upload and a 1 GiB download pass through
Turnpike while its resident memory grows by less than 64 MiB (256 MiB volumes under the
sanitizers, which are several times slower).
"""

import hashlib
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

MIB = 1024 * 1024
VOLUME = (256 if h.SANITIZE else 1024) * MIB
RSS_GROWTH_LIMIT_MIB = 64
IO_TIMEOUT = h.scaled(60)
PATTERN = bytes(ord("a") + i % 26 for i in range(256 * 1024))  # what turnpike-echo /bytes sends


class StreamingTest(h.TurnpikeCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        s = cls.cstack
        echo = s.echo("echo")
        routes = [{"name": "all", "match": {"path_prefix": "/"}, "backend": "echo",
                   "timeout": "30s"}]
        cfg = h.config(h.free_port(), [h.listener("public", h.free_port())],
                       [h.cluster("echo", echo)], routes)
        env = None
        if h.SANITIZE:
            # ASan's quarantine holds freed memory back (256 MiB by default), which is RSS
            # growth that says nothing about Turnpike's buffering.
            opts = os.environ.get("ASAN_OPTIONS", "")
            env = {"ASAN_OPTIONS": (opts + ":" if opts else "") + "quarantine_size_mb=16"}
        cls.tp = s.turnpike(cfg, env=env)

    def warm_up(self):
        # Let pools, buffers and the allocator settle before the baseline is taken.
        with self.tp.conn() as c:
            for _ in range(20):
                self.assertEqual(c.request("POST", "/warm", body=b"w" * 100000).status, 200)
                self.assertEqual(c.request("GET", "/bytes/1000000").status, 200)

    def assertBoundedGrowth(self, sampler, what):
        self.assertGreater(sampler.samples, 5, "RSS hardly sampled")
        self.assertLess(sampler.growth_mib, RSS_GROWTH_LIMIT_MIB,
                        "%s: turnpike RSS grew by %.1f MiB (baseline %.1f MiB, peak %.1f MiB)"
                        % (what, sampler.growth_mib, sampler.baseline / 1024.0,
                           sampler.peak / 1024.0))

    def test_upload_streams_with_bounded_memory(self):
        self.warm_up()
        block = os.urandom(MIB + 7)  # odd size: a dropped or repeated piece changes the hash
        sha = hashlib.sha256()
        sampler = h.RssSampler(self.tp.pid)
        sampler.start()
        start = time.monotonic()
        try:
            with self.tp.conn(timeout=IO_TIMEOUT) as c:
                c.send(h.build_request("POST", "/upload", [("Content-Length", str(VOLUME))]))
                left = VOLUME
                while left > 0:
                    piece = block if left >= len(block) else block[:left]
                    c.send(piece)
                    sha.update(piece)
                    left -= len(piece)
                r = c.read_response()
        finally:
            sampler.stop()
        elapsed = time.monotonic() - start
        self.assertEqual(r.status, 200, repr(r))
        echo = r.json()
        self.assertEqual(echo["body_bytes"], VOLUME)
        self.assertEqual(echo["body_sha256"], sha.hexdigest())
        self.assertNotIn("body", echo)
        self.assertBoundedGrowth(sampler, "upload of %d MiB in %.1fs" % (VOLUME // MIB, elapsed))

    def test_download_streams_with_bounded_memory(self):
        self.warm_up()
        state = {"n": 0, "prefix": bytearray(), "paused": False}

        def sink(chunk):
            if len(state["prefix"]) < len(PATTERN):
                state["prefix"] += chunk[:len(PATTERN) - len(state["prefix"])]
            state["n"] += len(chunk)
            if not state["paused"] and state["n"] > 64 * MIB:
                # A slow client: Turnpike must stop reading the upstream, not buffer it all.
                state["paused"] = True
                time.sleep(1.5)

        sampler = h.RssSampler(self.tp.pid)
        sampler.start()
        start = time.monotonic()
        try:
            with self.tp.conn(timeout=IO_TIMEOUT) as c:
                r = c.request("GET", "/bytes/%d" % VOLUME, sink=sink)
        finally:
            sampler.stop()
        elapsed = time.monotonic() - start
        self.assertEqual(r.status, 200, repr(r))
        self.assertEqual(state["n"], VOLUME)
        self.assertEqual(bytes(state["prefix"]), PATTERN)
        self.assertBoundedGrowth(sampler, "download of %d MiB in %.1fs" % (VOLUME // MIB, elapsed))

    def test_chunked_download(self):
        size = 64 * MIB
        count = [0]
        with self.tp.conn(timeout=IO_TIMEOUT) as c:
            r = c.request("GET", "/bytes/%d?chunked=1" % size,
                          sink=lambda d: count.__setitem__(0, count[0] + len(d)))
            self.assertEqual(r.status, 200, repr(r))
            self.assertEqual(count[0], size)
            # Framing came out right: the connection is still in sync.
            self.assertEqual(c.request("GET", "/next").json()["path"], "/next")

    def test_chunked_upload(self):
        block = os.urandom(300001)
        pieces = [block] * 100  # ~30 MB in odd-sized chunks
        with self.tp.conn(timeout=IO_TIMEOUT) as c:
            c.send(h.build_request("POST", "/chunked-up", [("Transfer-Encoding", "chunked")]))
            sha = hashlib.sha256()
            for p in pieces:
                c.send(b"%x\r\n%s\r\n" % (len(p), p))
                sha.update(p)
            c.send(b"0\r\n\r\n")
            r = c.read_response()
        self.assertEqual(r.status, 200, repr(r))
        self.assertEqual(r.json()["body_bytes"], len(block) * len(pieces))
        self.assertEqual(r.json()["body_sha256"], sha.hexdigest())


if __name__ == "__main__":
    unittest.main()
