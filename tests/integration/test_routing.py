"""The routing table as a client sees it: which route answers which request, the actions
(proxy, weighted split, round robin, rewrite, redirect, respond), path normalization, 404 for
no route, and the headers Turnpike adds (X-Forwarded-*, X-Request-Id) or removes (hop-by-hop).
"""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


def respond(name, match, body, status=200):
    return {"name": name, "match": match, "respond": {"status": status, "body": body}}


class RoutingTest(h.TurnpikeCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        s = cls.cstack
        users, v1, v2 = s.echo("users"), s.echo("v1"), s.echo("v2")
        rr_a, rr_b = s.echo("rr-a"), s.echo("rr-b")
        routes = [
            respond("health", {"path": "/healthz"}, "ok"),
            respond("teapot", {"path": "/teapot"}, "short and stout", status=418),
            {"name": "moved", "match": {"path_prefix": "/old"},
             "redirect": {"status": 301, "location": "https://example.com/new"}},
            {"name": "temp", "match": {"path": "/temp"},
             "redirect": {"status": 307, "location": "https://example.com/temp"}},
            respond("users-delete", {"host": "api.example.com", "path_prefix": "/users",
                                     "methods": ["DELETE"]}, "no deletes", status=403),
            {"name": "users-v2", "match": {"host": "api.example.com", "path_prefix": "/users",
                                           "headers": {"x-version": "2"}}, "backend": "v2"},
            {"name": "users", "match": {"host": "api.example.com", "path_prefix": "/users",
                                        "methods": ["GET", "POST"]}, "backend": "users"},
            respond("wild", {"host": "*.example.com", "path_prefix": "/wild"}, "wild"),
            respond("exact", {"path": "/exact"}, "exact"),
            respond("api", {"path_prefix": "/api"}, "api"),
            respond("admin", {"path": "/admin"}, "admin"),
            respond("items", {"path_regex": "/items/[0-9]+"}, "item"),
            respond("hdr-exact", {"path": "/hdr", "headers": {"x-exact": "yes"}}, "hdr-exact"),
            respond("hdr-present", {"path": "/hdr", "headers": {"x-present": {"present": True}}},
                    "hdr-present"),
            respond("hdr-regex", {"path": "/hdr", "headers": {"x-re": {"regex": "v[0-9]+"}}},
                    "hdr-regex"),
            respond("query", {"path": "/q", "query": {"v": "2"}}, "q-v2"),
            respond("query-present", {"path": "/q", "query": {"debug": {"present": True}}},
                    "q-debug"),
            respond("first-a", {"path_prefix": "/first", "methods": ["GET"]}, "first-a"),
            respond("first-b", {"path_prefix": "/first"}, "first-b"),
            {"name": "split", "match": {"path_prefix": "/split"},
             "backends": [{"cluster": "v1", "weight": 75}, {"cluster": "v2", "weight": 25}]},
            {"name": "rr", "match": {"path_prefix": "/rr"}, "backend": "rr"},
            {"name": "legacy", "match": {"path_prefix": "/legacy"}, "backend": "users",
             "rewrite": {"path_prefix": "/v1/users"}},
            {"name": "proxy", "match": {"path_prefix": "/proxy"}, "backend": "users"},
        ]
        clusters = [h.cluster("users", users), h.cluster("v1", v1), h.cluster("v2", v2),
                    h.cluster("rr", rr_a, rr_b)]
        cfg = h.config(h.free_port(), [h.listener("public", h.free_port())], clusters, routes)
        cls.tp = s.turnpike(cfg)

    # helpers

    def get(self, path, host="localhost", method="GET", headers=(), body=b""):
        return self.tp.request(method, path, host=host, headers=list(headers), body=body)

    def assertServedBy(self, resp, body_text, msg=None):
        self.assertEqual((resp.status, resp.text()), (200, body_text),
                         msg or "expected route answering %r, got %r" % (body_text, resp))

    def assertNoRoute(self, resp):
        self.assertEqual(resp.status, 404, "expected no route, got %r" % (resp,))

    def assertUpstream(self, resp, name):
        self.assertEqual(resp.status, 200, repr(resp))
        self.assertEqual(resp.header("x-upstream-name"), name, repr(resp))
        return resp.json()

    # host

    def test_host_exact(self):
        echo = self.assertUpstream(self.get("/users/7", host="api.example.com"), "users")
        self.assertEqual(echo["path"], "/users/7")
        self.assertEqual(echo["method"], "GET")
        self.assertNoRoute(self.get("/users/7", host="other.example.com"))
        self.assertNoRoute(self.get("/users/7", host="api.example.com.evil.net"))

    def test_host_port_and_case_ignored(self):
        self.assertUpstream(self.get("/users/7", host="api.example.com:8080"), "users")
        self.assertUpstream(self.get("/users/7", host="API.Example.COM"), "users")

    def test_host_wildcard(self):
        self.assertServedBy(self.get("/wild", host="a.example.com"), "wild")
        self.assertServedBy(self.get("/wild/x", host="a.b.example.com"), "wild")
        self.assertServedBy(self.get("/wild", host="a.example.com:9999"), "wild")
        self.assertNoRoute(self.get("/wild", host="example.com"))
        self.assertNoRoute(self.get("/wild", host="badexample.com"))
        self.assertNoRoute(self.get("/wild", host="a.example.com.org"))

    # path

    def test_path_exact(self):
        self.assertServedBy(self.get("/exact"), "exact")
        for p in ("/exact/", "/exact/x", "/exactly", "/exac"):
            self.assertNoRoute(self.get(p))

    def test_path_prefix_segment_boundary(self):
        for p in ("/api", "/api/", "/api/x/y", "/api?x=1"):
            self.assertServedBy(self.get(p), "api", "path %s" % p)
        self.assertNoRoute(self.get("/apix"))
        self.assertNoRoute(self.get("/ap"))
        self.assertUpstream(self.get("/users", host="api.example.com"), "users")
        self.assertNoRoute(self.get("/usersx", host="api.example.com"))

    def test_path_regex_full_match(self):
        self.assertServedBy(self.get("/items/42"), "item")
        for p in ("/items/42/x", "/items/abc", "/items/", "/x/items/42"):
            self.assertNoRoute(self.get(p))

    # methods, headers, query

    def test_methods(self):
        echo = self.assertUpstream(self.get("/users/7", host="api.example.com", method="POST",
                                            body=b"{}"), "users")
        self.assertEqual(echo["method"], "POST")
        r = self.get("/users/7", host="api.example.com", method="DELETE")
        self.assertEqual((r.status, r.text()), (403, "no deletes"))
        self.assertNoRoute(self.get("/users/7", host="api.example.com", method="PUT"))

    def test_header_exact_present_regex(self):
        self.assertServedBy(self.get("/hdr", headers=[("X-Exact", "yes")]), "hdr-exact")
        self.assertServedBy(self.get("/hdr", headers=[("x-EXACT", "yes")]), "hdr-exact")
        self.assertNoRoute(self.get("/hdr", headers=[("X-Exact", "no")]))
        self.assertServedBy(self.get("/hdr", headers=[("X-Present", "anything")]), "hdr-present")
        self.assertServedBy(self.get("/hdr", headers=[("X-Re", "v12")]), "hdr-regex")
        self.assertNoRoute(self.get("/hdr", headers=[("X-Re", "v12x")]))
        self.assertNoRoute(self.get("/hdr", headers=[("X-Re", "xv1")]))
        self.assertNoRoute(self.get("/hdr"))
        self.assertUpstream(self.get("/users/7", host="api.example.com",
                                     headers=[("X-Version", "2")]), "v2")
        self.assertUpstream(self.get("/users/7", host="api.example.com",
                                     headers=[("X-Version", "3")]), "users")

    def test_query(self):
        self.assertServedBy(self.get("/q?v=2"), "q-v2")
        self.assertServedBy(self.get("/q?a=1&v=2"), "q-v2")
        self.assertServedBy(self.get("/q?debug=1"), "q-debug")
        for p in ("/q", "/q?v=3", "/q?v=22", "/q?vv=2"):
            self.assertNoRoute(self.get(p))

    def test_first_match_wins(self):
        self.assertServedBy(self.get("/first/x"), "first-a")
        r = self.get("/first/x", method="POST", body=b"x")
        self.assertServedBy(r, "first-b")
        # users-delete is declared before users, so it answers DELETE /users/... first.
        r = self.get("/users/1", host="api.example.com", method="DELETE")
        self.assertEqual(r.status, 403)

    # actions

    def test_respond(self):
        r = self.get("/healthz")
        self.assertEqual((r.status, r.body), (200, b"ok"))
        r = self.get("/teapot")
        self.assertEqual((r.status, r.body), (418, b"short and stout"))

    def test_redirect(self):
        r = self.get("/old/page")
        self.assertEqual(r.status, 301, repr(r))
        self.assertEqual(r.header("location"), "https://example.com/new")
        r = self.get("/temp")
        self.assertEqual(r.status, 307, repr(r))
        self.assertEqual(r.header("location"), "https://example.com/temp")

    def test_rewrite(self):
        echo = self.assertUpstream(self.get("/legacy/7?x=1"), "users")
        self.assertEqual(echo["path"], "/v1/users/7")
        self.assertEqual(echo["query"], "x=1")
        echo = self.assertUpstream(self.get("/legacy"), "users")
        self.assertEqual(echo["path"], "/v1/users")

    def test_no_route_is_404_json(self):
        r = self.get("/nothing/here")
        self.assertJsonError(r, 404)
        self.assertIn("application/json", r.header("content-type", ""))

    def test_weighted_split(self):
        n = 100 if h.SANITIZE else 400
        counts = {"v1": 0, "v2": 0}
        with self.tp.conn() as c:
            for i in range(n):
                r = c.request("GET", "/split/%d" % i)
                self.assertEqual(r.status, 200, repr(r))
                counts[r.header("x-upstream-name")] += 1
        # 75/25: the mean is 0.75n, sigma = sqrt(n * 0.75 * 0.25); allow about 5 sigma.
        sigma = (n * 0.75 * 0.25) ** 0.5
        self.assertLess(abs(counts["v1"] - 0.75 * n), 5 * sigma, counts)
        self.assertGreater(counts["v2"], 0, counts)

    def test_round_robin(self):
        # Load-balancer cursors are per worker; one connection stays on one worker.
        with self.tp.conn() as c:
            names = [c.request("GET", "/rr/%d" % i).header("x-upstream-name") for i in range(8)]
        self.assertEqual(set(names), {"rr-a", "rr-b"}, names)
        for a, b in zip(names, names[1:]):
            self.assertNotEqual(a, b, "round robin did not alternate: %s" % names)

    # normalization

    def test_normalized_dot_segments(self):
        # Raw, these start with /api (the earlier route); normalized they are /admin.
        self.assertServedBy(self.get("/api/../admin"), "admin")
        self.assertServedBy(self.get("/api/%2e%2e/admin"), "admin")
        self.assertServedBy(self.get("/api/%2E%2E/admin"), "admin")
        self.assertServedBy(self.get("/../admin"), "admin")
        self.assertServedBy(self.get("/./admin"), "admin")

    def test_normalized_slashes_and_unreserved_escapes(self):
        self.assertServedBy(self.get("/items//42"), "item")
        self.assertServedBy(self.get("//items/42"), "item")
        self.assertServedBy(self.get("/%69tems/42"), "item")
        self.assertUpstream(self.get("/users//7", host="api.example.com"), "users")

    # headers added and removed

    def test_forwarded_headers_and_request_id(self):
        r = self.get("/proxy/fwd", host="gw.example.com")
        echo = self.assertUpstream(r, "users")
        hdrs = echo["headers"]
        self.assertEqual(hdrs.get("x-forwarded-for", "").split(",")[-1].strip(), "127.0.0.1",
                         hdrs)
        self.assertEqual(hdrs.get("x-forwarded-proto"), "http", hdrs)
        self.assertEqual(hdrs.get("x-forwarded-host"), "gw.example.com", hdrs)
        rid = hdrs.get("x-request-id")
        # A random (version 4) UUID in its text form.
        self.assertRegex(rid or "", r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-"
                                    r"[0-9a-f]{12}$", hdrs)
        self.assertEqual(r.header("x-request-id"), rid)
        other = self.assertUpstream(self.get("/proxy/fwd"), "users")["headers"]["x-request-id"]
        self.assertNotEqual(other, rid, "request ids must be unique")

    def test_incoming_request_id_preserved(self):
        r = self.get("/proxy/rid", headers=[("X-Request-Id", "test-rid-42")])
        echo = self.assertUpstream(r, "users")
        self.assertEqual(echo["headers"].get("x-request-id"), "test-rid-42")
        self.assertEqual(r.header("x-request-id"), "test-rid-42")

    def test_incoming_forwarded_for_is_appended(self):
        r = self.get("/proxy/xff", headers=[("X-Forwarded-For", "203.0.113.9")])
        xff = self.assertUpstream(r, "users")["headers"].get("x-forwarded-for", "")
        self.assertEqual([p.strip() for p in xff.split(",")], ["203.0.113.9", "127.0.0.1"])

    def test_hop_by_hop_headers_removed(self):
        headers = [
            ("Connection", "x-foo, keep-alive"),
            ("X-Foo", "bar"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("Upgrade", "example/1"),
            ("Proxy-Connection", "keep-alive"),
            ("X-End-To-End", "yes"),
        ]
        with self.tp.conn() as c:
            r = c.request("GET", "/proxy/hop", headers=headers)
            seen = self.assertUpstream(r, "users")["headers"]
            for name in ("x-foo", "keep-alive", "te", "upgrade", "proxy-connection"):
                self.assertNotIn(name, seen, "hop-by-hop %s reached the upstream" % name)
            self.assertNotIn("x-foo", seen.get("connection", "").lower())
            self.assertEqual(seen.get("x-end-to-end"), "yes")
            # The connection is still usable (the client asked for keep-alive).
            self.assertUpstream(c.request("GET", "/proxy/again"), "users")

    def test_connection_close_not_forwarded(self):
        with self.tp.conn() as c:
            r = c.request("GET", "/proxy/close", headers=[("Connection", "close")])
            seen = self.assertUpstream(r, "users")["headers"]
            self.assertNotIn("close", seen.get("connection", "").lower())
            closed, _ = c.wait_closed(h.scaled(3))
            self.assertTrue(closed, "Connection: close but the connection stayed open")


if __name__ == "__main__":
    unittest.main()
