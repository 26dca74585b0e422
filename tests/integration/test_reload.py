"""Configuration reload (first increment of issue 3): SIGHUP and POST /reload on the admin
listener validate the file completely and either apply it as a new generation, report it
unchanged, or reject it and keep serving the old one; GET /config/status tells which. Requests
under load see no failure while the config flips between two clusters.
"""

import json
import os
import signal
import socket
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


class ReloadTest(h.TurnpikeCase):
    def setUp(self):
        super().setUp()
        self.a = self.stack.echo("a")
        self.b = self.stack.echo("b")
        self.admin_port = h.free_port()
        self.port = h.free_port()

    def cfg(self, target, extra_listener=False, max_headers=None, watch=False):
        listeners = [h.listener("public", self.port)]
        if max_headers:
            listeners = [h.listener("public", self.port, max_headers=max_headers)]
        if extra_listener:
            listeners.append(h.listener("extra", h.free_port()))
        return h.to_yaml(h.config(
            self.admin_port, listeners, [h.cluster("a", self.a), h.cluster("b", self.b)],
            [{"name": "svc", "match": {"path_prefix": "/svc"}, "backend": target}],
            # Tests of explicit triggers turn the file watch off so it cannot race them.
            reload={"watch": watch, "debounce": "50ms"})) + "\n"

    def start(self, text):
        self.tp = self.stack.turnpike(text, wait=False)
        self.tp.admin_port = self.admin_port
        self.tp.ports = {"public": self.port}
        self.tp.wait_ready()
        return self.tp

    def write(self, text):
        # Write-temp-then-rename, as editors and config management do.
        tmp = self.tp.config_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.tp.config_path)

    def status(self):
        return json.loads(self.tp.admin("GET", "/config/status").body)

    def served_by(self, conn=None):
        r = conn.request("GET", "/svc/x") if conn else self.tp.get("/svc/x")
        self.assertEqual(r.status, 200, repr(r))
        return r.header("x-upstream-name")

    def test_sighup_applies_a_new_generation(self):
        self.start(self.cfg("a"))
        st = self.status()
        self.assertEqual(st["generation"], 1)
        self.assertIsNone(st["last_reload"])
        self.assertEqual(self.served_by(), "a")
        self.write(self.cfg("b"))
        self.tp.proc.send_signal(signal.SIGHUP)
        h.wait_for(lambda: self.status()["generation"] == 2, h.scaled(5), what="generation 2")
        st = self.status()
        self.assertEqual(st["last_reload"]["result"], "applied")
        self.assertEqual(st["last_reload"]["trigger"], "SIGHUP")
        self.assertRegex(st["loaded_time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        self.assertEqual(self.served_by(), "b")
        cfg = json.loads(self.tp.admin("GET", "/config").body)
        self.assertEqual(cfg["generation"], 2)

    def test_post_reload_unchanged_and_rejected(self):
        self.start(self.cfg("a"))
        r = self.tp.admin("POST", "/reload")
        self.assertEqual(r.status, 200)
        st = json.loads(r.body)
        self.assertEqual((st["generation"], st["last_reload"]["result"]), (1, "unchanged"))
        # A broken file: rejected with file:line:column and key path, old config still serving.
        broken = self.cfg("b").replace('"/svc"', '"svc"')
        self.write(broken)
        r = self.tp.admin("POST", "/reload")
        self.assertEqual(r.status, 422, r.body)
        st = json.loads(r.body)
        self.assertEqual(st["generation"], 1)
        self.assertEqual(st["last_reload"]["result"], "rejected")
        self.assertEqual(st["reloads"]["rejected"], 1)
        errors = st["last_reload"]["errors"]
        self.assertTrue(any(e.startswith(self.tp.config_path + ":") and
                            "routes[0].match.path_prefix: must start with '/'" in e
                            for e in errors), errors)
        self.assertEqual(self.served_by(), "a")
        # Fixed again: applied.
        self.write(self.cfg("b"))
        r = self.tp.admin("POST", "/reload")
        self.assertEqual(r.status, 200)
        self.assertEqual(json.loads(r.body)["generation"], 2)
        self.assertEqual(self.served_by(), "b")

    def listeners_cfg(self, extra_port=None, extra_name="extra", workers=2):
        listeners = [h.listener("public", self.port)]
        if extra_port:
            listeners.append(h.listener(extra_name, extra_port))
        return h.to_yaml(h.config(
            self.admin_port, listeners, [h.cluster("a", self.a), h.cluster("b", self.b)],
            [{"name": "svc", "match": {"path_prefix": "/svc"}, "backend": "a"},
             {"name": "slow", "match": {"path_prefix": "/delay"}, "backend": "a"}],
            workers=workers, reload={"watch": False})) + "\n"

    def reload_ok(self, text):
        self.write(text)
        r = self.tp.admin("POST", "/reload")
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(json.loads(r.body)["last_reload"]["result"], "applied", r.body)

    def listener_names(self):
        return sorted((l["name"], l["port"])
                      for l in json.loads(self.tp.admin("GET", "/listeners").body)["listeners"])

    def refused(self, port):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return False
        except ConnectionRefusedError:
            return True

    def test_listener_added_and_removed_under_load_on_another(self):
        self.start(self.listeners_cfg())
        stop = threading.Event()
        failures, done = [], [0]

        def keepalive_client():
            try:
                with self.tp.conn(timeout=h.scaled(5)) as c:  # one connection for the whole test
                    while not stop.is_set():
                        r = c.request("GET", "/svc/load")
                        if r.status != 200:
                            failures.append(r.status)
                        done[0] += 1
            except Exception as e:  # a reset or a closed keep-alive connection is a failure
                failures.append(repr(e))

        def new_connection_client():
            while not stop.is_set():
                try:
                    r = self.tp.get("/svc/new")
                    if r.status != 200:
                        failures.append(r.status)
                    done[0] += 1
                except Exception as e:
                    failures.append(repr(e))

        threads = [threading.Thread(target=keepalive_client) for _ in range(3)]
        threads.append(threading.Thread(target=new_connection_client))
        for t in threads:
            t.start()
        try:
            extra = h.free_port()
            self.reload_ok(self.listeners_cfg(extra))
            self.assertEqual(self.listener_names(), [("extra", extra), ("public", self.port)])
            r = h.HttpConn(extra, timeout=h.scaled(5)).request(
                "GET", "/svc/x", headers=[("Connection", "close")])
            self.assertEqual(r.status, 200)
            # Connections on the listener about to go: one idle keep-alive, one mid-request.
            idle = h.HttpConn(extra, timeout=h.scaled(5))
            self.assertEqual(idle.request("GET", "/svc/idle").status, 200)
            busy = socket.create_connection(("127.0.0.1", extra), timeout=h.scaled(5))
            busy.sendall(b"GET /delay/1000 HTTP/1.1\r\nHost: t\r\n\r\n")
            time.sleep(0.2)
            # Removed: stops accepting; `public` keeps its socket and its connections.
            self.reload_ok(self.listeners_cfg())
            h.wait_for(lambda: self.refused(extra), h.scaled(5), what="extra stops accepting")
            self.assertEqual(self.listener_names(), [("public", self.port)])
            # The request in flight finishes, then its connection closes; the idle one closes.
            data = b""
            while True:
                chunk = busy.recv(65536)
                if not chunk:
                    break
                data += chunk
            busy.close()
            self.assertTrue(data.startswith(b"HTTP/1.1 200 "), data)
            self.assertIn(b"connection: close", data.lower())
            idle.sock.settimeout(h.scaled(5))
            self.assertEqual(idle.sock.recv(1), b"")
            idle.close()
            # Added back on the same port: accepting again.
            self.reload_ok(self.listeners_cfg(extra, extra_name="extra-again"))
            r = h.HttpConn(extra, timeout=h.scaled(5)).request(
                "GET", "/svc/x", headers=[("Connection", "close")])
            self.assertEqual(r.status, 200)
            time.sleep(0.3)
        finally:
            stop.set()
            for t in threads:
                t.join(h.scaled(10))
        self.assertEqual(failures, [])
        self.assertGreater(done[0], 50)
        self.assertEqual(self.status()["generation"], 4)

    def test_listener_that_cannot_bind_rejects_the_reload(self):
        self.start(self.listeners_cfg())
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        try:
            self.write(self.listeners_cfg(port))
            r = self.tp.admin("POST", "/reload")
            self.assertEqual(r.status, 422, r.body)
            st = json.loads(r.body)
            self.assertEqual(st["generation"], 1)
            self.assertTrue(any("listener 'extra'" in e and "Address already in use" in e
                                for e in st["last_reload"]["errors"]), st)
            self.assertEqual(self.listener_names(), [("public", self.port)])
            self.assertEqual(self.served_by(), "a")
        finally:
            taken.close()

    def test_worker_count_change_needs_a_restart(self):
        self.start(self.listeners_cfg())
        self.write(self.listeners_cfg(workers=3))
        r = self.tp.admin("POST", "/reload")
        self.assertEqual(r.status, 422)
        st = json.loads(r.body)
        self.assertEqual(st["generation"], 1)
        self.assertTrue(any("workers" in e and "restart" in e
                            for e in st["last_reload"]["errors"]), st)

    def test_keepalive_connection_uses_the_new_config_for_its_next_request(self):
        self.start(self.cfg("a"))
        with self.tp.conn(timeout=h.scaled(5)) as c:
            self.assertEqual(self.served_by(c), "a")
            self.write(self.cfg("b"))
            self.assertEqual(self.tp.admin("POST", "/reload").status, 200)
            self.assertEqual(self.served_by(c), "b")

    def cluster_cfg(self, echo, timeout):
        # One cluster whose endpoint moves between reloads; the route timeout changes alone.
        return h.to_yaml(h.config(
            self.admin_port, [h.listener("public", self.port)], [h.cluster("svc", echo)],
            [{"name": "svc", "match": {"path_prefix": "/svc"}, "backend": "svc",
              "timeout": timeout}], reload={"watch": False})) + "\n"

    def test_changed_cluster_gets_a_new_pool_and_unchanged_keeps_it(self):
        self.start(self.cluster_cfg(self.a, "10s"))
        self.assertEqual(self.served_by(), "a")
        # Generation 2: the cluster's endpoint changes, so it gets a fresh pool.
        self.write(self.cluster_cfg(self.b, "10s"))
        self.assertEqual(self.tp.admin("POST", "/reload").status, 200)
        self.assertEqual(self.served_by(), "b")
        # Generation 3: only the route changes; the cluster (and its pool) carries over while
        # generation 2 is freed. Requests must keep working (ASan checks nothing dangles).
        self.write(self.cluster_cfg(self.b, "9s"))
        self.assertEqual(self.tp.admin("POST", "/reload").status, 200)
        for _ in range(20):
            self.assertEqual(self.served_by(), "b")
        self.write(self.cluster_cfg(self.a, "8s"))
        self.assertEqual(self.tp.admin("POST", "/reload").status, 200)
        for _ in range(20):
            self.assertEqual(self.served_by(), "a")
        self.assertEqual(self.status()["generation"], 4)

    def wait_generation(self, gen):
        h.wait_for(lambda: self.status()["generation"] == gen, h.scaled(5),
                   what="generation %d" % gen)

    def test_file_watch_in_place_and_rename(self):
        self.start(self.cfg("a", watch=True))
        # Write in place.
        with open(self.tp.config_path, "w") as f:
            f.write(self.cfg("b", watch=True))
        self.wait_generation(2)
        self.assertEqual(self.status()["last_reload"]["trigger"], "file")
        self.assertEqual(self.served_by(), "b")
        # Write a temp file, rename it over the config (what editors do).
        self.write(self.cfg("a", watch=True))
        self.wait_generation(3)
        self.assertEqual(self.served_by(), "a")
        # A broken write is rejected and the running config keeps serving.
        self.write(self.cfg("nosuch", watch=True))
        h.wait_for(lambda: self.status()["last_reload"]["result"] == "rejected", h.scaled(5),
                   what="rejected reload")
        self.assertEqual(self.status()["generation"], 3)
        self.assertEqual(self.served_by(), "a")

    def test_file_watch_follows_a_configmap_style_symlink_swap(self):
        # turnpike.yaml -> ..data/turnpike.yaml, ..data -> v1; the update swaps ..data to v2.
        d = self.stack.dir
        for version, target in (("v1", "a"), ("v2", "b")):
            os.makedirs(os.path.join(d, version))
            with open(os.path.join(d, version, "live.yaml"), "w") as f:
                f.write(self.cfg(target, watch=True))
        os.symlink("v1", os.path.join(d, "..data"))
        live = os.path.join(d, "live.yaml")
        os.symlink("..data/live.yaml", live)
        proc = self.stack.run([h.TURNPIKE_BIN, "-c", live], "turnpike")
        self.tp = h.Turnpike(proc, live, None)
        self.tp.admin_port = self.admin_port
        self.tp.ports = {"public": self.port}
        self.tp.wait_ready()
        self.assertEqual(self.served_by(), "a")
        os.symlink("v2", os.path.join(d, "..data_tmp"))
        os.replace(os.path.join(d, "..data_tmp"), os.path.join(d, "..data"))
        self.wait_generation(2)
        self.assertEqual(self.served_by(), "b")

    def admin_post(self, target, body=b""):
        c = h.HttpConn(self.admin_port, timeout=h.scaled(10))
        try:
            return c.request("POST", target, headers=[("Connection", "close")], body=body)
        finally:
            c.close()

    def test_dry_run_describes_changes_and_applies_nothing(self):
        self.start(self.cfg("a"))
        r = self.admin_post("/reload?dry_run=1", self.cfg("b").encode())
        self.assertEqual(r.status, 200, r.body)
        d = json.loads(r.body)
        self.assertTrue(d["valid"])
        self.assertEqual(d["changes"]["routes"], {"added": [], "removed": [], "changed": ["svc"]})
        self.assertEqual(d["changes"]["clusters"], {"added": [], "removed": [], "changed": []})
        self.assertEqual(d["restart_required"], [])
        self.assertEqual(self.status()["generation"], 1)
        self.assertEqual(self.served_by(), "a")
        # A broken candidate: its errors, nothing applied.
        r = self.admin_post("/reload?dry_run=1", self.cfg("nosuch").encode())
        self.assertEqual(r.status, 422)
        d = json.loads(r.body)
        self.assertFalse(d["valid"])
        self.assertTrue(any("routes[0].backend: unknown cluster 'nosuch'" in e
                            for e in d["errors"]), d)
        # Empty body: the file on disk is the candidate (unchanged here).
        d = json.loads(self.admin_post("/reload?dry_run=1").body)
        self.assertTrue(d["valid"])
        self.assertTrue(d["unchanged"])
        self.assertEqual(self.status()["last_reload"], None)

    def test_sd_notify_protocol(self):
        sock_path = os.path.join(self.stack.dir, "notify.sock")
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        srv.bind(sock_path)
        srv.settimeout(h.scaled(10))
        try:
            text = self.cfg("a")
            self.tp = self.stack.turnpike(text, wait=False, env={"NOTIFY_SOCKET": sock_path})
            self.tp.admin_port = self.admin_port
            self.tp.ports = {"public": self.port}

            def next_msg():
                return dict(line.split("=", 1)
                            for line in srv.recv(4096).decode().splitlines() if "=" in line)

            m = next_msg()
            self.assertEqual(m.get("READY"), "1", m)
            self.assertEqual(m.get("MAINPID"), str(self.tp.pid))
            self.assertEqual(self.tp.ready_status(), 200)  # listeners are up once READY=1

            self.write(self.cfg("b"))
            self.tp.proc.send_signal(signal.SIGHUP)
            m = next_msg()
            self.assertEqual(m.get("RELOADING"), "1", m)
            self.assertGreater(int(m["MONOTONIC_USEC"]), 0)
            m = next_msg()
            self.assertEqual((m.get("READY"), m.get("STATUS")), ("1", "serving generation 2"), m)

            self.write(self.cfg("nosuch"))
            self.tp.proc.send_signal(signal.SIGHUP)
            self.assertEqual(next_msg().get("RELOADING"), "1")
            m = next_msg()
            self.assertEqual(m.get("READY"), "1")
            self.assertTrue(m["STATUS"].startswith("reload rejected: "), m)
            self.assertIn("unknown cluster 'nosuch'", m["STATUS"])

            self.tp.proc.send_signal(signal.SIGTERM)
            self.assertEqual(next_msg().get("STOPPING"), "1")
            self.assertEqual(self.tp.proc.wait(h.scaled(10)), 0)
        finally:
            srv.close()

    def test_wrk_load_through_file_reloads_every_200ms(self):
        """The issue's scenario: wrk at 64 connections while the file flips between two clusters
        every 200 ms, with a broken version written every third round. Zero non-2xx, zero socket
        errors; broken versions rejected; generations as expected."""
        import shutil
        import subprocess
        if not shutil.which("wrk"):
            self.skipTest("wrk not installed")
        self.start(self.cfg("a", watch=True))
        duration = 6
        wrk = subprocess.Popen(
            ["wrk", "-t", "2", "-c", "64", "-d", "%ds" % duration, "--timeout", "5s",
             "http://127.0.0.1:%d/svc/load" % self.port],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        applied, rejected, target = 0, 0, "a"
        deadline = time.monotonic() + duration - 1
        i = 0
        while time.monotonic() < deadline:
            time.sleep(0.2)
            i += 1
            if i % 3 == 0:
                before = self.status()["reloads"]["rejected"]
                self.write(self.cfg("nosuch", watch=True))
                h.wait_for(lambda: self.status()["reloads"]["rejected"] > before, h.scaled(5),
                           what="broken config rejected")
                rejected += 1
                continue
            target = "b" if target == "a" else "a"
            gen = self.status()["generation"]
            self.write(self.cfg(target, watch=True))
            h.wait_for(lambda: self.status()["generation"] == gen + 1, h.scaled(5),
                       what="generation %d" % (gen + 1))
            applied += 1
        out, _ = wrk.communicate(timeout=h.scaled(30))
        self.assertEqual(wrk.returncode, 0, out)
        self.assertNotIn("Non-2xx", out, out)
        self.assertNotIn("Socket errors", out, out)
        self.assertIn("requests in", out)
        st = self.status()
        self.assertEqual(st["generation"], 1 + applied)
        self.assertEqual(st["reloads"]["rejected"], rejected)
        self.assertGreater(applied, 5)
        self.assertEqual(self.served_by(), target)

    def test_reloads_under_load_lose_no_request(self):
        self.start(self.cfg("a"))
        stop = threading.Event()
        failures = []
        counts = {"a": 0, "b": 0}
        lock = threading.Lock()

        def client():
            try:
                with self.tp.conn(timeout=h.scaled(5)) as c:
                    while not stop.is_set():
                        r = c.request("GET", "/svc/load")
                        name = r.header("x-upstream-name")
                        with lock:
                            if r.status != 200 or name not in counts:
                                failures.append((r.status, name))
                            else:
                                counts[name] += 1
            except Exception as e:  # a reset or a hang is a failure too
                failures.append(repr(e))

        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        rounds = 20
        for i in range(rounds):
            time.sleep(0.1)
            self.write(self.cfg("b" if i % 2 == 0 else "a"))
            r = self.tp.admin("POST", "/reload")
            self.assertEqual(r.status, 200, r.body)
        time.sleep(0.2)
        stop.set()
        for t in threads:
            t.join(h.scaled(10))
        self.assertEqual(failures, [])
        self.assertGreater(counts["a"], 0)
        self.assertGreater(counts["b"], 0)
        self.assertEqual(self.status()["generation"], 1 + rounds)


if __name__ == "__main__":
    unittest.main()
