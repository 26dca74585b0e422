"""Authentication and authorization filters as a client sees them: api_key (header, query
parameter, plain and sha256: keys, the key never reaching the upstream, the consumer for later
filters), basic_auth (bcrypt $2b$/$2y$ and SHA-512-crypt hashes, wrong password, unknown user,
malformed headers, the verification cache), authz (groups, consumers, CIDR ranges, deny
ranges, scopes and claims without a JWT), the JSON body and WWW-Authenticate of every refusal,
and config errors with file:line:column.
"""

import base64
import hashlib
import json
import os
import sys
import threading
import time
import unittest
import warnings

import bcrypt

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402

ACME_KEY = "acme-key-0001-secret"
BETA_KEY = "beta-key-0002-secret"  # configured as its sha256: digest
GAMMA_KEY = "gamma+key/0003=="  # base64-ish: '+', '/' and '=' in a query parameter
DELTA_KEY = "delta-key-0004-secret"

ACME_PW = "acme-pass"
BETA_PW = "beta:pass with spaces"  # a colon in the password: only the first one splits
GAMMA_PW = "gamma-p\u00e4ss"


def bcrypt_hash(pw, prefix=b"$2b$"):
    hashed = bcrypt.hashpw(pw.encode(), bcrypt.gensalt(rounds=4))
    return (prefix + hashed[4:]).decode()


