"""The `jwt` filter as a client sees it: tokens minted by PyJWT (python3-jwt with
python3-cryptography) for every algorithm (RS256/384/512, PS256/384/512, ES256, ES384, EdDSA,
HS256/384/512) pass and forward their claims upstream; forged, expired, not-yet-valid,
wrong-issuer, wrong-audience, alg-none, malformed, unknown-kid and key-confusion tokens get a
401 with the RFC 6750 challenge and the JSON error body; a missing token gets the realm
challenge; token sources (header, query, cookie) and forward_token: false; the optional mode.
Keys from a JWKS file that is rotated while the daemon runs, and from a JWKS URL served by a
small HTTP server in this test (hit-counted): the first fetch, rotation on an unknown kid, a
burst of forged kids costing at most one fetch per min_refresh_interval, the identity provider
going down (the last good keys keep working, and no keys at all is a 503), a reload keeping the
cache. Config errors with file:line:column through `turnpike check`.
"""

import base64
import hashlib
import hmac
import http.server
import json
import os
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

import jwt  # noqa: E402  (python3-jwt)
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa  # noqa: E402

ISSUER = "https://idp.example.test"
HMAC_SECRET = bytes(range(64))  # 64 bytes: HS256, HS384 and HS512


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwk_of(public_key, kid):
    if isinstance(public_key, rsa.RSAPublicKey):
        text = jwt.algorithms.RSAAlgorithm.to_jwk(public_key)
    elif isinstance(public_key, ec.EllipticCurvePublicKey):
        text = jwt.algorithms.ECAlgorithm.to_jwk(public_key)
    else:
        text = jwt.algorithms.OKPAlgorithm.to_jwk(public_key)
    d = json.loads(text) if isinstance(text, str) else dict(text)
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        # Full-length coordinates (RFC 7518 6.2.1.2); Debian's PyJWT 2.6 drops leading zero
        # bytes, which Turnpike accepts too (see the unit tests), but keep the keys canonical.
        size = (public_key.curve.key_size + 7) // 8
        nums = public_key.public_numbers()
        for name, value in (("x", nums.x), ("y", nums.y)):
            d[name] = base64.urlsafe_b64encode(value.to_bytes(size, "big")).rstrip(b"=").decode()
    d["kid"] = kid
    d["use"] = "sig"
    return d


class Keys:
    """Generated once per process: the signing keys and their JWKs."""

    def __init__(self):
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.rsa_other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec256 = ec.generate_private_key(ec.SECP256R1())
        self.ec384 = ec.generate_private_key(ec.SECP384R1())
        self.ed = ed25519.Ed25519PrivateKey.generate()
        self.signing = {  # alg -> (private key, kid)
            "RS256": (self.rsa, "rsa1"), "RS384": (self.rsa, "rsa1"),
            "RS512": (self.rsa, "rsa1"), "PS256": (self.rsa, "rsa1"),
            "PS384": (self.rsa, "rsa1"), "PS512": (self.rsa, "rsa1"),
            "ES256": (self.ec256, "ec256"), "ES384": (self.ec384, "ec384"),
            "EdDSA": (self.ed, "ed1"),
            "HS256": (HMAC_SECRET, None), "HS384": (HMAC_SECRET, None),
            "HS512": (HMAC_SECRET, None),
        }

    def jwks(self):
        return {"keys": [jwk_of(self.rsa.public_key(), "rsa1"),
                         jwk_of(self.ec256.public_key(), "ec256"),
                         jwk_of(self.ec384.public_key(), "ec384"),
                         jwk_of(self.ed.public_key(), "ed1"),
                         # An encryption key is skipped, not an error.
                         dict(jwk_of(self.rsa_other.public_key(), "enc1"), use="enc")]}

    def rsa_pem(self):
        return self.rsa.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo)


KEYS = Keys()


def claims(**over):
    now = int(time.time())
    c = {"iss": ISSUER, "aud": "api", "sub": "user-42", "email": "u42@example.test",
         "scope": "read write", "groups": ["staff", "ops"],
         "realm_access": {"roles": ["admin", "dev"]}, "iat": now, "exp": now + 600}
    c.update(over)
    return {k: v for k, v in c.items() if v is not None}


