"""Upstream connection handling and listener capacity, as an operator would check them:
keep-alive connections to the upstream are reused across client requests and closed after the
cluster's idle_timeout; a connect that does not complete within connect_timeout is a 504;
a listener at max_connections makes new clients wait instead of failing; /ready turns 503 while
draining.
"""

import os
import signal
import socket
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


def established_to(port, pid):
    """Number of ESTABLISHED TCP connections owned by `pid` whose remote port is `port`."""
    inodes = set()
    fd_dir = "/proc/%d/fd" % pid
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/%d/net/tcp" % pid, "/proc/%d/net/tcp6" % pid):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            remote_port = int(cols[2].rsplit(":", 1)[1], 16)
            if remote_port == port and cols[3] == "01" and cols[9] in inodes:
                count += 1
    return count


class UpstreamPoolTest(h.TurnpikeCase):
    def test_upstream_connections_are_reused_then_closed_when_idle(self):
        echo = self.stack.echo("pooled")
        cfg = h.config(h.free_port(), [h.listener("public", h.free_port())],
                       [h.cluster("pooled", echo, idle_timeout="1s")],
                       [{"name": "all", "match": {"path_prefix": "/"}, "backend": "pooled"}],
                       workers=2)
        tp = self.stack.turnpike(cfg)
        for i in range(40):  # each on a new client connection
            r = tp.get("/reuse/%d" % i)
            self.assertEqual(r.status, 200)
        # Sequential requests need at most one upstream connection per worker.
        self.assertLessEqual(established_to(echo.port, tp.pid), 2)
        self.assertGreaterEqual(established_to(echo.port, tp.pid), 1)
        # After the cluster's idle_timeout the pooled connections are closed.
        h.wait_for(lambda: established_to(echo.port, tp.pid) == 0, h.scaled(5),
                   what="idle upstream connections closed")

    def test_max_idle_per_endpoint_bounds_the_pool(self):
        echo = self.stack.echo("bounded", threads=2)
        cfg = h.config(h.free_port(), [h.listener("public", h.free_port())],
                       [h.cluster("bounded", echo, max_idle_per_endpoint=1, idle_timeout="30s")],
                       [{"name": "all", "match": {"path_prefix": "/"}, "backend": "bounded"}],
                       workers=1)
        tp = self.stack.turnpike(cfg)
        results = []
        threads = [threading.Thread(target=lambda: results.append(tp.get("/delay/1000").status))
                   for _ in range(5)]
        for t in threads:
            t.start()
        # Five concurrent requests need five upstream connections...
        h.wait_for(lambda: established_to(echo.port, tp.pid) == 5, h.scaled(3),
                   what="5 upstream connections in use")
        for t in threads:
            t.join(h.scaled(10))
        self.assertEqual(results, [200] * 5)
        # ...but only max_idle_per_endpoint of them stay pooled afterwards.
        h.wait_for(lambda: established_to(echo.port, tp.pid) == 1, h.scaled(3),
                   what="pool trimmed to max_idle_per_endpoint")

    def test_connect_timeout_is_504(self):
        # A listener whose accept queue is full: the kernel drops further SYNs, so a connect
        # hangs until the gateway's connect_timeout.
        blackhole = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        blackhole.bind(("127.0.0.1", 0))
        blackhole.listen(0)
        port = blackhole.getsockname()[1]
        fillers = []
        try:
            for _ in range(4):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setblocking(False)
                s.connect_ex(("127.0.0.1", port))
                fillers.append(s)
            time.sleep(0.2)
            cfg = h.config(h.free_port(), [h.listener("public", h.free_port())],
                           [h.cluster("hole", "127.0.0.1:%d" % port, connect_timeout="300ms")],
                           [{"name": "all", "match": {"path_prefix": "/"}, "backend": "hole",
                             "timeout": "10s"}])
            tp = self.stack.turnpike(cfg)
            start = time.monotonic()
            r = tp.get("/x", timeout=h.scaled(10))
            elapsed = time.monotonic() - start
            self.assertEqual(r.status, 504, repr(r))
            self.assertIn("request_id", r.json())
            self.assertLess(elapsed, h.scaled(3))
        finally:
            for s in fillers:
                s.close()
            blackhole.close()

    def test_max_connections_makes_new_clients_wait(self):
        echo = self.stack.echo("cap")
        cfg = h.config(h.free_port(), [h.listener("capped", h.free_port(), max_connections=2)],
                       [h.cluster("cap", echo)],
                       [{"name": "all", "match": {"path_prefix": "/"}, "backend": "cap"}],
                       workers=1)
        tp = self.stack.turnpike(cfg)
        held = [tp.conn(timeout=5) for _ in range(2)]
        for c in held:  # make sure both are accepted and served
            self.assertEqual(c.request("GET", "/held").status, 200)
        third = tp.conn(timeout=h.scaled(1))
        third.send(h.build_request("GET", "/third"))
        with self.assertRaises((socket.timeout, TimeoutError, h.HttpError)):
            third.read_response()  # not accepted while the listener is at its cap
        held[0].close()
        third.settimeout(h.scaled(5))
        r = third.read_response()
        self.assertEqual(r.status, 200)
        self.assertEqual(r.json()["path"], "/third")
        third.close()
        held[1].close()

    def test_ready_is_503_while_draining(self):
        echo = self.stack.echo("slow")
        cfg = h.config(h.free_port(), [h.listener("public", h.free_port())],
                       [h.cluster("slow", echo)],
                       [{"name": "all", "match": {"path_prefix": "/"}, "backend": "slow"}],
                       drain_timeout="10s")
        tp = self.stack.turnpike(cfg)
        self.assertEqual(tp.ready_status(), 200)
        result = {}
        t = threading.Thread(target=lambda: result.setdefault("r", tp.get("/delay/1500")))
        t.start()
        time.sleep(0.3)
        tp.proc.send_signal(signal.SIGTERM)
        h.wait_for(lambda: tp.ready_status() == 503, h.scaled(2), what="/ready 503")
        t.join(h.scaled(10))
        self.assertEqual(result["r"].status, 200)
        self.assertEqual(tp.proc.wait(h.scaled(10)), 0)


if __name__ == "__main__":
    unittest.main()