def sha512_hash(pw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return crypt.crypt(pw, crypt.mksalt(crypt.METHOD_SHA512))


def basic(user, pw):
    return "Basic " + base64.b64encode(("%s:%s" % (user, pw)).encode()).decode()


assert_json_error = h.assert_json_error


class AuthTest(h.TurnpikeCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        s = cls.cstack
        cls.echo = s.echo("up")
        cls.port, cls.h2port, admin = h.free_port(), h.free_port(), h.free_port()
        consumers = [
            {"name": "acme", "groups": ["gold"], "api_keys": [ACME_KEY],
             "basic_auth": {"password_hash": bcrypt_hash(ACME_PW)}},
            {"name": "beta", "groups": ["silver"],
             "api_keys": ["sha256:" + hashlib.sha256(BETA_KEY.encode()).hexdigest().upper()],
             "basic_auth": {"password_hash": bcrypt_hash(BETA_PW, b"$2y$")}},
            {"name": "gamma", "groups": ["gold", "ops"], "api_keys": [GAMMA_KEY],
             "basic_auth": {"password_hash": sha512_hash(GAMMA_PW)}},
            {"name": "delta", "api_keys": [DELTA_KEY]},
        ]
        filters = {
            "key": {"type": "api_key"},
            "key-q": {"type": "api_key", "header": "x-api-key", "query": "api_key"},
            "key-q-only": {"type": "api_key", "query": "key"},
            "key-acme": {"type": "api_key", "header": "authorization-key",
                         "consumers": ["acme"]},
            "basic": {"type": "basic_auth", "realm": "staff"},
            "basic-fwd": {"type": "basic_auth", "forward_credentials": True,
                          "consumers": ["acme", "gamma"]},
            "tag": {"type": "headers",
                    "request": {"set": {"x-consumer": "${consumer}"}}},
            "gold": {"type": "authz", "groups": ["gold"]},
            "local": {"type": "authz", "cidrs": ["127.0.0.1/32"]},
            "ten": {"type": "authz", "cidrs": ["10.0.0.0/8"]},
            "deny-local": {"type": "authz", "deny_cidrs": ["127.0.0.0/8"],
                           "cidrs": ["0.0.0.0/0"]},
            "only-beta": {"type": "authz", "consumers": ["beta"]},
            "gold-local": {"type": "authz", "groups": ["gold", "ops"],
                           "cidrs": ["127.0.0.1", "::1"]},
            "scope": {"type": "authz", "scopes": ["orders:read"]},
            "claim": {"type": "authz", "claims": {"role": ["admin", "ops"]}},
        }

        def route(name, chain):
            return {"name": name, "match": {"path_prefix": "/" + name}, "filters": chain,
                    "backend": "up"}

        routes = [
            route("key", ["key", "tag"]),
            route("keyq", ["key-q", "tag"]),
            route("qonly", ["key-q-only", "tag"]),
            route("keyacme", ["key-acme", "tag"]),
            route("basic", ["basic", "tag"]),
            route("basicfwd", ["basic-fwd", "tag"]),
            route("gold", ["key", "gold", "tag"]),
            route("goldbasic", ["basic", "gold", "tag"]),
            route("anongold", ["gold"]),
            route("local", ["local"]),
            route("ten", ["ten"]),
            route("denylocal", ["deny-local"]),
            route("onlybeta", ["key", "only-beta", "tag"]),
            route("goldlocal", ["key", "gold-local", "tag"]),
            route("scope", ["key", "scope"]),
            route("claim", ["key", "claim"]),
            {"name": "plain", "match": {"path_prefix": "/plain"}, "backend": "up"},
        ]
        lst = h.listener("public", cls.port)
        h2 = h.listener("h2", cls.h2port)
        h2["protocols"] = ["http1", "h2c"]
        cls.access_log = s.path("access.log")
        cfg = h.config(admin, [lst, h2], [h.cluster("up", cls.echo)], routes,
                       consumers=consumers, filters=filters, access_log=cls.access_log)
        cls.tp = s.turnpike(cfg)

    def get(self, path, headers=(), **kw):
        return self.tp.request(kw.pop("method", "GET"), path, headers=list(headers), **kw)

    # ---- api_key ----------------------------------------------------------------------------

    def test_key_in_header_sets_consumer_and_is_stripped(self):
        r = self.get("/key/a?x=1", headers=[("X-Api-Key", ACME_KEY), ("X-Other", "kept")])
        self.assertEqual(r.status, 200, r)
        seen = r.json()
        self.assertNotIn("x-api-key", seen["headers"])
        self.assertEqual(seen["headers"]["x-other"], "kept")
        self.assertEqual(seen["headers"]["x-consumer"], "acme")
        self.assertEqual(seen["query"], "x=1")

    def test_access_log_names_the_consumer(self):
        self.assertEqual(self.get("/key", headers=[("x-api-key", BETA_KEY),
                                                   ("X-Request-Id", "who-1")]).status, 200)
        self.assertEqual(self.get("/key", headers=[("x-api-key", "nope"),
                                                   ("X-Request-Id", "who-2")]).status, 401)

        def entries():
            try:
                with open(self.access_log) as f:
                    lines = [json.loads(line) for line in f if line.strip()]
            except FileNotFoundError:
                return None
            got = {e["request_id"]: e for e in lines if e["request_id"] in ("who-1", "who-2")}
            return got if len(got) == 2 else None

        got = h.wait_for(entries, h.scaled(5), what="two access log lines")
        self.assertEqual(got["who-1"]["consumer"], "beta")
        self.assertIsNone(got["who-2"]["consumer"])

    def test_sha256_stored_key(self):
        r = self.get("/key", headers=[("x-api-key", BETA_KEY)])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["headers"]["x-consumer"], "beta")

    def test_missing_and_wrong_key(self):
        r = self.get("/key")
        assert_json_error(self, r, 401, "missing API key", 'ApiKey realm="turnpike"')
        r = self.get("/key", headers=[("x-api-key", "")])
        assert_json_error(self, r, 401, "missing API key", 'ApiKey realm="turnpike"')
        r = self.get("/key", headers=[("x-api-key", ACME_KEY + "x")])
        assert_json_error(self, r, 401, "invalid API key", 'ApiKey realm="turnpike"')
        # Only the header is read here: a key in the query is not a key.
        r = self.get("/key?api_key=" + ACME_KEY)
        assert_json_error(self, r, 401, "missing API key")
        # The digest is not the key.
        r = self.get("/key", headers=[("x-api-key",
                                       hashlib.sha256(BETA_KEY.encode()).hexdigest())])
        assert_json_error(self, r, 401, "invalid API key")

    def test_several_keys_are_refused(self):
        r = self.get("/key", headers=[("x-api-key", ACME_KEY), ("x-api-key", "other-key-1")])
        assert_json_error(self, r, 401, "several API keys", 'ApiKey realm="turnpike"')
        r = self.get("/qonly?key=%s&key=%s" % (ACME_KEY, ACME_KEY))
        assert_json_error(self, r, 401, "several API keys")

    def test_key_in_query_is_removed_and_the_rest_kept_in_order(self):
        r = self.get("/keyq/p?b=2&api_key=%s&a=1&empty=&z=%%20x" % DELTA_KEY)
        self.assertEqual(r.status, 200, r)
        seen = r.json()
        self.assertEqual(seen["query"], "b=2&a=1&empty=&z=%20x")
        self.assertEqual(seen["path"], "/keyq/p")
        self.assertEqual(seen["headers"]["x-consumer"], "delta")
        # Only parameter: no '?' left at all.
        r = self.get("/keyq/p?api_key=" + DELTA_KEY)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["query"], "")
        # The header is read first; both are removed.
        r = self.get("/keyq?api_key=wrong-key-123&c=3", headers=[("x-api-key", ACME_KEY)])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["query"], "c=3")
        self.assertEqual(r.json()["headers"]["x-consumer"], "acme")
        self.assertNotIn("x-api-key", r.json()["headers"])
        # A parameter that merely starts with the name is another parameter.
        r = self.get("/keyq?api_key_x=%s" % DELTA_KEY)
        assert_json_error(self, r, 401, "missing API key")

    def test_query_key_is_percent_decoded_plus_kept(self):
        # '+' stays '+', %2F decodes to '/', %3D%3D to '=='.
        r = self.get("/qonly?first=1&key=gamma+key%2F0003%3D%3D")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["headers"]["x-consumer"], "gamma")
        self.assertEqual(r.json()["query"], "first=1")
        r = self.get("/qonly?key=")
        assert_json_error(self, r, 401, "missing API key")
        # A header with that name means nothing to a query-only instance.
        r = self.get("/qonly", headers=[("x-api-key", ACME_KEY)])
        assert_json_error(self, r, 401, "missing API key")

    def test_instance_restricted_to_consumers(self):
        r = self.get("/keyacme", headers=[("authorization-key", ACME_KEY)])
        self.assertEqual(r.status, 200, r)
        self.assertNotIn("authorization-key", r.json()["headers"])
        r = self.get("/keyacme", headers=[("authorization-key", BETA_KEY)])
        assert_json_error(self, r, 401, "invalid API key")

    def test_api_key_over_http2(self):
        def h2get(path, *headers):
            args = ["--http2-prior-knowledge", "-i"]
            for hdr in headers:
                args += ["-H", hdr]
            p = h.curl(*(args + ["http://127.0.0.1:%d%s" % (self.h2port, path)]))
            head, _, body = p.stdout.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            fields = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
            return lines[0], fields, json.loads(body)

        status, _, seen = h2get("/key/h2?q=1", "x-api-key: " + GAMMA_KEY)
        self.assertTrue(status.startswith("HTTP/2 200"), status)
        self.assertEqual(seen["headers"]["x-consumer"], "gamma")
        self.assertNotIn("x-api-key", seen["headers"])
        self.assertEqual(seen["query"], "q=1")
        status, fields, body = h2get("/key")
        self.assertTrue(status.startswith("HTTP/2 401"), status)
        self.assertEqual(fields.get("www-authenticate"), 'ApiKey realm="turnpike"', fields)
        self.assertEqual(body["error"], "missing API key")
        self.assertEqual(body["request_id"], fields.get("x-request-id"))

    # ---- basic_auth -------------------------------------------------------------------------

    def test_basic_bcrypt_2b_2y_and_sha512(self):
        for user, pw in (("acme", ACME_PW), ("beta", BETA_PW), ("gamma", GAMMA_PW)):
            r = self.get("/basic/x", headers=[("Authorization", basic(user, pw))])
            self.assertEqual(r.status, 200, (user, r))
            seen = r.json()["headers"]
            self.assertEqual(seen["x-consumer"], user)
            self.assertNotIn("authorization", seen)  # not forwarded by default

    def test_basic_refusals(self):
        challenge = 'Basic realm="staff", charset="UTF-8"'
        cases = [
            ([], "missing credentials"),
            ([("Authorization", "Bearer abc.def.ghi")], "missing credentials"),
            ([("Authorization", basic("acme", "wrong"))], "invalid credentials"),
            ([("Authorization", basic("acme", ACME_PW + " "))], "invalid credentials"),
            ([("Authorization", basic("nobody", ACME_PW))], "invalid credentials"),
            ([("Authorization", basic("delta", "x"))], "invalid credentials"),  # no hash
            ([("Authorization", basic("ACME", ACME_PW))], "invalid credentials"),
            ([("Authorization", "Basic !!!notbase64")], "malformed credentials"),
            ([("Authorization", "Basic " + base64.b64encode(b"no-colon").decode())],
             "malformed credentials"),
            ([("Authorization", "Basic")], "missing credentials"),
            ([("Authorization", "Basic " + "QUFB" * 2000)], "malformed credentials"),
            ([("Authorization", basic("acme", ACME_PW)), ("Authorization", basic("acme", ACME_PW))],
             "malformed credentials"),
        ]
        for headers, error in cases:
            r = self.get("/basic", headers=headers)
            assert_json_error(self, r, 401, error, challenge)

    def test_basic_scheme_is_case_insensitive_and_padding_optional(self):
        enc = base64.b64encode(("acme:" + ACME_PW).encode()).decode().rstrip("=")
        r = self.get("/basic", headers=[("Authorization", "bAsIc   " + enc)])
        self.assertEqual(r.status, 200, r)

    def test_basic_forward_credentials_and_consumer_list(self):
        cred = basic("gamma", GAMMA_PW)
        r = self.get("/basicfwd", headers=[("Authorization", cred)])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["headers"]["authorization"], cred)
        r = self.get("/basicfwd", headers=[("Authorization", basic("beta", BETA_PW))])
        assert_json_error(self, r, 401, "invalid credentials",
                          'Basic realm="turnpike", charset="UTF-8"')

    def test_good_password_then_wrong_one(self):
        # A cached success must not let a wrong password for the same user through.
        cred = basic("acme", ACME_PW)
        for _ in range(3):
            self.assertEqual(self.get("/basic", headers=[("Authorization", cred)]).status, 200)
        r = self.get("/basic", headers=[("Authorization", basic("acme", "nope"))])
        assert_json_error(self, r, 401, "invalid credentials")

    # ---- authz ------------------------------------------------------------------------------

    def test_groups(self):
        r = self.get("/gold", headers=[("x-api-key", ACME_KEY)])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["headers"]["x-consumer"], "acme")
        r = self.get("/gold", headers=[("x-api-key", BETA_KEY)])
        assert_json_error(self, r, 403, "consumer not in an allowed group")
        r = self.get("/gold", headers=[("x-api-key", DELTA_KEY)])  # no groups at all
        assert_json_error(self, r, 403, "consumer not in an allowed group")
        # Authentication runs first: no key is a 401, not a 403.
        r = self.get("/gold")
        assert_json_error(self, r, 401, "missing API key", 'ApiKey realm="turnpike"')
        # The same rule after basic_auth.
        r = self.get("/goldbasic", headers=[("Authorization", basic("gamma", GAMMA_PW))])
        self.assertEqual(r.status, 200, r)
        r = self.get("/goldbasic", headers=[("Authorization", basic("beta", BETA_PW))])
        assert_json_error(self, r, 403, "consumer not in an allowed group")

    def test_no_authentication_before_authz(self):
        r = self.get("/anongold")
        assert_json_error(self, r, 403, "not authenticated")

    def test_consumers(self):
        r = self.get("/onlybeta", headers=[("x-api-key", BETA_KEY)])
        self.assertEqual(r.status, 200, r)
        r = self.get("/onlybeta", headers=[("x-api-key", ACME_KEY)])
        assert_json_error(self, r, 403, "consumer not allowed")

    def test_cidrs(self):
        self.assertEqual(self.get("/local").status, 200)
        assert_json_error(self, self.get("/ten"), 403, "address not allowed")
        assert_json_error(self, self.get("/denylocal"), 403, "address denied")

    def test_all_conditions_must_hold(self):
        r = self.get("/goldlocal", headers=[("x-api-key", GAMMA_KEY)])
        self.assertEqual(r.status, 200, r)
        r = self.get("/goldlocal", headers=[("x-api-key", BETA_KEY)])
        assert_json_error(self, r, 403, "consumer not in an allowed group")

    def test_scopes_and_claims_without_a_jwt(self):
        # A consumer authenticated by key has no scopes or claims: refused, naming what is
        # missing. (With a JWT, covered by the jwt filter's tests.)
        r = self.get("/scope", headers=[("x-api-key", ACME_KEY)])
        assert_json_error(self, r, 403, "missing scope 'orders:read'")
        r = self.get("/claim", headers=[("x-api-key", ACME_KEY)])
        assert_json_error(self, r, 403, "missing claim 'role'")

    def test_untouched_route(self):
        r = self.get("/plain", headers=[("x-api-key", ACME_KEY), ("Authorization", "Basic x")])
        self.assertEqual(r.status, 200, r)
        seen = r.json()["headers"]
        self.assertEqual(seen["x-api-key"], ACME_KEY)
        self.assertEqual(seen["authorization"], "Basic x")


