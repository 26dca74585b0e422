"""Active health checks (clusters[].health_check), as a user sees them with real backends: an
endpoint whose health check fails leaves balancing (while it still answers real requests) and
comes back once it passes again; a frozen backend (SIGSTOP) is taken out by check timeouts, so
requests stop waiting on it; a stopped one is noticed by a tcp check with no traffic at all; a
gRPC backend (python3-grpcio, with Debian's grpc/health/v1/health.proto) is checked with
grpc.health.v1.Health/Check over h2c and leaves balancing when it reports NOT_SERVING; health
survives a reload that keeps the endpoint and its check; GET /clusters shows it all.
"""

import collections
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import tls_certs  # noqa: E402

PROTOC = "/usr/bin/protoc"
HEALTH_PROTO = "/usr/share/grpc-proto/grpc/health/v1/health.proto"

FAST = {"interval": "200ms", "timeout": "1s", "unhealthy_threshold": 2,
        "healthy_threshold": 2}


class HealthCheckTest(h.TurnpikeCase):
    def start(self, endpoints, check, workers=2, **cluster):
        cl = {"name": "pool", "connect_timeout": "1s", "outlier_detection": "off",
              "endpoints": [getattr(e, "addr", e) for e in endpoints], "health_check": check}
        cl.update(cluster)
        self.admin_port = h.free_port()
        self.listen_port = h.free_port()
        self.cluster = cl
        self.workers = workers
        return self.stack.turnpike(self.cfg())

    def cfg(self, extra_routes=()):
        return h.config(self.admin_port, [h.listener("public", self.listen_port)], [self.cluster],
                        list(extra_routes) +
                        [{"name": "all", "match": {"path_prefix": "/"}, "backend": "pool"}],
                        workers=self.workers, reload={"watch": False})

    def backend(self, name, health=200):
        b = h.CannedBackend(name, paths={"/healthz": health})
        self.addCleanup(b.stop)
        return b

    def served_by(self, tp, n, timeout=10):
        seen = collections.Counter()
        for _ in range(n):
            r = tp.get("/", timeout=timeout)
            seen[(r.status, r.header("X-Upstream-Name"))] += 1
        return seen

    def endpoint(self, tp, port):
        body = json.loads(tp.admin("GET", "/clusters").body)
        for c in body["clusters"]:
            for e in c["endpoints"]:
                if e["address"] == "127.0.0.1:%d" % port:
                    return e
        raise AssertionError("no endpoint on port %d in %s" % (port, body))

    def wait_state(self, tp, port, state, timeout=10):
        h.wait_for(lambda: self.endpoint(tp, port)["state"] == state, h.scaled(timeout),
                   what="endpoint :%d %s" % (port, state))

    def test_a_failing_http_check_takes_the_endpoint_out_and_a_passing_one_back(self):
        good = self.backend("good")
        flaky = self.backend("flaky")
        tp = self.start([good, flaky], dict(FAST, http={"path": "/healthz"}))
        self.assertGreater(self.served_by(tp, 10)[(200, "flaky")], 0)
        self.assertGreater(flaky.hits["/healthz"], 0)
        # Its real requests still answer 200: only the health check can take it out.
        flaky.paths["/healthz"] = 503
        self.wait_state(tp, flaky.port, "unhealthy")
        seen = self.served_by(tp, 40)
        self.assertEqual(seen, {(200, "good"): 40})
        self.assertRegex(tp.proc.stderr(),
                         r"cluster 'pool': endpoint 127\.0\.0\.1:%d unhealthy: 2 health checks "
                         r"failed in a row \(last: status 503 \(expected 200-399\)\)" % flaky.port)
        e = self.endpoint(tp, flaky.port)
        self.assertEqual(e["health_check"]["healthy"], False)
        self.assertGreaterEqual(e["health_check"]["failures_in_a_row"], 2)
        flaky.paths["/healthz"] = 200
        self.wait_state(tp, flaky.port, "healthy")
        self.assertRegex(tp.proc.stderr(),
                         r"endpoint 127\.0\.0\.1:%d healthy again \(2 health checks passed in a "
                         r"row\)" % flaky.port)
        self.assertGreater(self.served_by(tp, 20)[(200, "flaky")], 0)

    def test_expected_statuses_and_host_are_what_the_check_uses(self):
        b = self.backend("b", health=204)
        other = self.backend("other")
        tp = self.start([b, other], dict(FAST, http={"path": "/healthz", "host": "health.internal",
                                                     "expected_statuses": ["200"]}))
        # 204 is not 200: unhealthy.
        self.wait_state(tp, b.port, "unhealthy")
        self.assertRegex(tp.proc.stderr(), r"last: status 204 \(expected 200\)")
        self.assertEqual(self.endpoint(tp, other.port)["state"], "healthy")

    def test_one_checker_per_process_not_per_worker(self):
        b = self.backend("b")
        tp = self.start([b], dict(FAST, interval="500ms", http={"path": "/healthz"}), workers=4)
        h.wait_for(lambda: b.hits["/healthz"] >= 1, h.scaled(5), what="a first check")
        n0, t0 = b.hits["/healthz"], time.monotonic()
        time.sleep(h.scaled(2.2))
        n, elapsed = b.hits["/healthz"] - n0, time.monotonic() - t0
        # One check per 500 ms (plus up to 10% jitter and the check itself): about elapsed / 0.5;
        # four workers each checking would make four times as many.
        self.assertGreaterEqual(n, elapsed / 0.6 - 1, (n, elapsed))
        self.assertLessEqual(n, elapsed / 0.5 + 1, (n, elapsed))
        # (a check may be between the backend's count and the checker's)
        checks = self.endpoint(tp, b.port)["health_check"]["checks"]
        self.assertIn(b.hits["/healthz"] - checks, (0, 1))

    def test_a_frozen_backend_is_taken_out_by_check_timeouts(self):
        echos = [self.stack.echo("e%d" % i) for i in range(2)]
        tp = self.start(echos, dict(FAST, http={"path": "/"}))
        self.assertGreater(self.served_by(tp, 10)[(200, "e1")], 0)
        echos[1].proc.send_signal(signal.SIGSTOP)
        self.addCleanup(lambda: echos[1].proc.send_signal(signal.SIGCONT))
        self.wait_state(tp, echos[1].port, "unhealthy")
        self.assertRegex(tp.proc.stderr(), r"endpoint 127\.0\.0\.1:%d unhealthy: .*last: response: "
                                           r"timed out" % echos[1].port)
        start = time.monotonic()
        seen = self.served_by(tp, 30)
        self.assertEqual(seen, {(200, "e0"): 30})
        self.assertLess(time.monotonic() - start, h.scaled(3))  # nothing waited on the frozen one
        echos[1].proc.send_signal(signal.SIGCONT)
        self.wait_state(tp, echos[1].port, "healthy")

    def test_a_tcp_check_notices_a_stopped_backend_without_traffic(self):
        echos = [self.stack.echo("e%d" % i) for i in range(2)]
        tp = self.start(echos, dict(FAST, tcp={}))
        self.wait_for_checks(tp, echos[0].port)
        echos[0].proc.stop(sig=signal.SIGKILL)
        self.wait_state(tp, echos[0].port, "unhealthy")
        self.assertRegex(tp.proc.stderr(), r"endpoint 127\.0\.0\.1:%d unhealthy: 2 health checks "
                                           r"failed in a row \(last: connect: Connection refused\)"
                         % echos[0].port)
        body = json.loads(tp.admin("GET", "/clusters").body)["clusters"][0]
        self.assertEqual(body["usable"], 1)
        self.assertEqual(self.served_by(tp, 10), {(200, "e1"): 10})

    def rewrite(self, tp, cfg):
        with open(tp.config_path, "w") as f:
            f.write(h.to_yaml(cfg) + "\n")

    def wait_for_checks(self, tp, port, n=2):
        h.wait_for(lambda: self.endpoint(tp, port)["health_check"]["checks"] >= n, h.scaled(10),
                   what="%d checks of :%d" % (n, port))

    def test_health_survives_a_reload_that_keeps_the_endpoint_and_its_check(self):
        good = self.backend("good")
        flaky = self.backend("flaky", health=500)
        check = {"http": {"path": "/healthz"}, "interval": "1s", "timeout": "500ms",
                 "unhealthy_threshold": 1, "healthy_threshold": 3}
        tp = self.start([good, flaky], check)
        self.wait_state(tp, flaky.port, "unhealthy")
        flaky.paths["/healthz"] = 200
        # A route added: the cluster, its endpoints and its check are unchanged.
        self.rewrite(tp, self.cfg(extra_routes=[{"name": "extra", "match": {"path": "/x"},
                                                 "backend": "pool"}]))
        r = tp.admin("POST", "/reload")
        self.assertEqual(json.loads(r.body)["last_reload"]["result"], "applied", r.body)
        # A fresh start would be healthy; the kept state needs 3 passing checks (3 s) first.
        self.assertEqual(self.endpoint(tp, flaky.port)["state"], "unhealthy")
        self.assertEqual(self.served_by(tp, 10), {(200, "good"): 10})
        self.wait_state(tp, flaky.port, "healthy", timeout=15)

    def test_an_http_check_over_tls_and_http2(self):
        # The backend speaks only h2 over TLS (ALPN): a check that did not do TLS, verify the
        # name, negotiate h2 and send an HTTP/2 request would fail and take it out.
        pki = tls_certs.Pki(self.stack.path("pki"))
        cert = pki.issue_server("hc", ["backend.test"])
        echo = self.stack.echo("inner")
        port = h.free_port()
        lst = h.listener("tls", port)
        lst["protocols"] = ["h2"]
        lst["tls"] = {"certificates": [{"cert": cert.cert, "key": cert.key}]}
        backend_log = self.stack.path("backend.log")
        backend = self.stack.turnpike(
            h.config(h.free_port(), [lst], [h.cluster("echo", echo)],
                     [{"name": "all", "match": {"path_prefix": "/"}, "backend": "echo"}],
                     workers=1, access_log=backend_log), name="backend.yaml")
        tp = self.start(["127.0.0.1:%d" % port], dict(FAST, http={"path": "/healthz"}),
                        protocol="h2", tls={"ca": pki.ca.cert, "server_name": "backend.test"})
        h.wait_for(lambda: self.endpoint(tp, port)["health_check"]["checks"] >= 3,
                   h.scaled(10), what="three checks")
        e = self.endpoint(tp, port)
        self.assertEqual((e["state"], e["health_check"]["failures_in_a_row"]), ("healthy", 0), e)
        self.assertEqual(tp.get("/real").status, 200)
        backend.proc.stop()  # flushes its log; its port now refuses
        with open(backend_log) as f:
            paths = [json.loads(line)["path"] for line in f if line.strip()]
        self.assertGreaterEqual(paths.count("/healthz"), 3)
        self.wait_state(tp, port, "unhealthy")

    def test_removing_the_check_makes_the_endpoint_healthy(self):
        good = self.backend("good")
        flaky = self.backend("flaky", health=500)
        tp = self.start([good, flaky], dict(FAST, http={"path": "/healthz"}))
        self.wait_state(tp, flaky.port, "unhealthy")
        del self.cluster["health_check"]
        self.rewrite(tp, self.cfg())
        r = tp.admin("POST", "/reload")
        self.assertEqual(json.loads(r.body)["last_reload"]["result"], "applied", r.body)
        self.wait_state(tp, flaky.port, "healthy", timeout=5)
        self.assertGreater(self.served_by(tp, 10)[(200, "flaky")], 0)


