"""Signals the daemon must survive: SIGPIPE (the reader of `access_log: stdout` goes away) and a
SIGHUP sent the moment READY=1 reaches the service manager (Type=notify-reload sends reloads as
soon as the service says it is ready, so the handlers must exist by then).
"""

import json
import os
import select
import signal
import socket
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

ROUTES = [{"name": "ok", "match": {"path_prefix": "/"},
           "respond": {"status": 200, "body": "ok\n"}}]


def exit_status(proc, wait=1.0):
    """How the process ended ("killed by SIGPIPE", "exit 1"), or "still running"."""
    deadline = time.monotonic() + wait
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    rc = proc.poll()
    if rc is None:
        return "still running"
    return "killed by %s" % signal.Signals(-rc).name if rc < 0 else "exit %d" % rc


def cpu_seconds(pid):
    """User + system CPU time of a process (all its threads) so far."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # Fields 14 and 15 of stat(5), counted from the state field (3).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class SigpipeTest(h.TurnpikeCase):
    def get_or_fail(self, tp, path):
        try:
            return tp.get(path, timeout=h.scaled(5))
        except (OSError, h.HttpError) as e:
            self.fail("request %s failed (%s); turnpike: %s\n%s"
                      % (path, e, exit_status(tp.proc), tp.proc.describe()))

    def test_access_log_on_stdout_into_a_pipe_whose_reader_exits(self):
        cfg = h.config(h.free_port(), [h.listener("public", h.free_port())], [], ROUTES,
                       access_log="stdout")
        rfd, wfd = os.pipe()
        try:
            tp = self.stack.turnpike(cfg, stdout=wfd)
        finally:
            os.close(wfd)  # the daemon holds the only write end, this test the only read end
        try:
            for i in range(5):
                self.assertEqual(self.get_or_fail(tp, "/before/%d" % i).status, 200)
            got = b""
            deadline = time.monotonic() + h.scaled(5)
            while got.count(b"\n") < 5 and time.monotonic() < deadline:
                if select.select([rfd], [], [], 0.1)[0]:
                    got += os.read(rfd, 65536)
            paths = sorted(json.loads(line)["path"] for line in got.splitlines())
            self.assertEqual(paths, ["/before/%d" % i for i in range(5)], got)
        finally:
            os.close(rfd)  # the reader exits: every write into the pipe now fails

        # Lines reach the writer once per sweep (200 ms): spread the requests over a second
        # and more, so several writes meet the closed pipe while requests are being served.
        for i in range(12):
            self.assertEqual(self.get_or_fail(tp, "/after/%d" % i).status, 200)
            time.sleep(0.1)
        time.sleep(0.5)
        self.assertIsNone(tp.proc.poll(), tp.proc.describe())

        # Not spinning on the failed writes: an idle second costs next to no CPU.
        before = cpu_seconds(tp.pid)
        time.sleep(1.0)
        used = cpu_seconds(tp.pid) - before
        self.assertLess(used, 0.3, "turnpike used %.2fs of CPU in an idle second" % used)
        self.assertEqual(self.get_or_fail(tp, "/still").status, 200)

        # Said once, not once per batch.
        err = tp.proc.stderr()
        failures = [l for l in err.splitlines() if "access log: write failed" in l]
        self.assertEqual(len(failures), 1, err)
        self.assertIn("Broken pipe", failures[0])
        self.assertEqual(tp.proc.stop(), 0, tp.proc.describe())


class ReadyThenSighupTest(h.TurnpikeCase):
    ROUNDS = 8

    def next_message(self, srv, tp, what):
        """The next sd_notify datagram as a dict; fails if turnpike dies while we wait."""
        deadline = time.monotonic() + h.scaled(10)
        while time.monotonic() < deadline:
            if select.select([srv], [], [], 0.05)[0]:
                text = srv.recv(4096).decode()
                return dict(l.split("=", 1) for l in text.splitlines() if "=" in l)
            if tp.proc.poll() is not None:
                self.fail("turnpike ended (%s) while waiting for %s; SIGHUP was sent the "
                          "moment READY=1 arrived\n%s"
                          % (exit_status(tp.proc), what, tp.proc.describe()))
        self.fail("no %s from turnpike\n%s" % (what, tp.proc.describe()))

    def one_round(self, i):
        sock_path = self.stack.path("notify-%d.sock" % i)
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        srv.bind(sock_path)
        try:
            cfg = h.config(h.free_port(), [h.listener("public", h.free_port())], [], ROUTES)
            tp = self.stack.turnpike(cfg, wait=False, env={"NOTIFY_SOCKET": sock_path},
                                     name="turnpike-%d.yaml" % i)
            srv.settimeout(h.scaled(20))
            try:
                first = srv.recv(4096)
            except socket.timeout:
                self.fail("no READY=1 from turnpike\n" + tp.proc.describe())
            os.kill(tp.pid, signal.SIGHUP)  # at once, as systemctl reload right after start
            m = dict(l.split("=", 1) for l in first.decode().splitlines() if "=" in l)
            self.assertEqual((m.get("READY"), m.get("MAINPID")), ("1", str(tp.pid)), m)

            self.assertEqual(self.next_message(srv, tp, "RELOADING=1").get("RELOADING"), "1")
            m = self.next_message(srv, tp, "READY=1 after the reload")
            self.assertEqual((m.get("READY"), m.get("STATUS")), ("1", "serving generation 1"), m)
            self.assertIsNone(tp.proc.poll(), tp.proc.describe())
            status = tp.admin("GET", "/config/status").json()
            self.assertEqual(status["last_reload"]["trigger"], "SIGHUP", status)
            self.assertEqual(tp.get("/x").status, 200)
            self.assertEqual(tp.proc.stop(), 0, tp.proc.describe())
        finally:
            srv.close()

    def test_sighup_the_moment_ready_arrives(self):
        # This thread and turnpike (which inherits the affinity) share one CPU: sending READY=1
        # wakes this thread, which the scheduler then tends to run at once, so the SIGHUP lands
        # right after the datagram, as early as any service manager could send it.
        saved = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {min(saved)})
        try:
            for i in range(self.ROUNDS):
                with self.subTest(round=i):
                    self.one_round(i)
        finally:
            os.sched_setaffinity(0, saved)


if __name__ == "__main__":
    unittest.main()
