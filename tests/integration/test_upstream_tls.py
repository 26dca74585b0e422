"""TLS to the backends (clusters[].tls): the backend is verified against `ca` and the name
(`server_name`), optionally with a client certificate (mTLS); a backend that fails verification
gets 502 and a log line saying why. The backend is Python's http.server behind ssl, with the
certificates of tls_certs.Pki (real OpenSSL on both sides).
"""

import http.server
import json
import os
import ssl
import sys
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import tls_certs  # noqa: E402


class Backend:
    """An HTTPS backend on 127.0.0.1 answering JSON: path, headers, the client certificate's
    subject (when it sent one) and how many TLS connections it accepted."""

    def __init__(self, cert, client_ca=None):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert.cert, cert.key)
        if client_ca:
            ctx.load_verify_locations(client_ca.cert)
            ctx.verify_mode = ssl.CERT_REQUIRED
        backend = self
        self.connections = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                backend.connections += 1

            def do_GET(self):
                peer = self.connection.getpeercert()
                subject = None
                if peer:
                    subject = ",".join("%s=%s" % kv for rdn in peer["subject"] for kv in rdn)
                body = json.dumps({"path": self.path, "client_subject": subject,
                                   "headers": dict(self.headers.items())}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass  # failed handshakes are part of the tests

        self.httpd = Server(("127.0.0.1", 0), Handler)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


class UpstreamTlsTest(h.TurnpikeCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.pki = tls_certs.Pki(os.path.join(cls.cstack.dir, "pki"))

    def setUp(self):
        super().setUp()
        self.backends = []

    def tearDown(self):
        for b in self.backends:
            b.stop()
        super().tearDown()

    def backend(self, cert=None, client_ca=None):
        b = Backend(cert or self.pki.api, client_ca)
        self.backends.append(b)
        return b

    def start(self, backend, tls, host="127.0.0.1"):
        self.port = h.free_port()
        cfg = h.config(h.free_port(), [h.listener("public", self.port)],
                       [h.cluster("secure", "%s:%d" % (host, backend.port), tls=tls)],
                       [{"name": "all", "match": {"path_prefix": "/"}, "backend": "secure"}])
        self.tp = self.stack.turnpike(cfg)
        return self.tp

    def log(self):
        return self.tp.proc.stderr() + self.tp.proc.stdout()

    def test_verified_backend_serves_and_connections_are_reused(self):
        b = self.backend()
        self.start(b, {"ca": self.pki.ca.cert, "server_name": "api.example.test"})
        with self.tp.conn(timeout=h.scaled(5)) as c:
            for i in range(20):
                r = c.request("GET", "/hello/%d" % i)
                self.assertEqual(r.status, 200, r.body)
                self.assertEqual(r.json()["path"], "/hello/%d" % i)
                self.assertEqual(r.json()["headers"].get("X-Forwarded-Proto"), "http")
        # Keep-alive to the backend: a handful of TLS connections, not one per request.
        self.assertLessEqual(b.connections, 3)

    def test_wildcard_name_verifies(self):
        b = self.backend()
        self.start(b, {"ca": self.pki.ca.cert, "server_name": "v2.api.example.test"})
        self.assertEqual(self.tp.get("/w").status, 200)

    def test_name_mismatch_is_502_with_a_clear_log_line(self):
        b = self.backend()
        self.start(b, {"ca": self.pki.ca.cert, "server_name": "wrong.example.test"})
        r = self.tp.get("/x")
        self.assertEqual(r.status, 502)
        self.assertIn("upstream connect failed", r.text())
        h.wait_for(lambda: "upstream TLS handshake" in self.log(), h.scaled(5), what="log line")
        log = self.log()
        self.assertIn("as 'wrong.example.test'", log)
        self.assertIn("certificate verify failed: hostname mismatch", log.lower())

    def test_untrusted_ca_is_502(self):
        b = self.backend()
        self.start(b, {"ca": self.pki.rogue_ca.cert, "server_name": "api.example.test"})
        self.assertEqual(self.tp.get("/x").status, 502)
        h.wait_for(lambda: "certificate verify failed" in self.log(), h.scaled(5),
                   what="log line")

    def test_ip_literal_endpoint_is_verified_as_an_ip(self):
        # No server_name: the endpoint's host (an IP here) is what must match, and the test
        # certificate has no IP SAN.
        b = self.backend()
        self.start(b, {"ca": self.pki.ca.cert})
        self.assertEqual(self.tp.get("/x").status, 502)
        h.wait_for(lambda: "as '127.0.0.1'" in self.log(), h.scaled(5), what="log line")

    def test_verify_false_accepts_anything(self):
        b = self.backend()
        self.start(b, {"verify": False})
        self.assertEqual(self.tp.get("/x").status, 200)

    def test_client_certificate_to_the_backend(self):
        b = self.backend(client_ca=self.pki.clients_ca)
        self.start(b, {"ca": self.pki.ca.cert, "server_name": "api.example.test",
                       "cert": self.pki.client.cert, "key": self.pki.client.key})
        r = self.tp.get("/mtls")
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.json()["client_subject"], "organizationName=Acme,commonName=client-1")

    def test_backend_requiring_a_client_certificate_refuses_without_one(self):
        b = self.backend(client_ca=self.pki.clients_ca)
        self.start(b, {"ca": self.pki.ca.cert, "server_name": "api.example.test"})
        self.assertEqual(self.tp.get("/x").status, 502)

    def test_config_errors_name_the_key(self):
        path = self.stack.write("bad.yaml", h.to_yaml(h.config(
            h.free_port(), [h.listener("public", h.free_port())],
            [h.cluster("secure", "127.0.0.1:1", tls={"ca": "/nonexistent/ca.pem",
                                                     "cert": self.pki.client.cert,
                                                     "key": self.pki.api.key})],
            [{"name": "all", "match": {"path_prefix": "/"}, "backend": "secure"}])) + "\n")
        import subprocess
        p = subprocess.run([h.TURNPIKE_BIN, "check", "-c", path], capture_output=True,
                           text=True, timeout=h.scaled(10))
        out = p.stdout + p.stderr
        self.assertEqual(p.returncode, 1, out)
        self.assertIn("clusters[0].tls.ca: cannot read '/nonexistent/ca.pem'", out)
        self.assertIn("clusters[0].tls.key:", out)
        self.assertIn("does not match", out)


if __name__ == "__main__":
    unittest.main()
