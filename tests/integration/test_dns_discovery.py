"""DNS service discovery (clusters[].discovery: dns), against a real DNS server on loopback:
dnsmasq (Debian's dnsmasq-base) on a free port, answering from a hosts file the tests rewrite
and reload with SIGHUP. Every A/AAAA record of a name is an endpoint; a changed answer moves the
traffic within the refresh interval, while requests in flight to a removed address finish; the
health of kept addresses survives the change; DNS that is down at start does not stop Turnpike
(the cluster answers 503 "no healthy upstream" until the name resolves), and DNS that goes down
later keeps the addresses last resolved, while a name that is gone (NXDOMAIN) has no endpoints.
"""

import collections
import json
import os
import signal
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import tls_certs  # noqa: E402

DNSMASQ = "/usr/sbin/dnsmasq"
NAME = "api.turnpike.test"


class Dnsmasq:
    """dnsmasq on 127.0.0.1:`port`, authoritative for turnpike.test (an unknown name there is
    NXDOMAIN, not a forward), answering from a hosts file with a TTL of `ttl` seconds."""

    def __init__(self, stack, port=None, ttl=0):
        self.stack = stack
        self.port = port or h.free_port()
        self.ttl = ttl
        self.hosts = stack.path("dns-hosts")
        self.proc = None

    def set(self, *records):
        """records: (address, name) pairs; the running server rereads them (SIGHUP)."""
        with open(self.hosts, "w") as f:
            for addr, name in records:
                f.write("%s %s\n" % (addr, name))
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGHUP)
            time.sleep(0.05)  # dnsmasq rereads on its next loop turn

    def start(self):
        if not os.path.exists(self.hosts):
            self.set()
        argv = [DNSMASQ, "--keep-in-foreground", "--port=%d" % self.port,
                "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv", "--no-hosts",
                "--addn-hosts=" + self.hosts, "--local=/turnpike.test/", "--no-negcache",
                "--local-ttl=%d" % self.ttl, "--pid-file=", "--conf-file=/dev/null",
                "--log-facility=-"]
        if os.geteuid() == 0:
            argv.append("--user=root")  # else it drops to nobody, who may not read the file
        self.proc = self.stack.run(argv, "dnsmasq")
        h.wait_for(lambda: "started" in self.proc.stderr() + self.proc.stdout()
                   or self.proc.poll() is not None, h.scaled(10), what="dnsmasq started")
        if self.proc.poll() is not None:
            raise AssertionError("dnsmasq did not start\n" + self.proc.describe())
        return self

    def stop(self):
        if self.proc is not None:
            self.proc.stop()
            self.proc = None

    @property
    def address(self):
        return "127.0.0.1:%d" % self.port