def mint(alg="RS256", kid="default", key=None, **over):
    k, default_kid = KEYS.signing[alg]
    headers = {}
    kid = default_kid if kid == "default" else kid
    if kid is not None:
        headers["kid"] = kid
    token = jwt.encode(claims(**over), key if key is not None else k, algorithm=alg,
                       headers=headers)
    return token.decode() if isinstance(token, bytes) else token


def hs256_with_secret(secret, header, payload):
    """An HS256 token signed by hand (PyJWT refuses a PEM as an HMAC secret, rightly)."""
    signing = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(payload).encode())
    sig = hmac.new(secret, signing.encode(), hashlib.sha256).digest()
    return signing + "." + b64url(sig)


def bearer(token):
    return [("Authorization", "Bearer " + token)]


class JwtCase(h.TurnpikeCase):
    def assert_rejected(self, r, error):
        h.assert_json_error(self, r, 401, error, challenge='Bearer error="invalid_token", '
                                                           'error_description="%s"' % error)
        # Never key material or the token in the answer.
        self.assertNotIn(b"BEGIN", r.body)


class JwtFileKeysTest(JwtCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        s = cls.cstack
        cls.echo = s.echo("up")
        s.write("jwks.json", json.dumps(KEYS.jwks()))
        s.write("rsa-only.json", json.dumps({"keys": [jwk_of(KEYS.rsa.public_key(), "rsa1")]}))
        with open(s.path("hmac.key"), "wb") as f:
            f.write(HMAC_SECRET)
        cls.port, admin = h.free_port(), h.free_port()
        main = {"type": "jwt", "jwks": {"file": "jwks.json"}, "secret_file": "hmac.key",
                "issuer": ISSUER, "audiences": ["api", "other-api"],
                "forward_claims": {"sub": "x-user-id", "email": "x-user-email",
                                   "realm_access.roles": "x-roles", "scope": "x-scope"},
                "groups_claim": "groups"}
        filters = {
            "main": main,
            "tag": {"type": "headers",
                    "request": {"set": {"x-consumer": "${consumer}", "x-aud": "${jwt.aud}"}}},
            "rsa-only": {"type": "jwt", "jwks": {"file": "rsa-only.json"}, "issuer": ISSUER},
            "strip": dict(main, forward_token=False, forward_claims={},
                          **{"from": {"header": "x-token", "query": "access_token",
                                      "cookie": "session"}}),
            "opt": {"type": "jwt", "jwks": {"file": "jwks.json"}, "issuer": ISSUER,
                    "optional": True, "consumer_claim": "email", "realm": "example api"},
            "skew0": dict(main, clock_skew="0s", forward_claims={}, max_token_bytes="1KiB"),
        }
        routes = [
            {"name": "api", "match": {"path_prefix": "/api"}, "filters": ["main", "tag"],
             "backend": "up"},
            {"name": "rsa", "match": {"path_prefix": "/rsa"}, "filters": ["rsa-only"],
             "backend": "up"},
            {"name": "strip", "match": {"path_prefix": "/strip"}, "filters": ["strip"],
             "backend": "up"},
            {"name": "opt", "match": {"path_prefix": "/opt"}, "filters": ["opt", "tag"],
             "backend": "up"},
            {"name": "skew0", "match": {"path_prefix": "/skew0"}, "filters": ["skew0"],
             "backend": "up"},
        ]
        cfg = h.config(admin, [h.listener("main", cls.port)], [h.cluster("up", cls.echo)],
                       routes, filters=filters)
        cls.tp = s.turnpike(cfg)

    def get(self, path, headers=()):
        return self.tp.get(path, headers=list(headers))

    def test_every_algorithm_passes_and_forwards_claims(self):
        for alg in KEYS.signing:
            with self.subTest(alg=alg):
                token = mint(alg, sub="user-" + alg)
                for _ in range(2):  # the second one is answered from the token cache
                    r = self.get("/api/x", bearer(token))
                    self.assertEqual(r.status, 200, r)
                    seen = r.json()["headers"]
                    self.assertEqual(seen["x-user-id"], "user-" + alg)
                    self.assertEqual(seen["x-user-email"], "u42@example.test")
                    self.assertEqual(seen["x-roles"], "admin,dev")
                    self.assertEqual(seen["x-scope"], "read write")
                    self.assertEqual(seen["x-consumer"], "user-" + alg)
                    self.assertEqual(seen["x-aud"], "api")
                    # forward_token defaults to true.
                    self.assertEqual(seen["authorization"], "Bearer " + token)

    def test_client_cannot_spoof_forwarded_claim_headers(self):
        r = self.get("/api/x", bearer(mint()) + [("X-User-Id", "admin"), ("X-Roles", "root")])
        self.assertEqual(r.status, 200, r)
        seen = r.json()["headers"]
        self.assertEqual(seen["x-user-id"], "user-42")
        self.assertEqual(seen["x-roles"], "admin,dev")
        # A claim the token lacks: the client's header is still removed.
        r = self.get("/api/x", bearer(mint(email=None)) + [("X-User-Email", "ceo@example.test")])
        self.assertEqual(r.status, 200, r)
        self.assertNotIn("x-user-email", r.json()["headers"])

    def test_any_listed_audience_and_an_audience_list(self):
        self.assertEqual(self.get("/api/x", bearer(mint(aud="other-api"))).status, 200)
        self.assertEqual(self.get("/api/x", bearer(mint(aud=["x", "other-api"]))).status, 200)
        self.assert_rejected(self.get("/api/x", bearer(mint(aud=["x", "y"]))), "wrong audience")

    def test_rejected_tokens(self):
        now = int(time.time())
        good = mint()
        head, payload, sig = good.split(".")
        other_sig = mint(key=KEYS.rsa_other).split(".")[2]
        cases = [
            ("bad signature", head + "." + payload + "." + other_sig),
            ("bad signature", mint("HS256", key=b"another secret of at least 32 bytes!")),
            ("bad signature", mint("ES256", kid="ec256", key=ec.generate_private_key(
                ec.SECP256R1()))),
            ("token expired", mint(exp=now - 3600)),
            ("token not yet valid", mint(nbf=now + 3600)),
            ("wrong issuer", mint(iss="https://evil.example.test")),
            ("wrong issuer", mint(iss=None)),
            ("wrong audience", mint(aud="somebody-else")),
            ("unsupported algorithm", jwt.encode(claims(), None, algorithm="none")),
            ("unsupported algorithm", hs256_with_secret(
                HMAC_SECRET, {"alg": "HS1", "typ": "JWT"}, claims())),
            ("unknown key id", mint(kid="no-such-kid")),
            ("malformed token", "not-a-jwt"),
            ("malformed token", head + "." + payload),
            ("malformed token", head + ".!!!." + sig),
            ("malformed token", good + ".extra.parts"),
            ("malformed token", b64url(b"[1,2]") + "." + payload + "." + sig),
        ]
        for error, token in cases:
            if isinstance(token, bytes):
                token = token.decode()
            with self.subTest(error=error, token=token[:60]):
                self.assert_rejected(self.get("/api/x", bearer(token)), error)

    def test_clock_skew(self):
        now = int(time.time())
        # Expired 30s ago: inside the default 60s skew.
        self.assertEqual(self.get("/api/x", bearer(mint(exp=now - 30))).status, 200)
        self.assertEqual(self.get("/api/x", bearer(mint(nbf=now + 30))).status, 200)
        self.assert_rejected(self.get("/skew0/x", bearer(mint(exp=now - 30))), "token expired")
        self.assert_rejected(self.get("/skew0/x", bearer(mint(nbf=now + 30))),
                             "token not yet valid")
        # skew0 also has max_token_bytes: 1KiB.
        self.assert_rejected(self.get("/skew0/x", bearer(mint(pad="x" * 1024))),
                             "malformed token")

    def test_key_confusion_hmac_token_against_rsa_keys(self):
        # The classic attack: HS256 with the RSA public key (PEM) as the HMAC secret.
        pem = KEYS.rsa_pem()
        for header in ({"alg": "HS256", "typ": "JWT"},
                       {"alg": "HS256", "typ": "JWT", "kid": "rsa1"}):
            token = hs256_with_secret(pem, header, claims())
            with self.subTest(header=header):
                self.assert_rejected(self.get("/rsa/x", bearer(token)), "unsupported algorithm")
        # The same RSA key's own tokens pass there.
        self.assertEqual(self.get("/rsa/x", bearer(mint())).status, 200)
        # An ES256 token against RSA-only keys: no key of that family either.
        self.assert_rejected(self.get("/rsa/x", bearer(mint("ES256", kid=None))),
                             "unsupported algorithm")

    def test_missing_token_gets_the_realm_challenge(self):
        for headers in ([], [("Authorization", "Basic dXNlcjpwdw==")],
                        [("Authorization", "Bearer ")]):
            with self.subTest(headers=headers):
                r = self.get("/api/x", headers)
                self.assertEqual(r.status, 401, r)
                self.assertEqual(r.header("www-authenticate"), 'Bearer realm="turnpike"')
                body = r.json()
                self.assertEqual(body["error"], "missing token")
                self.assertEqual(body["request_id"], r.header("x-request-id"))

    def test_bearer_scheme_is_case_insensitive(self):
        r = self.get("/api/x", [("Authorization", "bearer   " + mint())])
        self.assertEqual(r.status, 200, r)

    def test_token_sources_and_forward_token_false(self):
        token = mint()
        # A header, with or without the Bearer prefix.
        for value in (token, "Bearer " + token):
            r = self.get("/strip/x", [("X-Token", value), ("X-Keep", "1")])
            self.assertEqual(r.status, 200, r)
            seen = r.json()["headers"]
            self.assertNotIn("x-token", seen)
            self.assertEqual(seen["x-keep"], "1")
        # The query: the parameter is removed, the others stay.
        r = self.get("/strip/x?a=1&access_token=%s&b=2" % token)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["query"], "a=1&b=2")
        # A cookie: removed, other cookies stay.
        r = self.get("/strip/x", [("Cookie", "theme=dark; session=%s; lang=en" % token)])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["headers"]["cookie"], "theme=dark; lang=en")
        r = self.get("/strip/x", [("Cookie", "session=" + token)])
        self.assertEqual(r.status, 200, r)
        self.assertNotIn("cookie", r.json()["headers"])
        # Authorization is not a source of this filter.
        r = self.get("/strip/x", bearer(token))
        self.assertEqual(r.status, 401, r)
        self.assertEqual(r.json()["error"], "missing token")
        # The first source found wins: a bad header token is not rescued by a good cookie.
        r = self.get("/strip/x", [("X-Token", mint(exp=int(time.time()) - 3600)),
                                  ("Cookie", "session=" + token)])
        self.assert_rejected(r, "token expired")

    def test_optional_mode(self):
        r = self.get("/opt/x")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["headers"].get("x-consumer", ""), "")
        r = self.get("/opt/x", bearer(mint()))
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["headers"]["x-consumer"], "u42@example.test")
        # A token that is there must still be good.
        self.assert_rejected(self.get("/opt/x", bearer(mint(exp=int(time.time()) - 3600))),
                             "token expired")