def health_messages():
    """protoc --python_out for Debian's grpc/health/v1/health.proto, imported by file."""
    for path, package in ((PROTOC, "protobuf-compiler"), (HEALTH_PROTO, "grpc-proto")):
        if not os.path.exists(path):
            raise unittest.SkipTest("%s is missing (Debian package %s)" % (path, package))
    out = tempfile.mkdtemp(prefix="tp-health-pb2-")
    try:
        subprocess.run([PROTOC, "-I/usr/share/grpc-proto", "--python_out=" + out,
                        "grpc/health/v1/health.proto"], check=True, timeout=60)
        spec = importlib.util.spec_from_file_location(
            "tp_health_pb2", os.path.join(out, "grpc", "health", "v1", "health_pb2.py"))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod
    finally:
        shutil.rmtree(out, ignore_errors=True)


class GrpcHealthServer:
    """A gRPC server (python3-grpcio) with grpc.health.v1.Health/Check, answering each service
    with the status in `statuses` (SERVING by default), and a unary method
    turnpike.Test/Name that answers its own name."""

    def __init__(self, pb, name):
        import grpc
        from concurrent import futures
        self.pb = pb
        self.name = name
        self.statuses = {}
        self.checks = collections.Counter()

        def check(request, context):
            self.checks[request.service] += 1
            status = self.statuses.get(request.service, pb.HealthCheckResponse.SERVING)
            return pb.HealthCheckResponse(status=status)

        def whoami(request, context):
            return name.encode()

        handlers = [
            grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
                "Check": grpc.unary_unary_rpc_method_handler(
                    check, request_deserializer=pb.HealthCheckRequest.FromString,
                    response_serializer=pb.HealthCheckResponse.SerializeToString)}),
            grpc.method_handlers_generic_handler("turnpike.Test", {
                "Name": grpc.unary_unary_rpc_method_handler(whoami)}),
        ]
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), handlers=handlers)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.addr = "127.0.0.1:%d" % self.port
        self.server.start()

    def stop(self):
        self.server.stop(0)


