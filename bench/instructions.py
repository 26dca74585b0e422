#!/usr/bin/env python3
"""Instructions per request of Turnpike's own process, counted by callgrind: repeatable for the
same binary and traffic whatever else the machine does, so two builds can be compared exactly
(wall-clock benchmarks on this 2-core machine move by several percent between runs). Not a
side-by-side benchmark (bench/run.sh is): a ruler for one change.

  bench/instructions.py [--requests N] [--shape small|post|h2c|close] BINARY [BINARY...]
  bench/instructions.py --report docs/benchmarks.md --label-a BEFORE --label-b AFTER A B
      [--section NAME --heading TEXT --intro TEXT]
      (every shape, both binaries; writes the report's "instructions" section, or NAME's)

For each binary: one worker under valgrind --tool=callgrind, one turnpike-echo upstream, a
warm-up, counters zeroed, N requests over keep-alive connections, counters dumped; prints
instructions per request, and the top functions with --top K. Only processes it started are
stopped, by PID.
"""

import argparse
import glob
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import bench  # bench/bench.py (this script's directory is on sys.path)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INCLUSIVE = "no"


def wait_port(port, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("nothing listens on %d" % port)


def load(shape, port, requests, client):
    """Sends `requests` requests of `shape`; returns when all were answered."""
    if shape == "small":
        subprocess.run([client, "--host", "127.0.0.1", "--port", str(port), "--path", "/",
                        "--requests", str(requests)], check=True, capture_output=True, timeout=600)
    elif shape == "post":
        body = b"x" * 512
        req = (b"POST /submit HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n" % len(body)) + body
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.settimeout(60)
            for _ in range(requests):
                s.sendall(req)
                buf = b""
                while b"\r\n\r\n" not in buf:
                    buf += s.recv(65536)
                head, rest = buf.split(b"\r\n\r\n", 1)
                n = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
                while len(rest) < n:
                    rest += s.recv(65536)
    elif shape == "close":
        req = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
        for _ in range(requests):
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.settimeout(60)
                s.sendall(req)
                while s.recv(65536):
                    pass
    elif shape == "h2c":
        subprocess.run(["h2load", "-c1", "-m10", "-n", str(requests),
                        "http://127.0.0.1:%d/" % port], check=True, capture_output=True,
                       timeout=600)
    else:
        raise SystemExit("unknown shape " + shape)


def measure(binary, echo, client, shape, requests, top, workdir):
    up, port, admin = bench.free_ports(3)  # held together while picked: three different ports
    cfg = os.path.join(workdir, "tp.yaml")
    protocols = "[http1, h2c]" if shape == "h2c" else "[http1]"
    with open(cfg, "w") as f:
        f.write(f"""workers: 1
admin: {{listen: "127.0.0.1:{admin}"}}
listeners:
  - {{name: main, listen: "127.0.0.1:{port}", protocols: {protocols}}}
clusters:
  - {{name: echo, endpoints: ["127.0.0.1:{up}"]}}
routes:
  - {{name: all, match: {{path_prefix: /}}, backend: echo}}
access_log: {{path: "off"}}
""")
    out = os.path.join(workdir, "callgrind.out")
    procs = []
    try:
        procs.append(subprocess.Popen([echo, "--listen", "127.0.0.1:%d" % up],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        tp = subprocess.Popen(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out,
                               binary, "-c", cfg], stdout=subprocess.DEVNULL,
                              stderr=open(os.path.join(workdir, "valgrind.log"), "w"))
        procs.append(tp)
        wait_port(up, 10)
        wait_port(port, 60)
        load(shape, port, max(200, requests // 10), client)  # warm-up: pools, caches
        subprocess.run(["callgrind_control", "-z", str(tp.pid)], check=True, capture_output=True)
        t0 = time.monotonic()
        load(shape, port, requests, client)
        elapsed = time.monotonic() - t0
        for f in glob.glob(out + "*"):
            os.unlink(f)
        subprocess.run(["callgrind_control", "-d", str(tp.pid)], check=True, capture_output=True)
        dumps = sorted(glob.glob(out + "*"))
        total = 0
        for d in dumps:
            with open(d) as f:
                for line in f:
                    if line.startswith("summary:") or line.startswith("totals:"):
                        total = max(total, int(line.split()[1]))
        text = ""
        if top:
            text = subprocess.run(["callgrind_annotate", "--inclusive=" + INCLUSIVE, "--auto=no",
                                   "--threshold=100", dumps[-1]],
                                  capture_output=True, text=True).stdout
            lines = [l for l in text.splitlines()
                     if re.match(r"\s*[\d,]+ +(\([ \d.]+%\) +)?\S", l) and "PROGRAM TOTALS" not in l]
            text = "\n".join(lines[:top])
        return total / requests, elapsed, text
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()


SHAPES = (("small", "keep-alive `GET /` (about 400 bytes back)"),
          ("post", "keep-alive `POST` with a 512-byte body"),
          ("h2c", "h2c, 1 connection × 10 streams, `GET /`"),
          ("close", "a new connection per request, `GET /` with `Connection: close`"))


def write_report(path, rows, label_a, label_b, requests, section="instructions",
                 heading="Instructions per request (callgrind)", intro=""):
    """Writes the comparison into the report's <!-- SECTION:begin --> .. end block."""
    lines = ["<!-- %s:begin -->" % section, "## " + heading, ""]
    if intro:
        lines += [intro, ""]
    lines += ["Counted by `bench/instructions.py`: Turnpike (one worker) under "
              "`valgrind --tool=callgrind`, one turnpike-echo upstream, a warm-up, then %d "
              "requests; the instructions Turnpike's process executed, per request (user space "
              "only; system calls per request are compared with `strace -c`). Repeatable to a "
              "fraction of a percent for the same binary, so it measures one change exactly, "
              "where wall-clock runs on this 2-core machine move by several percent." % requests,
              "", "| traffic | %s | %s | ratio |" % (label_a, label_b), "|---|---:|---:|---:|"]
    for shape, what, a, b in rows:
        lines.append("| %s | %s | %s | %.3f |" % (what, format(round(a), ","), format(round(b), ","),
                                                  b / a))
    lines.append("<!-- %s:end -->" % section)
    bench.write_marked_section(path, lines[0], lines[-1], "\n".join(lines))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binaries", nargs="+")
    ap.add_argument("--requests", type=int, default=5000)
    ap.add_argument("--shape", default="small")
    ap.add_argument("--top", type=int, default=0)
    ap.add_argument("--inclusive", action="store_true", help="--top by cost including callees")
    ap.add_argument("--keep", help="copy the callgrind dump here (for callgrind_annotate --tree)")
    ap.add_argument("--report", help="write the comparison of two binaries into this report")
    ap.add_argument("--label-a", default="before")
    ap.add_argument("--label-b", default="after")
    ap.add_argument("--section", default="instructions",
                    help="the report's marked section to write (<!-- NAME:begin -->)")
    ap.add_argument("--heading", default="Instructions per request (callgrind)")
    ap.add_argument("--intro", default="", help="a paragraph before the method")
    ap.add_argument("--echo", default=os.path.join(ROOT, "build/release/turnpike-echo"))
    ap.add_argument("--client", default=os.path.join(ROOT, "build/release/turnpike-client"))
    a = ap.parse_args()
    global INCLUSIVE
    INCLUSIVE = "yes" if a.inclusive else "no"
    if not shutil.which("valgrind"):
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    if a.report:
        if len(a.binaries) != 2:
            raise SystemExit("--report compares exactly two binaries")
        rows = []
        for shape, what in SHAPES:
            per = []
            for b in a.binaries:
                with tempfile.TemporaryDirectory() as wd:
                    per.append(measure(b, a.echo, a.client, shape, a.requests, 0, wd)[0])
            print("%s: %s %.0f, %s %.0f" % (shape, a.label_a, per[0], a.label_b, per[1]))
            rows.append((shape, what, per[0], per[1]))
        write_report(a.report, rows, a.label_a, a.label_b, a.requests, a.section, a.heading,
                     a.intro)
        return 0
    for b in a.binaries:
        with tempfile.TemporaryDirectory() as wd:
            per, elapsed, top = measure(b, a.echo, a.client, a.shape, a.requests, a.top, wd)
            if a.keep:
                dumps = sorted(glob.glob(os.path.join(wd, "callgrind.out*")))
                shutil.copy(dumps[-1], a.keep)
        print("%s: %s: %.0f instructions/request (%d requests, %.1f s under callgrind)" %
              (b, a.shape, per, a.requests, elapsed))
        if top:
            print(top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