class JwtFileRotationTest(JwtCase):
    def test_rotating_the_jwks_file_reloads_the_keys(self):
        s = self.stack
        echo = s.echo("up")
        k1 = ec.generate_private_key(ec.SECP256R1())
        k2 = ec.generate_private_key(ec.SECP256R1())
        path = s.write("jwks.json", json.dumps({"keys": [jwk_of(k1.public_key(), "k1")]}))
        port, admin = h.free_port(), h.free_port()
        cfg = h.config(admin, [h.listener("main", port)], [h.cluster("up", echo)],
                       [{"name": "api", "match": {"path_prefix": "/"}, "filters": ["auth"],
                         "backend": "up"}],
                       filters={"auth": {"type": "jwt", "jwks": {"file": "jwks.json"},
                                         "issuer": ISSUER}},
                       reload={"watch": True, "debounce": "50ms"})
        tp = s.turnpike(cfg)
        t1 = mint("ES256", kid="k1", key=k1)
        t2 = mint("ES256", kid="k2", key=k2)
        self.assertEqual(tp.get("/x", headers=bearer(t1)).status, 200)
        self.assert_rejected(tp.get("/x", headers=bearer(t2)), "unknown key id")

        def generation():
            return json.loads(tp.admin("GET", "/config/status").body)["generation"]

        gen = generation()
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(json.dumps({"keys": [jwk_of(k2.public_key(), "k2")]}))
        os.replace(tmp, path)
        h.wait_for(lambda: generation() > gen, h.scaled(10), what="a reload after the JWKS change")
        self.assertEqual(tp.get("/x", headers=bearer(t2)).status, 200)
        # The old key is gone, and so is the cached verification of its token.
        self.assert_rejected(tp.get("/x", headers=bearer(t1)), "unknown key id")

        # A broken JWKS file is a rejected reload: the running keys keep working.
        with open(tmp, "w") as f:
            f.write("{not json")
        os.replace(tmp, path)
        h.wait_for(lambda: json.loads(tp.admin("GET", "/config/status").body)
                   ["last_reload"]["result"] == "rejected", h.scaled(10),
                   what="the broken JWKS rejected")
        self.assertEqual(tp.get("/x", headers=bearer(t2)).status, 200)


