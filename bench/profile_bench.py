#!/usr/bin/python3
"""Profile mode of bench/run.sh: where Turnpike's CPU goes, per request, under one scenario's load.

`PROFILE=upload bench/run.sh` (or PROFILE="small 256k ...") starts the shared turnpike-echo and
Turnpike alone, with the configs and the load of bench/bench.py's scenarios, and for each scenario:
  perf       (default where perf can sample) a warm-up run without the profiler (its CPU µs/request
             is the reference), then `perf record -e <cycles, or cpu-clock where the machine exposes
             no hardware counters> -F PROFILE_FREQ --call-graph PROFILE_CALLGRAPH -p <turnpike>` over
             one DURATION-second run of the scenario's load;
  callgrind  (PROFILE_TOOL=callgrind, or where perf cannot sample) Turnpike under `valgrind
             --tool=callgrind --instr-atstart=no`, instrumentation switched on (callgrind_control -i on)
             only around a fixed count of PROFILE_REQUESTS requests sent with h2load.
It writes $PROFILE_DIR/profile-<scenario>.txt: the run's numbers, then the top functions by self
time with their share and µs per request (share x the run's proxy CPU µs/request; for callgrind,
instructions per request instead), the split by shared object, and (with call graphs) the top
functions by inclusive time. perf's data file is kept next to it (profile-<scenario>.perf.data) for
`perf report -i`; callgrind's too (profile-<scenario>.callgrind.out) for callgrind_annotate or
kcachegrind. No report is written to docs/benchmarks.md. Imported by bench/bench.py (stdlib only).
"""

import datetime
import os
import re
import signal
import subprocess
import time

import bench
from bench import Procs, env_int, fmt, log, run_cmd


def perf_event():
    """"cycles" where the machine exposes hardware counters, else the software "cpu-clock" (VMs)."""
    out = run_cmd(["perf", "stat", "-x,", "-e", "cycles", "--", "true"])
    return "cycles" if re.search(r"^\d+,[^,]*,cycles", out, re.M) else "cpu-clock"