class BasicAuthCostTest(h.TurnpikeCase):
    """At bcrypt cost 10, a verification takes tens of milliseconds; the per-worker cache
    answers repeats without it, and an unknown user costs as much as a wrong password."""

    def test_cache_and_unknown_user_timing(self):
        s = self.stack
        echo = s.echo("up")
        port, admin = h.free_port(), h.free_port()
        consumers = [{"name": "slow", "basic_auth": {
            "password_hash": bcrypt.hashpw(b"pw-slow", bcrypt.gensalt(rounds=10)).decode()}}]
        filters = {"basic": {"type": "basic_auth", "cache": {"max_entries": 16, "ttl": "1m"}}}
        routes = [{"name": "r", "match": {"path_prefix": "/"}, "filters": ["basic"],
                   "backend": "up"}]
        tp = s.turnpike(h.config(admin, [h.listener("l", port)], [h.cluster("up", echo)],
                                 routes, consumers=consumers, filters=filters, workers=1))

        def timed(cred, status, n=3):
            best = None
            for _ in range(n):
                t0 = time.monotonic()
                r = tp.get("/", headers=[("Authorization", cred)])
                dt = time.monotonic() - t0
                self.assertEqual(r.status, status, r)
                best = dt if best is None else min(best, dt)
            return best

        wrong = timed(basic("slow", "bad"), 401)
        unknown = timed(basic("ghost", "bad"), 401)
        t0 = time.monotonic()
        self.assertEqual(tp.get("/", headers=[("Authorization", basic("slow", "pw-slow"))])
                         .status, 200)
        first = time.monotonic() - t0
        cached = timed(basic("slow", "pw-slow"), 200, n=5)
        # bcrypt cost 10 is >= ~20 ms on any machine this runs on; a cached hit is far less.
        self.assertGreater(wrong, 0.015, "a wrong password should cost a bcrypt verification")
        self.assertGreater(unknown, wrong * 0.5, "unknown users must cost a verification too")
        self.assertGreater(first, 0.015)
        self.assertLess(cached, wrong / (2 if h.SANITIZE else 3), (cached, wrong))

    def test_password_checks_do_not_stall_the_worker(self):
        # One worker; a handful of bcrypt checks at cost 12 (a few hundred ms each) are in
        # flight. A request on another route of the same worker must not wait behind them:
        # it is answered while they are still running.
        s = self.stack
        echo = s.echo("up")
        port, admin = h.free_port(), h.free_port()
        consumers = [{"name": "slow", "basic_auth": {
            "password_hash": bcrypt.hashpw(b"pw-slow", bcrypt.gensalt(rounds=12)).decode()}}]
        filters = {"basic": {"type": "basic_auth"}}
        routes = [{"name": "auth", "match": {"path_prefix": "/auth"}, "filters": ["basic"],
                   "backend": "up"},
                  {"name": "open", "match": {"path_prefix": "/open"}, "backend": "up"}]
        tp = s.turnpike(h.config(admin, [h.listener("l", port)], [h.cluster("up", echo)],
                                 routes, consumers=consumers, filters=filters, workers=1))
        done = []

        def login(i):
            r = tp.get("/auth", headers=[("Authorization", basic("slow", f"bad-{i}"))],
                       timeout=60)
            done.append((time.monotonic(), r.status))

        threads = [threading.Thread(target=login, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.05)
        r = tp.get("/open")
        open_done = time.monotonic()
        self.assertEqual(r.status, 200, r)
        for t in threads:
            t.join(90)
        self.assertEqual(sorted(st for _, st in done), [401] * 4)
        # /open was answered before any check had finished.
        self.assertLess(open_done, min(t for t, _ in done), "the worker waited for bcrypt")


BAD = """\
admin: {{listen: "127.0.0.1:{admin}"}}
listeners:
  - name: l
    listen: "127.0.0.1:{port}"
clusters:
  - name: up
    endpoints: ["127.0.0.1:9"]
consumers:
  - name: acme
    groups: [gold]
    api_keys: ["acme-key-0001"]
filters:
  k1: {{type: api_key, heder: x-key}}
  k2: {{type: api_key, consumers: [acme, nobody]}}
  b1: {{type: basic_auth, realm: "a\\"b", cache: {{max_entries: -1}}}}
  z1: {{type: authz, cidrs: ["10.0.0.1/8"], groups: [gold]}}
  z2: {{type: authz, consumers: [acme, ghost]}}
  z3: {{type: authz}}
  z4: {{type: authz, claims: {{role: []}}, scope: [x]}}
routes:
  - match: {{path_prefix: /}}
    filters: [k1, k2, b1, z1, z2, z3, z4]
    backend: up
"""

EXPECTED_ERRORS = [
    (13, 23, "filters.k1: unknown key 'heder' (did you mean 'header'?)"),
    (14, 41, "filters.k2.consumers[1]: no consumer named 'nobody' (see consumers:)"),
    (15, 7, "filters.b1: no consumer has a basic_auth.password_hash, so nobody could pass"),
    (15, 33, "filters.b1.realm: the realm cannot contain '\"', '\\', CR, LF or NUL"),
    (15, 62, "filters.b1.cache.max_entries: must be between 0 and 1000000, got -1"),
    (16, 29, "filters.z1.cidrs[0]: '10.0.0.1/8' has bits set past the /8 prefix"),
    (17, 39, "filters.z2.consumers[1]: no consumer named 'ghost' (see consumers:)"),
    (18, 7, "filters.z3: set at least one of groups, scopes, claims, cidrs, deny_cidrs, "
            "consumers"),
    (19, 36, "filters.z4.claims.role: list at least one value"),
    (19, 41, "filters.z4: unknown key 'scope' (did you mean 'scopes'?)"),
]


class AuthConfigErrorsTest(h.TurnpikeCase):
    def test_errors_have_file_line_column(self):
        self.assertConfigErrors(BAD, EXPECTED_ERRORS, count=len(EXPECTED_ERRORS))

    def test_basic_auth_without_any_password_hash(self):
        text = BAD.split("filters:")[0] + (
            "filters:\n  b: {{type: basic_auth}}\nroutes:\n  - match: {{path_prefix: /}}\n"
            "    filters: [b]\n    backend: up\n")
        self.assertConfigErrors(
            text, [(13, 6, "filters.b: no consumer has a basic_auth.password_hash")])


if __name__ == "__main__":
    unittest.main()