class Idp:
    """A JWKS endpoint on 127.0.0.1 in a thread, counting its hits."""

    def __init__(self, jwks, port=0, cache_control=None):
        self.jwks = jwks
        self.hits = 0
        self.status = 200
        self.cache_control = cache_control
        self.lock = threading.Lock()
        idp = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                with idp.lock:
                    idp.hits += 1
                    body = json.dumps(idp.jwks).encode()
                    status = idp.status
                self.close_connection = True  # down means down: no pooled connection lives on
                self.send_response(status)
                self.send_header("Connection", "close")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                if idp.cache_control:
                    self.send_header("Cache-Control", idp.cache_control)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def addr(self):
        return "127.0.0.1:%d" % self.port

    def count(self):
        with self.lock:
            return self.hits

    def set(self, jwks):
        with self.lock:
            self.jwks = jwks

    def stop(self):
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.thread.join(5)
            self.server = None


class JwtRemoteKeysTest(JwtCase):
    def setUp(self):
        super().setUp()
        self.idps = []

    def tearDown(self):
        for idp in self.idps:
            idp.stop()
        super().tearDown()

    def start(self, idp_addr, workers=2, **jwks):
        s = self.stack
        echo = s.echo("up")
        self.port, self.admin = h.free_port(), h.free_port()
        jwks_cfg = {"cluster": "idp", "path": "/keys/jwks.json", "timeout": "1s"}
        jwks_cfg.update(jwks)
        self.filters = {"auth": {"type": "jwt", "jwks": jwks_cfg, "issuer": ISSUER,
                                 "forward_claims": {"sub": "x-user-id"}}}
        self.clusters = [h.cluster("up", echo), h.cluster("idp", idp_addr)]
        cfg = h.config(self.admin, [h.listener("main", self.port)], self.clusters,
                       [{"name": "api", "match": {"path_prefix": "/"}, "filters": ["auth"],
                         "backend": "up"}],
                       filters=self.filters, workers=workers, reload={"watch": False})
        self.tp = s.turnpike(cfg)
        return self.tp

    def idp(self, *keys, **kw):
        idp = Idp({"keys": [jwk_of(k.public_key(), kid) for kid, k in keys]}, **kw)
        self.idps.append(idp)
        return idp

    def get(self, token):
        return self.tp.get("/x", headers=bearer(token))

    def test_instances_with_one_jwks_source_share_its_cache(self):
        k1 = ec.generate_private_key(ec.SECP256R1())
        idp = self.idp(("k1", k1))
        s = self.stack
        echo = s.echo("up")
        port, admin = h.free_port(), h.free_port()
        jwks = {"cluster": "idp", "path": "/keys/jwks.json", "timeout": "1s",
                "min_refresh_interval": "1h", "refresh_interval": "2h"}
        filters = {"a": {"type": "jwt", "jwks": jwks, "issuer": ISSUER},
                   "b": {"type": "jwt", "jwks": dict(jwks), "issuer": ISSUER,
                         "realm": "other"}}
        routes = [{"name": n, "match": {"path_prefix": "/" + n}, "filters": [n],
                   "backend": "up"} for n in ("a", "b")]
        self.tp = s.turnpike(h.config(admin, [h.listener("main", port)],
                                      [h.cluster("up", echo), h.cluster("idp", idp.addr)],
                                      routes, filters=filters, workers=1))
        t = mint("ES256", kid="k1", key=k1)
        self.assertEqual(self.tp.get("/a", headers=bearer(t)).status, 200)
        self.assertEqual(self.tp.get("/b", headers=bearer(t)).status, 200)
        self.assertEqual(idp.count(), 1)  # b used the keys a's request fetched
        # A forged kid on the other instance: within min_refresh_interval of the fetch, no
        # new one.
        r = self.tp.get("/b", headers=bearer(mint("ES256", kid="forged", key=k1)))
        self.assertEqual(r.status, 401, r)
        self.assertEqual(idp.count(), 1)

    def test_fetch_rotation_on_unknown_kid_and_forged_kid_burst(self):
        k1 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        k2 = ec.generate_private_key(ec.SECP384R1())
        idp = self.idp(("k1", k1))
        self.start(idp.addr, min_refresh_interval="2s", refresh_interval="1h")
        self.assertEqual(idp.count(), 0)  # fetched on demand
        t1 = mint("RS256", kid="k1", key=k1)
        # Requests arriving before the first fetch ends wait for it (several at once).
        results = [None] * 4

        def one(i):
            results[i] = self.get(t1)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(15)
        for r in results:
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json()["headers"]["x-user-id"], "user-42")
        self.assertEqual(idp.count(), 1)
        for _ in range(10):
            self.assertEqual(self.get(t1).status, 200)
        self.assertEqual(idp.count(), 1)
        first_fetch = time.monotonic()

        # Rotation: the IdP publishes k2; a token with kid k2 makes the gateway refetch.
        idp.set({"keys": [jwk_of(k1.public_key(), "k1"), jwk_of(k2.public_key(), "k2")]})
        time.sleep(max(0, 2.2 - (time.monotonic() - first_fetch)))
        t2 = mint("ES384", kid="k2", key=k2)
        r = self.get(t2)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(idp.count(), 2)

        # Forged kids in a burst, right after a fetch: no fetch at all.
        for i in range(30):
            self.assert_rejected(self.get(mint("RS256", kid="forged-%d" % i, key=k1)),
                                 "unknown key id")
        self.assertEqual(idp.count(), 2)
        # After min_refresh_interval: one burst, one fetch (from any of the workers).
        time.sleep(2.2)
        results = [None] * 30

        def forged(i):
            results[i] = self.get(mint("RS256", kid="forged-b%d" % i, key=k1))

        threads = [threading.Thread(target=forged, args=(i,)) for i in range(30)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(15)
        for r in results:
            self.assert_rejected(r, "unknown key id")
        self.assertEqual(idp.count(), 3)
        # The good tokens never stopped working.
        self.assertEqual(self.get(t1).status, 200)
        self.assertEqual(self.get(t2).status, 200)

        # A reload that keeps the JWKS source keeps the cache: no new fetch.
        cfg = h.config(self.admin, [h.listener("main", self.port)], self.clusters,
                       [{"name": "api2", "match": {"path_prefix": "/"}, "filters": ["auth"],
                         "backend": "up"}],
                       filters=self.filters, workers=2, reload={"watch": False})
        with open(self.tp.config_path, "w") as f:
            f.write(h.to_yaml(cfg) + "\n")
        r = self.tp.admin("POST", "/reload")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(json.loads(self.tp.admin("GET", "/config/status").body)["generation"], 2)
        self.assertEqual(self.get(t2).status, 200)
        self.assertEqual(idp.count(), 3)

    def test_idp_down_keeps_the_last_good_keys(self):
        k1 = ec.generate_private_key(ec.SECP256R1())
        idp = self.idp(("k1", k1))
        self.start(idp.addr, min_refresh_interval="1s", refresh_interval="1s")
        t1 = mint("ES256", kid="k1", key=k1)
        self.assertEqual(self.get(t1).status, 200)
        self.assertEqual(idp.count(), 1)
        # The refresh interval passes: the next request starts a background refresh.
        time.sleep(1.2)
        self.assertEqual(self.get(t1).status, 200)
        h.wait_for(lambda: idp.count() == 2, h.scaled(5), what="the periodic refresh")
        # The IdP answers errors, then goes away entirely.
        idp.status = 500
        time.sleep(1.2)
        self.assertEqual(self.get(t1).status, 200)
        h.wait_for(lambda: idp.count() == 3, h.scaled(5), what="a failed refresh")
        idp.stop()
        for _ in range(3):
            time.sleep(1.1)
            self.assertEqual(self.get(t1).status, 200)
            self.assertEqual(self.get(mint("ES256", kid="k1", key=k1, sub="fresh")).status, 200)
        self.assert_rejected(self.get(mint("ES256", kid="other", key=k1)), "unknown key id")
        log = self.tp.proc.stdout() + self.tp.proc.stderr()
        self.assertIn("jwt: JWKS fetch from cluster 'idp' /keys/jwks.json failed: status 500; "
                      "keeping the last good keys", log)

    def test_no_keys_at_all_is_503_within_the_timeout(self):
        # Nothing listens on the IdP's port.
        self.start("127.0.0.1:%d" % h.free_port(), timeout="500ms")
        start = time.monotonic()
        r = self.get(mint())
        took = time.monotonic() - start
        self.assertEqual(r.status, 503, r)
        self.assertEqual(r.json()["error"], "jwks unavailable")
        self.assertEqual(r.json()["request_id"], r.header("x-request-id"))
        self.assertLess(took, h.scaled(3))
        # A missing token is still a 401 (no keys needed to say so).
        self.assertEqual(self.tp.get("/x").status, 401)

    def test_slow_idp_bounded_by_the_timeout(self):
        # An IdP that accepts and never answers.
        import socket
        lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(16)
        try:
            self.start("127.0.0.1:%d" % lsock.getsockname()[1], timeout="700ms")
            start = time.monotonic()
            r = self.get(mint())
            took = time.monotonic() - start
            self.assertEqual(r.status, 503, r)
            self.assertGreater(took, 0.5)
            self.assertLess(took, h.scaled(3))
        finally:
            lsock.close()


BAD = """\
admin: {{listen: "127.0.0.1:{admin}"}}
listeners:
  - {{name: main, listen: "127.0.0.1:{port}"}}
clusters:
  - {{name: up, endpoints: ["127.0.0.1:9"]}}
routes:
  - {{name: r, match: {{path_prefix: /}}, filters: [a], backend: up}}
filters:
  a: {{type: jwt, jwks: {{file: jwks.json}}, issuers: x}}
  b: {{type: jwt, jwks: {{file: notjson.json}}}}
  c: {{type: jwt, jwks: {{file: enc-only.json}}, issuer: x}}
  d: {{type: jwt, secret_file: short.key, issuer: x}}
  e: {{type: jwt, jwks: {{cluster: nope}}, issuer: x}}
  f: {{type: jwt, jwks: {{file: jwks.json}}, issuer: {{a: b}}}}
  g: {{type: jwt, jwks: {{file: jwks.json}}, issuer: x, algorithms: [RS256, none]}}
  h: {{type: jwt, issuer: x}}
  i: {{type: jwt, jwks: {{file: jwks.json, cluster: up}}, issuer: x}}
  j: {{type: jwt, jwks: {{file: missing.json}}, issuer: x}}
"""


class JwtConfigErrorsTest(h.TurnpikeCase):
    def test_errors_have_file_line_column(self):
        s = self.stack
        s.write("jwks.json", json.dumps({"keys": [jwk_of(KEYS.rsa.public_key(), "rsa1")]}))
        s.write("notjson.json", "{\"keys\": [")
        s.write("enc-only.json", json.dumps(
            {"keys": [dict(jwk_of(KEYS.rsa.public_key(), "e1"), use="enc")]}))
        s.write("short.key", "too short")
        expected = [
            (9, 43, "filters.a: unknown key 'issuers' (did you mean 'issuer'?)"),
            (10, 31, "filters.b.jwks.file: 'notjson.json': not valid JSON"),
            (11, 31, "filters.c.jwks.file: 'enc-only.json' has no usable signature key; "
                     "keys[0] (kid 'e1') skipped: \"use\" is not \"sig\""),
            (12, 31, "filters.d.secret_file: 'short.key' holds 9 bytes; an HMAC secret "
                     "needs at least 32"),
            (13, 34, "filters.e.jwks.cluster: unknown cluster 'nope'"),
            (14, 51, "filters.f.issuer: expected a list, got a map"),
            (15, 74, "filters.g.algorithms[1]: 'none' (unsigned tokens) is never accepted"),
            (16, 6, "filters.h: set jwks (a file or a cluster) or secret_file"),
            (17, 24, "filters.i.jwks: set exactly one of file (a JWKS file) or cluster"),
            (18, 31, "filters.j.jwks.file: cannot read"),
            # The filter without issuer and audiences is warned about.
            (10, 6, "warning: filters.b: neither issuer nor audiences is set"),
        ]
        self.assertConfigErrors(BAD, expected, count=10)

if __name__ == "__main__":
    unittest.main()