class GrpcHealthCheckTest(h.TurnpikeCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.pb = health_messages()

    def test_grpc_check_follows_the_serving_status(self):
        import grpc
        servers = [GrpcHealthServer(self.pb, "g%d" % i) for i in range(2)]
        for s in servers:
            self.addCleanup(s.stop)
        admin_port, port = h.free_port(), h.free_port()
        cluster = {"name": "grpc", "protocol": "h2c", "outlier_detection": "off",
                   "endpoints": [s.addr for s in servers],
                   "health_check": dict(FAST, grpc={"service": "turnpike.Test"})}
        tp = self.stack.turnpike(h.config(
            admin_port, [dict(h.listener("public", port), protocols=["http1", "h2c"])], [cluster],
            [{"name": "all", "match": {"path_prefix": "/"}, "backend": "grpc"}],
            reload={"watch": False}))

        def names(n):
            seen = collections.Counter()
            with grpc.insecure_channel("127.0.0.1:%d" % port) as ch:
                call = ch.unary_unary("/turnpike.Test/Name")
                for _ in range(n):
                    seen[call(b"", timeout=10).decode()] += 1
            return seen

        self.assertEqual(set(names(10)), {"g0", "g1"})
        h.wait_for(lambda: servers[1].checks["turnpike.Test"] >= 2, h.scaled(10),
                   what="grpc health checks")
        servers[1].statuses["turnpike.Test"] = self.pb.HealthCheckResponse.NOT_SERVING

        def state():
            body = json.loads(tp.admin("GET", "/clusters").body)
            return body["clusters"][0]["endpoints"][1]["state"]

        h.wait_for(lambda: state() == "unhealthy", h.scaled(10), what="g1 unhealthy")
        self.assertRegex(tp.proc.stderr(), r"endpoint %s unhealthy: 2 health checks failed in a "
                                           r"row \(last: grpc: NOT_SERVING\)" % servers[1].addr)
        self.assertEqual(names(20), {"g0": 20})
        servers[1].statuses["turnpike.Test"] = self.pb.HealthCheckResponse.SERVING
        h.wait_for(lambda: state() == "healthy", h.scaled(10), what="g1 healthy")
        self.assertIn("g1", names(20))


if __name__ == "__main__":
    unittest.main()
