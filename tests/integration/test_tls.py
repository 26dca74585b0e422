"""TLS termination on listeners (the `tls` block): certificates chosen by SNI (exact and one-label
wildcard SAN names, the first certificate as default, chains sent), ALPN http/1.1, HTTP/1.1
proxied with X-Forwarded-Proto: https, minimum version and TLS 1.2 ciphers, client certificates
(required / optional, verified against client_ca) and X-Forwarded-Client-Cert, session tickets,
`turnpike check` errors, hot reload of certificate files, plain HTTP on a TLS port, and a small
load check. Clients: Python's ssl module and the curl CLI; the PKI is made with the openssl CLI
(tls_certs.py).

Nothing here is skipped: if the binary does not know the `tls` key, start-up fails and so do the
tests.
"""

import hashlib
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402
import tls_certs  # noqa: E402

API = "api.example.test"
OTHER = "other.example.test"
XFCC = "x-forwarded-client-cert"


class TlsConn(h.HttpConn):
    """harness.HttpConn over TLS: the handshake happens in the constructor."""

    def __init__(self, port, ctx, server_hostname=API, timeout=5, session=None):
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self.sock = ctx.wrap_socket(raw, server_hostname=server_hostname, session=session)
        except BaseException:
            raw.close()
            raise
        self.sock.settimeout(timeout)
        self.buf = bytearray()
        self.eof = False

    def peer(self):
        """(subject CN, [SAN DNS names], serial as int) of the server's certificate."""
        return cert_names(self.sock.getpeercert())


def cert_names(pc):
    cn = next((v for rdn in pc.get("subject", ()) for k, v in rdn if k == "commonName"), None)
    sans = [v for k, v in pc.get("subjectAltName", ()) if k == "DNS"]
    return cn, sans, int(pc["serialNumber"], 16)


def parse_xfcc(value):
    """Envoy-style `Key=value;Key="quoted";...` (one certificate) -> [(key, raw value)]."""
    pairs = re.findall(r'([A-Za-z]+)=("(?:[^"\\]|\\.)*"|[^;]*)(?:;|$)', value)
    rebuilt = ";".join("%s=%s" % kv for kv in pairs)
    if rebuilt != value:
        raise AssertionError("malformed X-Forwarded-Client-Cert %r (parsed as %r)"
                             % (value, pairs))
    return pairs