class DnsDiscoveryTest(h.TurnpikeCase):
    def echo_at(self, name, host, port):
        """turnpike-echo on host:port, answering with X-Upstream-Name: name."""
        spec = "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)
        proc = self.stack.run([h.ECHO_BIN, "--name", name, "--listen", spec], "echo-" + name)
        h.wait_for(lambda: "listening" in proc.stdout() or proc.poll() is not None,
                   h.scaled(10), what="echo %s" % name)
        if proc.poll() is not None:
            raise AssertionError("echo did not start\n" + proc.describe())
        return proc

    def dns_and_backends(self, addresses, backends, ttl=0):
        """dnsmasq answering `addresses` for NAME, and a turnpike-echo per (name, ip) of
        `backends`, all on one port; (the server, the port)."""
        dns = Dnsmasq(self.stack, ttl=ttl)
        dns.set(*[(a, NAME) for a in addresses])
        dns.start()
        port = h.free_port()
        for name, ip in backends:
            self.echo_at(name, ip, port)
        return dns, port

    def start(self, server, endpoints=(NAME,), port=None, wait=True, **cluster):
        self.backend_port = port or h.free_port()
        self.admin_port = h.free_port()
        self.listen_port = h.free_port()
        cl = {"name": "api", "discovery": "dns", "connect_timeout": "500ms",
              "dns": {"refresh": "200ms", "resolvers": [server.address]},
              "endpoints": ["%s:%d" % (e, self.backend_port) for e in endpoints]}
        for k, v in cluster.items():
            if k == "dns":
                cl["dns"].update(v)
            else:
                cl[k] = v
        self.cluster = cl
        return self.stack.turnpike(self.cfg(), wait=wait)

    def cfg(self, extra_routes=()):
        return h.config(self.admin_port, [h.listener("public", self.listen_port)], [self.cluster],
                        list(extra_routes) +
                        [{"name": "all", "match": {"path_prefix": "/"}, "backend": "api"}],
                        reload={"watch": False})

    def served_by(self, tp, n):
        """Which backends (or error statuses) answered n requests. Two workers balance on
        their own, so the split is even only per worker: the tests compare the set."""
        seen = collections.Counter()
        for _ in range(n):
            r = tp.get("/")
            seen[r.header("X-Upstream-Name") if r.status == 200 else r.status] += 1
        return set(seen)

    def clusters(self, tp):
        return json.loads(tp.admin("GET", "/clusters").body)

    def addresses(self, tp):
        return sorted(e["address"] for e in self.clusters(tp)["clusters"][0]["endpoints"])

    def wait_addresses(self, tp, want, timeout=10):
        want = sorted(want)
        h.wait_for(lambda: self.addresses(tp) == want, h.scaled(timeout),
                   what="endpoints %s (have %s)" % (want, self.addresses(tp)))

    def test_every_record_is_an_endpoint_and_a_changed_answer_moves_the_traffic(self):
        dns, port = self.dns_and_backends(["127.0.0.1", "127.0.0.2"],
                                          [("e%d" % i, "127.0.0.%d" % i) for i in (1, 2, 3)])
        tp = self.start(dns, port=port)
        # Resolved before the first request: start waits (briefly) for the first answers.
        self.assertEqual(self.served_by(tp, 10), {"e1", "e2"})
        self.assertEqual(self.addresses(tp), ["127.0.0.1:%d" % port, "127.0.0.2:%d" % port])
        status = self.clusters(tp)["clusters"][0]["dns"]
        self.assertEqual(status[0]["addresses"], ["127.0.0.1", "127.0.0.2"])
        gen = self.clusters(tp)["generation"]

        # 127.0.0.1 leaves, 127.0.0.3 joins: within the refresh interval, all traffic follows.
        dns.set(("127.0.0.2", NAME), ("127.0.0.3", NAME))
        self.wait_addresses(tp, ["127.0.0.2:%d" % port, "127.0.0.3:%d" % port])
        self.assertEqual(self.served_by(tp, 10), {"e2", "e3"})
        self.assertGreater(self.clusters(tp)["generation"], gen)
        self.assertIn("removed 127.0.0.1:%d" % port, tp.proc.stderr())
        self.assertIn("added 127.0.0.3:%d" % port, tp.proc.stderr())
        # The same answer in another order is no change: no new generation.
        gen = self.clusters(tp)["generation"]
        dns.set(("127.0.0.3", NAME), ("127.0.0.2", NAME))
        time.sleep(1)
        self.assertEqual(self.clusters(tp)["generation"], gen)
        # The file did not change: a reload says so, and keeps the resolved endpoints.
        r = tp.admin("POST", "/reload")
        self.assertEqual(json.loads(r.body)["last_reload"]["result"], "unchanged")

    def test_a_request_in_flight_to_a_removed_address_finishes(self):
        dns, port = self.dns_and_backends(
            ["127.0.0.1"],
            [("old", "127.0.0.1"), ("new", "127.0.0.2")])
        tp = self.start(dns, port=port)
        result = {}

        def slow():
            result["r"] = tp.get("/delay/1500", timeout=10)

        t = threading.Thread(target=slow)
        t.start()
        time.sleep(0.3)
        dns.set(("127.0.0.2", NAME))
        self.wait_addresses(tp, ["127.0.0.2:%d" % port])
        self.assertEqual(self.served_by(tp, 4), {"new"})
        t.join(h.scaled(10))
        self.assertEqual(result["r"].status, 200)
        self.assertEqual(result["r"].header("X-Upstream-Name"), "old")

    def test_kept_addresses_keep_their_pooled_connections(self):
        dns, port = self.dns_and_backends(
            ["127.0.0.1"],
            [("e1", "127.0.0.1"), ("e2", "127.0.0.2")])
        tp = self.start(dns, port=port)
        kept = "127.0.0.1:%d" % port

        def idle():
            for e in self.clusters(tp)["clusters"][0]["endpoints"]:
                if e["address"] == kept:
                    return e.get("connections", {}).get("idle", 0)
            return 0

        self.assertEqual(self.served_by(tp, 4), {"e1"})
        h.wait_for(lambda: idle() >= 1, h.scaled(5), what="a pooled connection to " + kept)
        dns.set(("127.0.0.1", NAME), ("127.0.0.2", NAME))
        self.wait_addresses(tp, [kept, "127.0.0.2:%d" % port])
        # The new generation's pool took the warm connections over (no request since).
        time.sleep(1.5)  # the workers publish what they hold about once a second
        self.assertGreaterEqual(idle(), 1)

    def test_family_picks_a_and_aaaa_records(self):
        dns, port = self.dns_and_backends(
            ["127.0.0.1", "::1"],
            [("v4", "127.0.0.1"), ("v6", "::1")])
        for family, want in (("auto", {"v4", "v6"}), ("v4", {"v4"}), ("v6", {"v6"})):
            with self.subTest(family=family):
                tp = self.start(dns, port=port, dns={"family": family})
                self.assertEqual(self.served_by(tp, 6), want)
                tp.proc.stop()

    def test_dns_down_at_start_then_up(self):
        dns = Dnsmasq(self.stack)  # not started: nothing answers on its port
        port = h.free_port()
        self.echo_at("e1", "127.0.0.1", port)
        t0 = time.monotonic()
        tp = self.start(dns, port=port)
        self.assertLess(time.monotonic() - t0, h.scaled(5))  # started anyway
        # `check` does not resolve names of DNS clusters either.
        check = self.stack.run([h.TURNPIKE_BIN, "check", "-c", tp.config_path], "check")
        self.assertEqual(check.wait(h.scaled(10)), 0, check.describe())
        r = tp.get("/")
        self.assertEqual(r.status, 503)
        self.assertEqual(r.json()["error"], "no healthy upstream")
        self.assertIn("cannot resolve '%s'" % NAME, tp.proc.stderr())
        # The server comes up: the name resolves on the next refresh.
        dns.set(("127.0.0.1", NAME))
        dns.start()
        self.wait_addresses(tp, ["127.0.0.1:%d" % port])
        self.assertEqual(self.served_by(tp, 3), {"e1"})

    def test_dns_down_later_keeps_the_addresses_but_a_removed_name_has_none(self):
        dns, port = self.dns_and_backends(["127.0.0.1"], [("e1", "127.0.0.1")])
        tp = self.start(dns, port=port)
        self.assertEqual(self.served_by(tp, 2), {"e1"})
        dns.stop()  # queries now fail (refused, timed out): the last answer stays
        h.wait_for(lambda: "cannot resolve" in tp.proc.stderr(), h.scaled(10),
                   what="a failed resolution")
        self.assertEqual(self.served_by(tp, 3), {"e1"})
        self.assertEqual(self.addresses(tp), ["127.0.0.1:%d" % port])
        self.assertIn("error", self.clusters(tp)["clusters"][0]["dns"][0])
        # Back up, without the name: NXDOMAIN, so the name has no endpoints.
        dns = Dnsmasq(self.stack, port=dns.port)
        dns.set(("127.0.0.9", "other.turnpike.test"))
        dns.start()
        self.wait_addresses(tp, [])
        r = tp.get("/")
        self.assertEqual(r.status, 503)
        self.assertEqual(r.json()["error"], "no healthy upstream")

    def test_health_of_a_kept_address_survives_a_change(self):
        # 127.0.0.2 is in DNS, but nothing listens there.
        dns, port = self.dns_and_backends(
            ["127.0.0.1", "127.0.0.2"],
            [("e1", "127.0.0.1"), ("e3", "127.0.0.3")])
        tp = self.start(dns, port=port, panic_threshold=0,
                        health_check={"tcp": {}, "interval": "100ms", "timeout": "500ms",
                                      "unhealthy_threshold": 1, "healthy_threshold": 1})

        def state(addr):
            for e in self.clusters(tp)["clusters"][0]["endpoints"]:
                if e["address"] == addr:
                    return e
            return None

        dead = "127.0.0.2:%d" % port
        h.wait_for(lambda: state(dead)["state"] == "unhealthy", h.scaled(10),
                   what="the dead address unhealthy")
        checks = state(dead)["health_check"]["checks"]
        dns.set(("127.0.0.1", NAME), ("127.0.0.2", NAME), ("127.0.0.3", NAME))
        self.wait_addresses(tp, ["127.0.0.%d:%d" % (i, port) for i in (1, 2, 3)])
        # Still unhealthy in the new generation (no fresh start), its check count goes on.
        self.assertEqual(state(dead)["state"], "unhealthy")
        self.assertGreaterEqual(state(dead)["health_check"]["checks"], checks)
        self.assertEqual(self.served_by(tp, 10), {"e1", "e3"})

    def test_respect_ttl_refreshes_before_a_long_refresh_interval(self):
        dns, port = self.dns_and_backends(
            ["127.0.0.1"],
            [("e1", "127.0.0.1"), ("e2", "127.0.0.2")], ttl=1)
        tp = self.start(dns, port=port, dns={"refresh": "1h", "respect_ttl": True})
        self.assertEqual(self.served_by(tp, 2), {"e1"})
        dns.set(("127.0.0.2", NAME))
        # The records' TTL (1 s), not the refresh interval (1 h), decides when it is asked again.
        self.wait_addresses(tp, ["127.0.0.2:%d" % port], timeout=6)

    def test_tls_to_a_resolved_address_verifies_the_name_as_written(self):
        # The backend's certificate names only NAME: a connection made to the address it
        # resolved to must send NAME as SNI and verify against it.
        pki = tls_certs.Pki(self.stack.path("pki"))
        cert = pki.issue_server("dns-backend", [NAME])
        echo = self.stack.echo("inner")
        port = h.free_port()
        lst = h.listener("tls", port)
        lst["tls"] = {"certificates": [{"cert": cert.cert, "key": cert.key}]}
        self.stack.turnpike(h.config(h.free_port(), [lst], [h.cluster("echo", echo)],
                                     [{"name": "all", "match": {"path_prefix": "/"},
                                       "backend": "echo"}], workers=1), name="backend.yaml")
        dns, _ = self.dns_and_backends(["127.0.0.1"], [])
        tp = self.start(dns, port=port, tls={"ca": pki.ca.cert})
        self.assertEqual(self.served_by(tp, 3), {"inner"})
        tp.proc.stop()
        # The same backend under another name does not pass verification.
        tp = self.start(dns, port=port, tls={"ca": pki.ca.cert, "server_name": "other.test"})
        self.assertEqual(self.served_by(tp, 2), {502})

    def test_a_reload_keeps_the_resolved_endpoints(self):
        dns, port = self.dns_and_backends(["127.0.0.1"], [("e1", "127.0.0.1")])
        tp = self.start(dns, port=port)
        # A reload that changes something else: the new generation has the endpoints at once.
        cfg = self.cfg([{"name": "hello", "match": {"path": "/hello"},
                         "respond": {"status": 200, "body": "hi"}}])
        with open(tp.config_path, "w") as f:
            f.write(h.to_yaml(cfg) + "\n")
        r = tp.admin("POST", "/reload")
        self.assertEqual(json.loads(r.body)["last_reload"]["result"], "applied")
        self.assertEqual(self.served_by(tp, 3), {"e1"})
        self.assertEqual(tp.get("/hello").text(), "hi")


if __name__ == "__main__":
    unittest.main()