def perf_can_sample(workdir, event):
    """True when `perf record` works here (permissions, kernel support): a short self-test."""
    data = os.path.join(workdir, "perf-selftest.data")
    try:
        r = subprocess.run(["perf", "record", "-e", event, "-F", "999", "-o", data, "--", "/usr/bin/python3", "-c",
                            "sum(range(3000000))"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    m = re.search(r"\((\d+) samples\)", r.stdout + r.stderr)
    try:
        os.remove(data)
    except FileNotFoundError:
        pass
    return r.returncode == 0 and bool(m) and int(m.group(1)) > 0


def short(sym, n=150):
    sym = re.sub(r"\s+", " ", sym.strip())
    sym = re.sub(r" \[/[^\]]*/([^/\]]+)\]$", r" [\1]", sym)  # callgrind: the object's file name only
    return sym if len(sym) <= n else sym[:n - 1] + "…"


# ----------------------------------------------------------------------------------------------
# perf


def perf_tables(data, callgraph):
    """(self rows [(pct, dso, sym)], dso rows [(pct, dso)], inclusive rows [(children pct, self pct, sym)])."""
    base = ["perf", "report", "-i", data, "--stdio", "--percent-limit", "0.2", "-g", "none"]
    out = run_cmd(base + ["--no-children", "--sort", "dso,sym"], timeout=600)
    self_rows = [(float(m.group(1)), m.group(2), m.group(3)) for m in
                 re.finditer(r"^\s+([\d.]+)%\s+(\S+)\s+\[.\]\s+(.*)$", out, re.M)]
    out = run_cmd(base + ["--no-children", "--sort", "dso"], timeout=600)
    dso_rows = [(float(m.group(1)), m.group(2)) for m in re.finditer(r"^\s+([\d.]+)%\s+(\S+)\s*$", out, re.M)]
    incl_rows = []
    if callgraph != "none":
        out = run_cmd(base + ["--children", "--sort", "sym"], timeout=600)
        incl_rows = [(float(m.group(1)), float(m.group(2)), m.group(3)) for m in
                     re.finditer(r"^\s+([\d.]+)%\s+([\d.]+)%\s+\[.\]\s+(.*)$", out, re.M)]
    samples = re.search(r"^# Samples: (\S+)", run_cmd(base + ["--no-children", "--sort", "dso", "--header-only"],
                                                       timeout=600) + out, re.M)
    return self_rows, dso_rows, incl_rows, (samples.group(1) if samples else "?")


def profile_perf(s, sc, ports, proc, echo, procs, event, freq, callgraph):
    path = os.path.join(s.profile_dir, f"profile-{sc.name}.perf.data")
    cg = {"dwarf": ["--call-graph", "dwarf,16384"], "fp": ["-g"], "none": []}[callgraph]
    cmd = ["perf", "record", "-e", event, "-F", str(freq), "-p", str(proc.pid), "-o", path] + cg
    # Reference: the same load without the profiler.
    ref = bench.run_scenario(s, sc, ports, proc, echo, s.duration, f"profile-ref-{sc.name}")
    log(f"{sc.name}: without perf {bench.describe(ref)}")
    time.sleep(s.pause)
    perf = procs.start("perf", cmd, os.path.join(s.workdir, f"perf-{sc.name}.log"))
    time.sleep(0.5)  # perf attaches to every thread of the running process
    try:
        r = bench.run_scenario(s, sc, ports, proc, echo, s.duration, f"profile-{sc.name}")
    finally:
        if perf.poll() is None:
            perf.send_signal(signal.SIGINT)  # perf record writes its data and exits
        try:
            perf.wait(timeout=120)
        except subprocess.TimeoutExpired:
            procs.stop("perf", perf)
    log(f"{sc.name}: under perf {bench.describe(r)}")
    self_rows, dso_rows, incl_rows, samples = perf_tables(path, callgraph)
    cpu = r.get("cpu_us")
    L = header(s, sc, "perf", r)
    L.append(f"- profiler: `{' '.join(cmd)}` (event `{event}`"
             + (": this machine exposes no hardware counters, so samples are taken on CPU time"
                if event == "cpu-clock" else "") + f"), {samples} samples; data file `{path}` "
             f"(`perf report -i {os.path.basename(path)}` for more)")
    L.append(f"- proxy CPU µs/request: **{fmt(cpu, 1)}** under perf, {fmt(ref.get('cpu_us'), 1)} in the same load "
             f"without it ({fmt(ref.get('rate'), 0)} req/s, p99 {fmt(ref.get('p99_ms'), 2)} ms); *µs/req* below is "
             "a function's share of Turnpike's samples × the CPU µs/request under perf")
    L.append("")
    L.append("## Self time by function (where the CPU is spent)\n")
    L.append("| share | µs/req | function | object |\n|---:|---:|---|---|")
    for pct, dso, sym in self_rows[:40]:
        L.append(f"| {pct:.2f}% | {fmt(pct / 100 * cpu if cpu else None, 2)} | `{short(sym)}` | {dso} |")
    L.append("\n## By object (Turnpike itself, libc, libssl, the kernel ...)\n")
    L.append("| share | µs/req | object |\n|---:|---:|---|")
    for pct, dso in dso_rows[:15]:
        L.append(f"| {pct:.2f}% | {fmt(pct / 100 * cpu if cpu else None, 2)} | {dso} |")
    # Thread start-up frames (clone3, the worker's lambda, io_context::run ...) carry ~100 %: not informative.
    busy = [row for row in incl_rows if row[0] < 95.0]
    if busy:
        L.append(f"\n## Inclusive time: the function and everything it calls, the kernel included (call graphs: "
                 f"{callgraph})\n")
        L.append("Asio starts a socket operation after the awaiting coroutine has suspended, so the kernel time of "
                 "reads and writes shows under `boost::asio::detail::epoll_reactor::start_op` / `reactor_op::perform` "
                 "and the system-call entry points, not under the `turnpike::` function that awaited it.\n")
        L.append("| inclusive | µs/req | self | function |\n|---:|---:|---:|---|")
        for c, sf, sym in busy[:25]:
            L.append(f"| {c:.2f}% | {fmt(c / 100 * cpu if cpu else None, 2)} | {sf:.2f}% | `{short(sym)}` |")
        own = [row for row in busy if "turnpike::" in row[2]]
        if own:
            L.append("\nTurnpike's own functions only:\n")
            L.append("| inclusive | µs/req | self | function |\n|---:|---:|---:|---|")
            for c, sf, sym in own[:25]:
                L.append(f"| {c:.2f}% | {fmt(c / 100 * cpu if cpu else None, 2)} | {sf:.2f}% | `{short(sym)}` |")
    return L, self_rows[:10], cpu


# ----------------------------------------------------------------------------------------------
# callgrind


def h2load_fixed(s, sc, ports, n, tag):
    """Send n requests of the scenario with h2load (a fixed count; wrk only runs for a duration)."""
    path = s.scenario_path(sc)
    if sc.kind == "h2load":
        cmds = [["h2load", "-n", str(n), "-c", str(s.h2_connections), "-m", str(s.h2_streams),
                 f"http://127.0.0.1:{ports['h2c']}{path}"]]
    else:
        url = (f"https://127.0.0.1:{ports['tls']}{path}" if sc.listener == "tls"
               else f"http://127.0.0.1:{ports['plain']}{path}")
        extra = []
        if sc.name == "upload":
            body = os.path.join(s.workdir, "upload.bin")
            with open(body, "wb") as f:
                f.write(bench.UPLOAD_BODY)
            extra = ["-d", body, "-H", "content-type: application/octet-stream"]
        if sc.name == "close":  # one connection per request: batches of -n B -c B
            b = 16
            cmds = [["h2load", "--h1", "-n", str(b), "-c", str(b), url] for _ in range(max(1, n // b))]
        else:
            c = min(16, n)
            cmds = [["h2load", "--h1", "-n", str(n), "-c", str(c)] + extra + [url]]
    done = 0
    with open(os.path.join(s.workdir, f"h2load-{tag}.txt"), "w") as f:
        for cmd in cmds:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
            f.write(" ".join(cmd) + "\n" + r.stdout + r.stderr)
            m = re.search(r"^requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded", r.stdout, re.M)
            done += int(m.group(1)) if m else 0
    return done


def profile_callgrind(s, sc, procs, echo_addr, status):
    out = os.path.join(s.profile_dir, f"profile-{sc.name}.callgrind.out")
    wrap = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
    started = bench.start_proxy(s, procs, "turnpike", echo_addr, status, wrap=wrap, ready_timeout=240)
    if not started:
        raise RuntimeError(f"Turnpike under callgrind did not start: {status['turnpike'].get('detail')}")
    proc, ports = started
    pr = bench.probe(s, sc, ports, proc)
    if not pr["ok"]:
        raise RuntimeError(f"probe failed under callgrind: {pr['note']}")
    h2load_fixed(s, sc, ports, max(16, s.profile_requests // 10), f"cg-warm-{sc.name}")  # pools, caches
    run_cmd(["callgrind_control", "-i", "on", str(proc.pid)], timeout=60)
    t0 = time.monotonic()
    n = h2load_fixed(s, sc, ports, s.profile_requests, f"cg-{sc.name}")
    wall = time.monotonic() - t0
    run_cmd(["callgrind_control", "-i", "off", str(proc.pid)], timeout=60)
    procs.stop("turnpike", proc, timeout=120)  # callgrind writes its file at exit
    log(f"{sc.name}: {n} requests under callgrind in {wall:.1f} s")
    ann = run_cmd(["callgrind_annotate", "--inclusive=no", "--threshold=99", out], timeout=300)
    total = re.search(r"^([\d,]+) \(100\.0%\)\s+PROGRAM TOTALS", ann, re.M)
    total_ir = int(total.group(1).replace(",", "")) if total else None
    rows = [(int(m.group(1).replace(",", "")), float(m.group(2)), m.group(3)) for m in
            re.finditer(r"^\s*([\d,]+) \(\s*([\d.]+)%\)\s+(.*)$", ann, re.M) if "PROGRAM TOTALS" not in m.group(3)]
    incl = run_cmd(["callgrind_annotate", "--inclusive=yes", "--threshold=99", out], timeout=300)
    incl_rows = [(int(m.group(1).replace(",", "")), float(m.group(2)), m.group(3)) for m in
                 re.finditer(r"^\s*([\d,]+) \(\s*([\d.]+)%\)\s+(.*)$", incl, re.M) if "PROGRAM TOTALS" not in m.group(3)]
    r = {"count": n, "rate": None}
    L = header(s, sc, "callgrind", r)
    L.append(f"- profiler: `{' '.join(wrap)} turnpike …`, instrumentation on only around {n} requests sent with h2load "
             f"(`h2load{' --h1' if sc.kind != 'h2load' else ''} -n {s.profile_requests}`), {wall:.1f} s under "
             f"valgrind; output `{out}` (`callgrind_annotate` or kcachegrind for more)")
    L.append(f"- instructions per request: **{fmt(total_ir / n if total_ir and n else None, 0)}** "
             "(Ir, all of Turnpike's threads; callgrind counts instructions, not time: cache misses and system "
             "calls' kernel time are not in it)")
    L.append("")
    L.append("## Self cost by function (instructions)\n")
    L.append("| share | Ir/req | function (file:function) |\n|---:|---:|---|")
    for ir, pct, sym in rows[:40]:
        L.append(f"| {pct:.2f}% | {fmt(ir / n if n else None, 0)} | `{short(sym)}` |")
    if incl_rows:
        L.append("\n## Inclusive cost (the function and what it calls)\n")
        L.append("| inclusive | Ir/req | function |\n|---:|---:|---|")
        for ir, pct, sym in incl_rows[:30]:
            L.append(f"| {pct:.2f}% | {fmt(ir / n if n else None, 0)} | `{short(sym)}` |")
    return L, [(pct, "", sym) for _, pct, sym in rows[:10]], None


# ----------------------------------------------------------------------------------------------


def header(s, sc, tool, r):
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    vers = run_cmd([s.turnpike_bin, "--version"])
    git = run_cmd(["git", "-C", bench.ROOT, "rev-parse", "--short", "HEAD"])
    L = [f"# Turnpike profile: {sc.short}\n",
         f"Written by `PROFILE={sc.name} bench/run.sh` ({tool}) on {now}; `{vers}`, git `{git}`, binary "
         f"`{s.turnpike_bin}`, {os.cpu_count()} CPUs, load average at start "
         f"{' '.join(open('/proc/loadavg').read().split()[:3])}.\n",
         f"- scenario `{sc.name}`: {sc.label}; Turnpike with bench/run.sh's config (2 workers), the shared "
         f"turnpike-echo upstream, nothing else measured"]
    if r.get("rate") is not None:
        L.append(f"- load: {s.duration} s, {r.get('count')} requests, {fmt(r.get('rate'), 0)} req/s, p50 "
                 f"{fmt(r.get('p50_ms'), 2)} ms, p99 {fmt(r.get('p99_ms'), 2)} ms, errors {r.get('errors')}, "
                 f"non-2xx {r.get('non2xx')}" + ("" if r.get("ok") else f", FAILED: {'; '.join(r.get('problems', []))}"))
    return L


def main(s):
    s.profile_dir = os.environ.get("PROFILE_DIR") or os.path.join(s.build_dir or s.workdir, "bench")
    s.profile_tool = os.environ.get("PROFILE_TOOL", "auto")
    s.profile_freq = env_int("PROFILE_FREQ", 499)
    s.profile_callgraph = os.environ.get("PROFILE_CALLGRAPH", "dwarf")
    s.profile_requests = env_int("PROFILE_REQUESTS", 2000)
    if s.profile_callgraph not in ("dwarf", "fp", "none"):
        raise SystemExit(f"PROFILE_CALLGRAPH: dwarf, fp or none, not '{s.profile_callgraph}'")
    os.makedirs(s.profile_dir, exist_ok=True)
    procs = Procs(s.workdir)

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    tool = s.profile_tool
    event = None
    if tool in ("auto", "perf"):
        event = perf_event()
        if bench.shutil_which("perf") and perf_can_sample(s.workdir, event):
            tool = "perf"
        elif tool == "perf":
            raise SystemExit("PROFILE_TOOL=perf: `perf record` cannot sample here")
        else:
            tool = "callgrind"
            log("perf cannot sample here: using callgrind")
    log(f"profiling Turnpike with {tool}" + (f" (event {event}, {s.profile_freq} Hz, call graph "
                                             f"{s.profile_callgraph})" if tool == "perf" else "")
        + f": {' '.join(sc.name for sc in s.profile)}; output in {s.profile_dir}")
    status = {"turnpike": {"state": "not started"}}
    written = []
    try:
        started = bench.start_echo(s, procs)
        if not started:
            return 2
        echo, up_addr = started
        if tool == "perf":
            st = bench.start_proxy(s, procs, "turnpike", up_addr, status)
            if not st:
                log(f"turnpike: {status['turnpike'].get('detail')}")
                return 2
            proc, ports = st
        for sc in s.profile:
            if tool == "perf":
                pr = bench.probe(s, sc, ports, proc)
                if not pr["ok"]:
                    log(f"{sc.name}: probe failed ({pr['note']}); not profiled")
                    continue
                if s.warmup > 0:
                    bench.run_scenario(s, sc, ports, proc, echo, s.warmup, f"profile-warm-{sc.name}", warm=0)
                L, top, cpu = profile_perf(s, sc, ports, proc, echo, procs, event, s.profile_freq,
                                           s.profile_callgraph)
            else:
                L, top, cpu = profile_callgrind(s, sc, procs, up_addr, status)
            path = os.path.join(s.profile_dir, f"profile-{sc.name}.txt")
            with open(path, "w") as f:
                f.write("\n".join(L) + "\n")
            written.append(path)
            log(f"{sc.name}: written {path}; top functions by self time:")
            for pct, dso, sym in top[:8]:
                log(f"    {pct:6.2f}%  " + (f"{pct / 100 * cpu:6.2f} µs/req  " if cpu else "") + short(sym, 110))
    finally:
        procs.stop_all()
    return 0 if written else 1
