"""Signals the daemon must survive: SIGPIPE (the reader of `access_log: stdout` goes away).
"""

import json
import os
import select
import signal
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


if __name__ == "__main__":
    unittest.main()