class TlsCase(h.TurnpikeCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.pki = tls_certs.Pki(os.path.join(cls.cstack.dir, "pki"))

    def setUp(self):
        super().setUp()
        self.echo = self.stack.echo()
        self.admin_port = h.free_port()

    # --- configs -------------------------------------------------------------------------

    @staticmethod
    def tls(*certs, **opts):
        block = {"certificates": [{"cert": c.cert, "key": c.key} for c in certs]}
        block.update(opts)
        return block

    def cfg(self, *tls_blocks, plain=False, workers=2, reload=None):
        """Listeners tls0, tls1, ... (one per block), plus `plain` (HTTP) if asked; every
        request goes to the echo cluster."""
        listeners = []
        for i, block in enumerate(tls_blocks):
            lst = h.listener("tls%d" % i, h.free_port())
            lst["tls"] = block
            listeners.append(lst)
        if plain:
            listeners.append(h.listener("plain", h.free_port()))
        extra = {"reload": reload} if reload is not None else {}
        return h.config(self.admin_port, listeners, [h.cluster("echo", self.echo)],
                        [{"name": "all", "match": {"path_prefix": "/"}, "backend": "echo"}],
                        workers=workers, **extra)

    def start(self, *tls_blocks, **kw):
        self.tp = self.stack.turnpike(self.cfg(*tls_blocks, **kw))
        return self.tp

    def port(self, name="tls0"):
        return self.tp.ports[name]

    # --- clients -------------------------------------------------------------------------

    def ctx(self, ca=None, client=None, max_version=None, min_version=None, alpn=None,
            check_hostname=True, ciphers=None):
        ctx = ssl.create_default_context(cafile=(ca or self.pki.ca).cert)
        ctx.check_hostname = check_hostname
        if client:
            ctx.load_cert_chain(client.cert, client.key)
        if max_version:
            ctx.maximum_version = max_version
        if min_version:
            ctx.minimum_version = min_version
        if alpn:
            ctx.set_alpn_protocols(alpn)
        if ciphers:
            ctx.set_ciphers(ciphers)
        return ctx

    def connect(self, ctx=None, name=API, listener="tls0", **kw):
        return TlsConn(self.port(listener), ctx or self.ctx(), server_hostname=name,
                       timeout=h.scaled(5), **kw)

    def https(self, path="/hello", ctx=None, name=API, listener="tls0", headers=(), **kw):
        """One request on a fresh TLS connection (Connection: close); returns the response."""
        c = self.connect(ctx, name, listener)
        try:
            hdrs = list(headers) + [("Connection", "close")]
            return c.request("GET", path, headers=hdrs, host=name or "localhost", **kw)
        finally:
            c.close()

    def echoed(self, resp):
        self.assertEqual(resp.status, 200, repr(resp))
        body = resp.json()
        self.assertEqual(body.get("upstream"), "echo", body)
        return body

    def served_cert(self, name=API, listener="tls0", ca=None):
        """(CN, SAN DNS names, serial) the listener serves for SNI `name` (None: no SNI)."""
        ctx = self.ctx(ca=ca, check_hostname=False)
        c = self.connect(ctx, name, listener)
        try:
            return c.peer()
        finally:
            c.close()

    def assertTlsRefused(self, ctx, name=API, listener="tls0"):
        """The handshake fails, or (TLS 1.3: the client's side of the handshake completes before
        the server checks its certificate) the connection fails at the first exchange, without
        any HTTP response. Returns the exception."""
        try:
            c = self.connect(ctx, name, listener)
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as e:
            return e
        try:
            r = c.request("GET", "/refused", headers=[("Connection", "close")])
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as e:
            return e
        except h.HttpError as e:
            if "timed out" in str(e):
                raise AssertionError("TLS connection neither refused nor answered: %s" % e)
            return e
        finally:
            c.close()
        self.fail("TLS connection should have been refused, got %r" % (r,))

    def curl(self, url_path="/hello", name=API, listener="tls0", args=(), ca=None):
        """curl https://name:PORT/path --resolve name:PORT:127.0.0.1; returns (rc, status,
        http_version, body bytes, stderr text)."""
        port = self.port(listener)
        p = h.curl("--cacert", (ca or self.pki.ca).cert,
                   "--resolve", "%s:%d:127.0.0.1" % (name, port),
                   "-w", "\n@@%{http_code} %{http_version}", *args,
                   "https://%s:%d%s" % (name, port, url_path), timeout=h.scaled(10))
        out = p.stdout
        body, _, meta = out.rpartition(b"\n@@")
        status, _, version = meta.decode().partition(" ")
        return p.returncode, status, version, body, p.stderr.decode("utf-8", "replace")


# ---------------------------------------------------------------------------------------------


class TlsServingTest(TlsCase):
    def test_curl_gets_proxied_response_over_https(self):
        self.start(self.tls(self.pki.api, self.pki.other), plain=True)
        rc, status, version, body, err = self.curl("/svc/hello?x=1")
        self.assertEqual(rc, 0, err)
        self.assertEqual((status, version), ("200", "2"))  # curl offers h2 and gets it
        echo = json.loads(body)
        self.assertEqual((echo["method"], echo["path"], echo["query"]),
                         ("GET", "/svc/hello", "x=1"))
        self.assertEqual(echo["headers"].get("x-forwarded-proto"), "https", echo)
        self.assertEqual(echo["headers"].get("host"), "%s:%d" % (API, self.port()))
        # A wildcard name verifies too (curl checks the host name against the SANs).
        rc, status, _, _, err = self.curl("/w", name="v2." + API)
        self.assertEqual((rc, status), (0, "200"), err)

    def test_forwarded_proto_is_https_on_tls_and_http_on_plain(self):
        self.start(self.tls(self.pki.api), plain=True)
        r = self.https("/proto")
        self.assertEqual(self.echoed(r)["headers"].get("x-forwarded-proto"), "https")
        plain = self.tp.request("GET", "/proto", listener_name="plain")
        self.assertEqual(self.echoed(plain)["headers"].get("x-forwarded-proto"), "http")

    def test_request_and_response_bodies_and_keepalive(self):
        self.start(self.tls(self.pki.api))
        upload = os.urandom(300 * 1024)
        with self.connect() as c:
            r = c.request("POST", "/upload", body=upload, host=API)
            echo = self.echoed(r)
            self.assertEqual(echo["body_bytes"], len(upload))
            self.assertEqual(echo["body_sha256"], hashlib.sha256(upload).hexdigest())
            r = c.request("GET", "/bytes/3000000", host=API)
            self.assertEqual(r.status, 200)
            self.assertEqual(len(r.body), 3000000)
            self.assertTrue(r.body.startswith(b"abcdefghijklmnopqrstuvwxyz"), r.body[:40])
            # Small chunks first (they arrive in one TLS record with the head), then large ones.
            pieces = [os.urandom(n) for n in (1000, 1, 100, 4096, 65536, 3, 200000)]
            r = c.request("POST", "/chunked", host=API,
                          headers=[("Transfer-Encoding", "chunked")], body=h.chunked(pieces))
            echo = self.echoed(r)
            self.assertEqual(echo["body_bytes"], sum(map(len, pieces)))
            self.assertEqual(echo["body_sha256"], hashlib.sha256(b"".join(pieces)).hexdigest())
            # Same connection, still usable after all of that.
            self.assertEqual(c.request("GET", "/again", host=API).status, 200)

    def test_alpn_prefers_h2_and_follows_protocols(self):
        self.start(self.tls(self.pki.api), self.tls(self.pki.api))
        with self.connect(self.ctx(alpn=["http/1.1", "h2"])) as c:
            self.assertEqual(c.sock.selected_alpn_protocol(), "h2")
        with self.connect(self.ctx(alpn=["http/1.1"])) as c:
            self.assertEqual(c.sock.selected_alpn_protocol(), "http/1.1")
            self.assertEqual(c.request("GET", "/alpn", host=API).status, 200)
        # A listener limited to http1 never offers h2.
        self.tp.proc.stop()
        cfg = self.cfg(self.tls(self.pki.api))
        cfg["listeners"][0]["protocols"] = ["http1"]
        self.tp = self.stack.turnpike(cfg)
        for offered in (["h2", "http/1.1"], ["http/1.1"]):
            with self.connect(self.ctx(alpn=offered)) as c:
                self.assertEqual(c.sock.selected_alpn_protocol(), "http/1.1", offered)
                self.assertEqual(c.request("GET", "/alpn", host=API).status, 200)
        # No ALPN at all is fine too.
        with self.connect(self.ctx()) as c:
            self.assertIsNone(c.sock.selected_alpn_protocol())
            self.assertEqual(c.request("GET", "/no-alpn", host=API).status, 200)

    def test_plain_http_on_tls_port_gets_no_http_response(self):
        self.start(self.tls(self.pki.api))
        for _ in range(3):
            c = h.HttpConn(self.port(), timeout=h.scaled(5))
            try:
                c.send(b"GET /plain HTTP/1.1\r\nHost: localhost\r\n\r\n")
                closed, data = c.wait_closed(h.scaled(5))
            finally:
                c.close()
            self.assertTrue(closed, "connection not closed; got %r" % data[:200])
            self.assertFalse(data.startswith(b"HTTP/"), data[:200])
            if data:
                self.assertEqual(data[0], 0x15, "expected nothing or a TLS alert: %r" % data[:50])
        self.assertIsNone(self.tp.proc.poll(), "turnpike died")
        r = self.https("/after-plain")
        self.echoed(r)

    def test_load_sequential_new_connections_and_one_keepalive(self):
        self.start(self.tls(self.pki.api))
        ctx = self.ctx()
        statuses = []
        for i in range(200):
            r = self.https("/load/new/%d" % i, ctx=ctx)
            statuses.append(r.status)
        self.assertEqual(statuses, [200] * 200)
        statuses = []
        with self.connect(ctx) as c:
            for i in range(200):
                statuses.append(c.request("GET", "/load/ka/%d" % i, host=API).status)
        self.assertEqual(statuses, [200] * 200)
        self.assertIsNone(self.tp.proc.poll())


class SniTest(TlsCase):
    def test_sni_picks_certificate_and_first_is_default(self):
        pki = self.pki
        # tls0: api first (default); tls1: other first (default), so a miss is visible.
        self.start(self.tls(pki.api, pki.other), self.tls(pki.other, pki.api))
        api_id = ("api.example.test", ["api.example.test", "*.api.example.test"], pki.api.serial)
        other_id = ("other.example.test", ["other.example.test"], pki.other.serial)
        cases = [
            (API, api_id, api_id),
            ("x." + API, api_id, api_id),             # wildcard, one label
            ("X.Api.Example.TEST", api_id, api_id),   # DNS names are case-insensitive
            (OTHER, other_id, other_id),
            ("a.b." + API, api_id, other_id),         # wildcard covers one label only
            ("example.test", api_id, other_id),
            ("unknown.test", api_id, other_id),
            (None, api_id, other_id),                 # no SNI
        ]
        for name, on_tls0, on_tls1 in cases:
            self.assertEqual(self.served_cert(name, "tls0"), on_tls0, name)
            self.assertEqual(self.served_cert(name, "tls1"), on_tls1, name)

    def test_chain_in_cert_file_is_sent(self):
        # other.pem = leaf + intermediate; the client trusts only the root CA.
        self.start(self.tls(self.pki.api, self.pki.other))
        r = self.https("/chain", ctx=self.ctx(), name=OTHER)  # verifies, hostname checked
        self.echoed(r)
        rc, status, _, _, err = self.curl("/chain", name=OTHER)
        self.assertEqual((rc, status), (0, "200"), err)

    def test_curl_rejects_default_certificate_for_unknown_name(self):
        self.start(self.tls(self.pki.api, self.pki.other))
        rc, _, _, body, err = self.curl("/nomatch", name="nomatch.example.test")
        self.assertEqual(rc, 60, "curl should fail host name verification: %s %r" % (err, body))
        # ... but the connection is fine with verification of the name off.
        rc, status, _, _, err = self.curl("/nomatch", name="nomatch.example.test",
                                          args=["--insecure"])
        self.assertEqual((rc, status), (0, "200"), err)


class VersionAndCipherTest(TlsCase):
    def test_default_min_version_accepts_tls12_and_tls13(self):
        self.start(self.tls(self.pki.api))
        for limit, expected in ((ssl.TLSVersion.TLSv1_2, "TLSv1.2"),
                                (ssl.TLSVersion.TLSv1_3, "TLSv1.3")):
            with self.connect(self.ctx(max_version=limit, min_version=limit)) as c:
                self.assertEqual(c.sock.version(), expected)
                self.assertEqual(c.request("GET", "/v", host=API).status, 200)

    def test_min_version_13_refuses_tls12_clients(self):
        self.start(self.tls(self.pki.api, min_version="1.3"))
        err = self.assertTlsRefused(self.ctx(max_version=ssl.TLSVersion.TLSv1_2))
        self.assertIsInstance(err, (ssl.SSLError, ConnectionResetError), err)
        with self.connect(self.ctx()) as c:
            self.assertEqual(c.sock.version(), "TLSv1.3")
            self.assertEqual(c.request("GET", "/v13", host=API).status, 200)
        rc, _, _, _, err = self.curl("/v", args=["--tls-max", "1.2"])
        self.assertNotEqual(rc, 0, "curl limited to TLS 1.2 got through")
        rc, status, _, _, err = self.curl("/v", args=["--tlsv1.3"])
        self.assertEqual((rc, status), (0, "200"), err)

    def test_tls12_cipher_list(self):
        allowed = "ECDHE-ECDSA-AES128-GCM-SHA256"
        self.start(self.tls(self.pki.api, ciphers=allowed))
        tls12 = ssl.TLSVersion.TLSv1_2
        self.assertTlsRefused(self.ctx(max_version=tls12,
                                       ciphers="ECDHE-ECDSA-AES256-GCM-SHA384"))
        ctx = self.ctx(max_version=tls12,
                       ciphers="ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:"
                               + allowed)
        with self.connect(ctx) as c:
            self.assertEqual(c.sock.cipher()[0], allowed)
            self.assertEqual(c.sock.version(), "TLSv1.2")
            self.assertEqual(c.request("GET", "/cipher", host=API).status, 200)
        # The list is for TLS 1.2; TLS 1.3 clients still connect.
        with self.connect(self.ctx(min_version=ssl.TLSVersion.TLSv1_3)) as c:
            self.assertEqual(c.sock.version(), "TLSv1.3")
            self.assertEqual(c.request("GET", "/cipher13", host=API).status, 200)


class ClientCertTest(TlsCase):
    VERSIONS = ((ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3"))

    def versioned_ctx(self, version, client=None):
        return self.ctx(client=client, max_version=version, min_version=version)

    def test_required_client_cert(self):
        pki = self.pki
        self.start(self.tls(pki.api, client_ca=pki.clients_ca.cert, require_client_cert=True))
        for version, label in self.VERSIONS:
            with self.subTest(label):
                self.assertTlsRefused(self.versioned_ctx(version))
                self.assertTlsRefused(self.versioned_ctx(version, pki.rogue_client))
                # A server certificate from another CA is no client certificate here either.
                self.assertTlsRefused(self.versioned_ctx(version, pki.api))
                with self.connect(self.versioned_ctx(version, pki.client)) as c:
                    self.assertEqual(c.sock.version(), label)
                    self.echoed(c.request("GET", "/mtls", host=API))
        rc, _, _, _, err = self.curl("/mtls")
        self.assertNotEqual(rc, 0, "curl without a client certificate got through")
        rc, _, _, _, err = self.curl("/mtls", args=["--cert", pki.rogue_client.cert,
                                                    "--key", pki.rogue_client.key])
        self.assertNotEqual(rc, 0, "curl with an untrusted client certificate got through")
        rc, status, _, body, err = self.curl("/mtls", args=["--cert", pki.client.cert,
                                                            "--key", pki.client.key])
        self.assertEqual((rc, status), (0, "200"), err)
        self.assertEqual(json.loads(body)["upstream"], "echo")
        self.assertIsNone(self.tp.proc.poll())

    def test_optional_client_cert_is_verified_when_sent(self):
        pki = self.pki
        self.start(self.tls(pki.api, client_ca=pki.clients_ca.cert, require_client_cert=False))
        for version, label in self.VERSIONS:
            with self.subTest(label):
                r = self.https("/opt", ctx=self.versioned_ctx(version))
                self.echoed(r)
                r = self.https("/opt", ctx=self.versioned_ctx(version, pki.client))
                self.echoed(r)
                self.assertTlsRefused(self.versioned_ctx(version, pki.rogue_client))
        rc, status, _, _, err = self.curl("/opt")
        self.assertEqual((rc, status), (0, "200"), err)

    def test_forward_client_cert(self):
        pki = self.pki
        self.start(self.tls(pki.api, client_ca=pki.clients_ca.cert, require_client_cert=False,
                            forward_client_cert=True))
        spoof = [("X-Forwarded-Client-Cert", 'Subject="CN=admin";DNS=evil.test')]
        # No client certificate: the client's own header is removed, nothing is added.
        r = self.https("/xfcc", headers=spoof)
        self.assertNotIn(XFCC, self.echoed(r)["headers"])
        # client-1: subject in RFC 2253 order, its DNS and URI SANs; the spoofed value is gone.
        for headers in ((), spoof):
            r = self.https("/xfcc", ctx=self.ctx(client=pki.client), headers=headers)
            value = self.echoed(r)["headers"].get(XFCC)
            self.assertIsNotNone(value, "no %s upstream" % XFCC)
            self.assertNotIn("evil", value)
            self.assertEqual(sorted(parse_xfcc(value)),
                             sorted([("Subject", '"CN=client-1,O=Acme"'),
                                     ("DNS", "client-1.acme.test"),
                                     ("URI", "spiffe://acme/client-1")]), value)
            self.assertTrue(value.startswith('Subject="CN=client-1,O=Acme";'), value)
        # client-2: two DNS names, the key repeated; no URI.
        r = self.https("/xfcc", ctx=self.ctx(client=pki.client2), headers=spoof)
        value = self.echoed(r)["headers"].get(XFCC)
        self.assertEqual(sorted(parse_xfcc(value or "")),
                         sorted([("Subject", '"CN=client-2,O=Acme"'),
                                 ("DNS", "client-2.acme.test"),
                                 ("DNS", "alt.client-2.acme.test")]), value)
        # curl with the certificate sees the same.
        rc, status, _, body, err = self.curl("/xfcc", args=["--cert", pki.client.cert,
                                                            "--key", pki.client.key])
        self.assertEqual((rc, status), (0, "200"), err)
        self.assertIn("DNS=client-1.acme.test", json.loads(body)["headers"].get(XFCC, ""))

    def test_no_client_cert_header_without_forward_client_cert(self):
        pki = self.pki
        self.start(self.tls(pki.api, client_ca=pki.clients_ca.cert, require_client_cert=True))
        r = self.https("/no-xfcc", ctx=self.ctx(client=pki.client))
        self.assertNotIn(XFCC, self.echoed(r)["headers"])


class SessionTicketTest(TlsCase):
    VERSIONS = (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3)

    def reuse_chain(self, version, rounds=6):
        """A full handshake, then `rounds` connections each offering the previous connection's
        session (read after a response, so TLS 1.3 tickets have arrived). Returns
        [session_reused of each connection]."""
        ctx = self.ctx(max_version=version, min_version=version)
        session, reused = None, []
        for i in range(rounds + 1):
            c = self.connect(ctx, session=session)
            try:
                self.assertEqual(c.request("GET", "/ticket/%d" % i, host=API).status, 200)
                reused.append(c.sock.session_reused)
                session = c.sock.session
            finally:
                c.close()
        return reused

    def test_session_resumption_with_tickets(self):
        # Two workers: a resumed connection may land on the other one.
        self.start(self.tls(self.pki.api), workers=2)
        for version in self.VERSIONS:
            with self.subTest(version.name):
                reused = self.reuse_chain(version)
                self.assertFalse(reused[0])
                self.assertEqual(reused[1:], [True] * (len(reused) - 1), reused)

    def test_session_tickets_off(self):
        self.start(self.tls(self.pki.api, session_tickets=False), workers=2)
        for version in self.VERSIONS:
            with self.subTest(version.name):
                self.assertEqual(self.reuse_chain(version, rounds=3), [False] * 4)


class CheckTest(TlsCase):
    def check(self, cfg):
        text = h.to_yaml(cfg) + "\n"
        path = self.stack.write("check.yaml", text)
        p = subprocess.run([h.TURNPIKE_BIN, "check", "-c", path], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=h.scaled(30))
        return p.returncode, p.stdout.decode("utf-8", "replace"), path, text.splitlines()

    def assertCheckError(self, cfg, key_path, line_has, *fragments):
        rc, out, path, lines = self.check(cfg)
        self.assertEqual(rc, 1, out)
        want_line = next(i + 1 for i, l in enumerate(lines) if line_has in l)
        m = re.search(r"^%s:(\d+):(\d+): %s: (.*)$" % (re.escape(path), re.escape(key_path)),
                      out, re.M)
        self.assertIsNotNone(m, "no '%s:LINE:COL: %s: ...' in:\n%s" % (path, key_path, out))
        self.assertEqual(int(m.group(1)), want_line, out)
        for f in fragments:
            self.assertIn(f, m.group(3))
        return m.group(3)

    def test_valid_tls_config_passes_check(self):
        pki = self.pki
        rc, out, _, _ = self.check(self.cfg(self.tls(
            pki.api, pki.other, min_version="1.3", client_ca=pki.clients_ca.cert,
            require_client_cert=True, forward_client_cert=True, session_tickets=False,
            ciphers="ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384")))
        self.assertEqual(rc, 0, out)

    def test_missing_cert_file(self):
        missing = tls_certs.Cert(self.stack.path("nope.pem"), self.pki.api.key)
        self.assertCheckError(self.cfg(self.tls(missing)),
                              "listeners[0].tls.certificates[0].cert", missing.cert)

    def test_key_that_does_not_match(self):
        wrong = tls_certs.Cert(self.pki.api.cert, self.pki.other.key)
        self.assertCheckError(self.cfg(self.tls(wrong)),
                              "listeners[0].tls.certificates[0].key", wrong.key, "does not match")

    def test_min_version_11_rejected(self):
        self.assertCheckError(self.cfg(self.tls(self.pki.api, min_version="1.1")),
                              "listeners[0].tls.min_version", "min_version")


class CertReloadTest(TlsCase):
    def setUp(self):
        super().setUp()
        # The config names copies in the test's dir; the tests rewrite them in place.
        self.live = tls_certs.Cert(self.stack.path("live.pem"), self.stack.path("live.key"))
        shutil.copyfile(self.pki.api.cert, self.live.cert)
        shutil.copyfile(self.pki.api.key, self.live.key)
        self.v2 = self.pki.issue_server("api-v2-" + self._testMethodName,
                                        [API, "*." + API, "v2." + API], cn="api v2")

    def status(self):
        return json.loads(self.tp.admin("GET", "/config/status").body)

    def rewrite(self, cert=None, key=None):
        """Rewrites the live files in place (same inode), key first."""
        for src, dst in ((key, self.live.key), (cert, self.live.cert)):
            if src:
                with open(src, "rb") as f:
                    data = f.read()
                with open(dst, "wb") as f:
                    f.write(data)

    def test_watched_cert_files_reload_and_bad_key_is_rejected(self):
        self.start(self.tls(self.live), reload={"watch": True, "debounce": "50ms"})
        self.assertEqual(self.served_cert()[2], self.pki.api.serial)
        self.assertEqual(self.status()["generation"], 1)
        old_conn = self.connect()
        try:
            self.assertEqual(old_conn.request("GET", "/before", host=API).status, 200)
            self.rewrite(self.v2.cert, self.v2.key)
            h.wait_for(lambda: self.served_cert()[2] == self.v2.serial, h.scaled(5),
                       what="the new certificate on new connections")
            h.wait_for(lambda: (self.status().get("last_reload") or {}).get("result")
                       == "applied", h.scaled(5), what="reload applied")
            st = self.status()
            self.assertEqual(st["generation"], 2, st)
            self.assertEqual(st["last_reload"]["trigger"], "file", st)
            self.assertEqual(self.served_cert(), ("api v2", [API, "*." + API, "v2." + API],
                                                  self.v2.serial))
            r = self.https("/after", ctx=self.ctx())
            self.echoed(r)
            # A connection made before the reload keeps working.
            self.assertEqual(old_conn.request("GET", "/old-conn", host=API).status, 200)
        finally:
            old_conn.close()
        # A key that does not match the certificate: rejected, generation 2 keeps serving.
        self.rewrite(key=self.pki.new_key("stray-" + self._testMethodName))
        h.wait_for(lambda: self.status()["last_reload"]["result"] == "rejected", h.scaled(5),
                   what="reload rejected")
        st = self.status()
        self.assertEqual(st["generation"], 2, st)
        self.assertTrue(any("listeners[0].tls.certificates[0].key" in e and
                            "does not match" in e for e in st["last_reload"]["errors"]), st)
        self.assertEqual(self.served_cert()[2], self.v2.serial)
        r = self.https("/still", ctx=self.ctx())
        self.echoed(r)

    def test_cert_content_is_part_of_config_identity(self):
        self.start(self.tls(self.live), reload={"watch": False})
        r = self.tp.admin("POST", "/reload")
        self.assertEqual(json.loads(r.body)["last_reload"]["result"], "unchanged", r.body)
        # Same YAML, new certificate and key content: a new generation.
        self.rewrite(self.v2.cert, self.v2.key)
        self.assertEqual(self.served_cert()[2], self.pki.api.serial)  # no watch, no reload yet
        r = self.tp.admin("POST", "/reload")
        self.assertEqual(r.status, 200, r.body)
        st = json.loads(r.body)
        self.assertEqual((st["generation"], st["last_reload"]["result"]), (2, "applied"), st)
        self.assertEqual(self.served_cert()[2], self.v2.serial)
        r = self.tp.admin("POST", "/reload")
        self.assertEqual(json.loads(r.body)["last_reload"]["result"], "unchanged", r.body)
        # A mismatching key through an explicit reload: 422, old certificate still served.
        self.rewrite(key=self.pki.new_key("stray-" + self._testMethodName))
        r = self.tp.admin("POST", "/reload")
        self.assertEqual(r.status, 422, r.body)
        st = json.loads(r.body)
        self.assertEqual((st["generation"], st["last_reload"]["result"]), (2, "rejected"), st)
        self.assertEqual(self.served_cert()[2], self.v2.serial)


if __name__ == "__main__":
    unittest.main()
