"""The filter chain as a client sees it, with the filter types that need no outside service:
headers (set/add/remove with ${variables}, request and response), request_size (413/431),
rewrite (prefix, regex, host, query), cors (preflights answered locally, headers on every
answer including Turnpike's own errors), ip_filter (allow/deny, trusted X-Forwarded-For), the
order of listener filters (before routing) and route filters, the JSON body of every filter
4xx (and the gRPC status for gRPC clients), HTTP/2 through the same chain, and config errors
with file:line:column.
"""

import json
import os
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as h  # noqa: E402


assert_json_error = h.assert_json_error


class FiltersTest(h.TurnpikeCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        s = cls.cstack
        cls.echo = s.echo("up")
        cls.port, cls.h2port, admin = h.free_port(), h.free_port(), h.free_port()
        filters = {
            "edge": {"type": "ip_filter", "deny": ["10.0.0.0/8", "192.0.2.1"],
                     "trusted_proxies": ["127.0.0.0/8", "::1"]},
            "web": {"type": "cors",
                    "allow_origins": ["https://app.example.com", "https://*.example.org"],
                    "allow_methods": ["GET", "POST", "PUT"],
                    "allow_headers": ["content-type", "x-api-key"],
                    "expose_headers": ["x-request-id"], "allow_credentials": True,
                    "max_age": "10m"},
            "tag": {"type": "headers",
                    "request": {"set": {"x-gateway": "turnpike",
                                        "x-client": "${client_ip}",
                                        "x-route": "${route}",
                                        "x-rid": "${request_id}",
                                        "x-echo-agent": "ua=${header.user-agent}",
                                        "x-dollar": "$$5"},
                                "add": {"x-multi": "two"},
                                "remove": ["x-internal"]},
                    "response": {"set": {"x-served-by": "turnpike"},
                                 "remove": ["x-upstream-port"]}},
            "small": {"type": "request_size", "max_body_bytes": "16",
                      "max_headers": 20},
            "v2": {"type": "rewrite", "path_prefix": {"from": "/old", "to": "/new"},
                   "host": "internal.example", "query": {"set": {"src": "${route}"},
                                                         "remove": ["debug"]}},
            "users": {"type": "rewrite",
                      "path_regex": {"pattern": "/u/([0-9]+)/(\\w+)",
                                     "replace": "/users/\\2/\\1"}},
            "allow-local": {"type": "ip_filter", "allow": ["127.0.0.1/32"]},
            "only-ten": {"type": "ip_filter", "allow": ["10.0.0.0/8"]},
            "cap10k": {"type": "request_size", "max_response_body_bytes": "10000"},
            "cap100k": {"type": "request_size", "max_response_body_bytes": "100000"},
        }
        routes = [
            {"name": "tagged", "match": {"path_prefix": "/tagged"}, "filters": ["tag"],
             "backend": "up"},
            {"name": "small", "match": {"path_prefix": "/small"}, "filters": ["small"],
             "backend": "up"},
            {"name": "old", "match": {"path_regex": "/old.*"}, "filters": ["v2"], "backend": "up"},
            {"name": "users", "match": {"path_prefix": "/u"}, "filters": ["users"],
             "backend": "up"},
            {"name": "local", "match": {"path_prefix": "/local"}, "filters": ["allow-local"],
             "backend": "up"},
            {"name": "ten", "match": {"path_prefix": "/ten"}, "filters": ["only-ten"],
             "backend": "up"},
            {"name": "capped-big", "match": {"path_prefix": "/bytes", "headers": {"x-cap": "big"}},
             "filters": ["tag", "cap100k"], "backend": "up"},
            {"name": "capped", "match": {"path_prefix": "/bytes"}, "filters": ["tag", "cap10k"],
             "backend": "up"},
            {"name": "plain", "match": {"path_prefix": "/plain"}, "backend": "up"},
        ]
        lst = h.listener("public", cls.port)
        lst["filters"] = ["edge", "web"]
        h2 = h.listener("h2", cls.h2port)
        h2["protocols"] = ["http1", "h2c"]
        h2["filters"] = ["web"]
        cfg = h.config(admin, [lst, h2], [h.cluster("up", cls.echo)], routes, filters=filters)
        cls.tp = s.turnpike(cfg)

    def get(self, path, headers=(), **kw):
        return self.tp.request(kw.pop("method", "GET"), path, headers=list(headers), **kw)

    # ---- headers ----------------------------------------------------------------------------

    def test_headers_set_add_remove_with_variables(self):
        r = self.get("/tagged/x", headers=[("X-Internal", "secret"), ("X-Multi", "one"),
                                          ("User-Agent", "probe/1")])
        self.assertEqual(r.status, 200, r)
        seen = r.json()["headers"]
        self.assertEqual(seen["x-gateway"], "turnpike")
        self.assertEqual(seen["x-client"], "127.0.0.1")
        self.assertEqual(seen["x-route"], "tagged")
        self.assertEqual(seen["x-rid"], r.header("x-request-id"))
        self.assertEqual(seen["x-echo-agent"], "ua=probe/1")
        self.assertEqual(seen["x-dollar"], "$5")
        self.assertNotIn("x-internal", seen)
        self.assertIn("two", seen["x-multi"])
        self.assertIn("one", seen["x-multi"])
        # Response phase.
        self.assertEqual(r.header("x-served-by"), "turnpike")
        self.assertIsNone(r.header("x-upstream-port"))

    def test_untouched_route_gets_nothing(self):
        r = self.get("/plain", headers=[("X-Internal", "kept")])
        seen = r.json()["headers"]
        self.assertEqual(seen["x-internal"], "kept")
        self.assertNotIn("x-gateway", seen)
        self.assertIsNone(r.header("x-served-by"))

    # ---- request_size -----------------------------------------------------------------------

    def test_body_over_the_route_limit_by_content_length(self):
        r = self.get("/small", method="POST", body=b"x" * 17)
        assert_json_error(self, r, 413, "request body too large")
        r = self.get("/small", method="POST", body=b"x" * 16)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["body_bytes"], 16)
        # Another route has only the listener's limit.
        self.assertEqual(self.get("/plain", method="POST", body=b"x" * 1000).status, 200)

    def test_chunked_body_over_the_route_limit(self):
        p = h.curl("-i", "-H", "Transfer-Encoding: chunked", "--data-binary", "@-",
                   "http://127.0.0.1:%d/small" % self.port, input_bytes=b"y" * 5000)
        head, _, body = p.stdout.partition(b"\r\n\r\n")
        self.assertIn(b" 413 ", head.split(b"\r\n")[0], p.stdout[:300])
        self.assertEqual(json.loads(body)["error"], "request body too large")

    def test_response_body_limit_by_content_length_is_a_response_phase_answer(self):
        ok = self.get("/bytes/5000")
        self.assertEqual((ok.status, len(ok.body)), (200, 5000), ok)
        r = self.get("/bytes/20000")
        assert_json_error(self, r, 502, "upstream response too large")
        # The answer replaced the upstream's in request_size's response phase, and went on
        # through the response phase of the filter before it (tag).
        self.assertEqual(r.header("x-served-by"), "turnpike")
        # The same over HTTP/2.
        p = h.curl("-sS", "-o", "/dev/null", "-w", "%{http_code}", "--http2-prior-knowledge",
                   "http://127.0.0.1:%d/bytes/20000" % self.h2port)
        self.assertEqual(p.stdout, b"502", p.stderr)

    def test_response_body_limit_while_streaming_cuts_the_response_off(self):
        # No Content-Length: the body is counted as it streams; past the limit the response
        # (already started) is cut off, so the client sees it incomplete, never whole.
        url = "http://127.0.0.1:%d/bytes/1000000?chunked=1" % self.port
        p = h.curl("-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_download}",
                   "-H", "X-Cap: big", url)
        self.assertNotEqual(p.returncode, 0, p.stdout)
        status, size = p.stdout.decode().split()
        self.assertEqual(status, "200")
        self.assertLessEqual(int(size), 100000 + 65536)
        # Under the limit the same kind of response passes whole.
        p = h.curl("-sS", "-o", "/dev/null", "-w", "%{size_download}", "-H", "X-Cap: big",
                   "http://127.0.0.1:%d/bytes/90000?chunked=1" % self.port)
        self.assertEqual((p.returncode, p.stdout), (0, b"90000"), p.stderr)

    def test_too_many_headers(self):
        hdrs = [("X-H%d" % i, "v") for i in range(25)]
        assert_json_error(self, self.get("/small", headers=hdrs), 431,
                          "request header fields too large")

    # ---- rewrite ----------------------------------------------------------------------------

    def test_rewrite_prefix_host_and_query(self):
        r = self.get("/old/items?debug=1&keep=a%20b&src=client")
        self.assertEqual(r.status, 200, r)
        seen = r.json()
        self.assertEqual(seen["path"], "/new/items")
        self.assertEqual(seen["query"], "keep=a%20b&src=old")
        self.assertEqual(seen["headers"]["host"], "internal.example")
        # Segment boundary: /older is not under /old.
        self.assertEqual(self.get("/older").json()["path"], "/older")

    def test_rewrite_regex_capture_groups(self):
        self.assertEqual(self.get("/u/42/orders").json()["path"], "/users/orders/42")
        # No full match: the path goes on unchanged.
        self.assertEqual(self.get("/u/x/orders").json()["path"], "/u/x/orders")

    # ---- cors -------------------------------------------------------------------------------

    def test_preflight_answered_locally_even_without_a_route(self):
        for origin in ("https://app.example.com", "https://a.b.example.org"):
            r = self.get("/nowhere", method="OPTIONS", headers=[
                ("Origin", origin), ("Access-Control-Request-Method", "PUT"),
                ("Access-Control-Request-Headers", "Content-Type, X-Api-Key")])
            self.assertEqual(r.status, 204, r)
            self.assertEqual(r.header("access-control-allow-origin"), origin)
            self.assertEqual(r.header("access-control-allow-methods"), "GET, POST, PUT")
            self.assertEqual(r.header("access-control-allow-headers"), "content-type, x-api-key")
            self.assertEqual(r.header("access-control-allow-credentials"), "true")
            self.assertEqual(r.header("access-control-max-age"), "600")
            self.assertEqual(r.header("vary"), "Origin")
            self.assertEqual(r.body, b"")

    def test_preflight_refusals(self):
        for origin in ("https://evil.com", "https://example.org", "https://x.example.org.evil.com",
                       "http://app.example.com"):
            r = self.get("/tagged", method="OPTIONS", headers=[
                ("Origin", origin), ("Access-Control-Request-Method", "GET")])
            assert_json_error(self, r, 403, "origin not allowed")
            self.assertIsNone(r.header("access-control-allow-origin"))
        r = self.get("/tagged", method="OPTIONS", headers=[
            ("Origin", "https://app.example.com"), ("Access-Control-Request-Method", "DELETE")])
        assert_json_error(self, r, 403, "method not allowed by the CORS policy")
        r = self.get("/tagged", method="OPTIONS", headers=[
            ("Origin", "https://app.example.com"), ("Access-Control-Request-Method", "GET"),
            ("Access-Control-Request-Headers", "x-secret")])
        assert_json_error(self, r, 403, "header 'x-secret' not allowed by the CORS policy")

    def test_actual_requests_get_cors_headers_including_errors(self):
        origin = "https://app.example.com"
        r = self.get("/plain", headers=[("Origin", origin)])
        self.assertEqual(r.status, 200)
        self.assertEqual(r.header("access-control-allow-origin"), origin)
        self.assertEqual(r.header("access-control-expose-headers"), "x-request-id")
        self.assertIn("Origin", r.header("vary"))
        # Turnpike's own answers too: a browser app can read the 404 and the 413.
        r = self.get("/nowhere", headers=[("Origin", origin)])
        assert_json_error(self, r, 404, "no route")
        self.assertEqual(r.header("access-control-allow-origin"), origin)
        r = self.get("/small", method="POST", body=b"z" * 100, headers=[("Origin", origin)])
        assert_json_error(self, r, 413)
        self.assertEqual(r.header("access-control-allow-origin"), origin)
        # Not allowed: the request goes on, without CORS headers.
        r = self.get("/plain", headers=[("Origin", "https://evil.com")])
        self.assertEqual(r.status, 200)
        self.assertIsNone(r.header("access-control-allow-origin"))
        # No Origin: not a CORS request.
        self.assertIsNone(self.get("/plain").header("access-control-allow-origin"))

    # ---- ip_filter --------------------------------------------------------------------------

    def test_allow_list_on_a_route(self):
        self.assertEqual(self.get("/local").status, 200)
        assert_json_error(self, self.get("/ten"), 403, "address not allowed")

    def test_trusted_proxy_forwarded_for(self):
        # The peer (127.0.0.1) is a trusted proxy: the client is the right-most untrusted entry.
        r = self.get("/tagged", headers=[("X-Forwarded-For", "198.51.100.7, 127.0.0.2")])
        self.assertEqual(r.json()["headers"]["x-client"], "198.51.100.7")
        # Denied clients behind the proxy are denied, on every path (a listener filter).
        for xff in ("10.1.2.3", "192.0.2.1, 127.0.0.1"):
            r = self.get("/nowhere", headers=[("X-Forwarded-For", xff)])
            assert_json_error(self, r, 403, "address denied")
        # Garbage in the chain: nothing further left is believed.
        r = self.get("/tagged", headers=[("X-Forwarded-For", "10.0.0.1, not-an-ip, 127.0.0.3")])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["headers"]["x-client"], "127.0.0.3")

    def test_grpc_clients_get_a_grpc_status(self):
        r = self.get("/ten", headers=[("Content-Type", "application/grpc")])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header("grpc-status"), "7")  # PERMISSION_DENIED
        self.assertEqual(r.header("grpc-message"), "address not allowed")

    # ---- HTTP/2 -----------------------------------------------------------------------------

    def test_http2_requests_run_the_same_chain(self):
        url = "http://127.0.0.1:%d" % self.h2port
        p = h.curl("-i", "--http2-prior-knowledge", "-H", "X-Internal: x",
                   "-H", "Origin: https://app.example.com", url + "/tagged/h2")
        self.assertEqual(p.returncode, 0, p.stderr)
        head, _, body = p.stdout.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/2 200"), head)
        self.assertIn(b"access-control-allow-origin: https://app.example.com", head.lower())
        self.assertIn(b"x-served-by: turnpike", head.lower())
        seen = json.loads(body)["headers"]
        self.assertEqual(seen["x-gateway"], "turnpike")
        self.assertNotIn("x-internal", seen)
        # The 413 comes before the body is read (Content-Length says it is too large), then
        # RST_STREAM(NO_ERROR) stops the upload (RFC 9113 8.1). nghttp, because curl 7.88
        # reports that reset as an error.
        body = self.cstack.write("body40", "x" * 40)
        p = subprocess.run(["nghttp", "-v", "-d", body, url + "/small"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=h.scaled(20))
        text = p.stdout.decode(errors="replace")
        self.assertIn(":status: 413", text)
        self.assertIn('"error":"request body too large"', text)


BAD_FILTERS = """\
admin: {{listen: "127.0.0.1:{admin}"}}
listeners:
  - listen: "127.0.0.1:{port}"
    filters: [web, nope]
clusters:
  - name: up
    endpoints: ["127.0.0.1:9"]
filters:
  web: {{type: cors, allow_origins: ["app.example.com"]}}
  tag:
    type: headers
    request:
      set: {{x-a: "${{consumr}}"}}
      remov: [x-b]
  ips: {{type: ip_filter, allow: [10.0.0.1/8]}}
  sz: {{type: request_size, max_body_bytes: 10XB}}
  rw: {{type: rewrite, path_regex: {{pattern: "(", replace: "/x"}}}}
  typo: {{type: header}}
routes:
  - match: {{path_prefix: /}}
    filters: [tag, tga]
    backend: up
"""

EXPECTED_ERRORS = [
    (4, 20, "listeners[0].filters[1]: unknown filter 'nope'"),
    (9, 37, "filters.web.allow_origins[0]: 'app.example.com' is not an origin"),
    (13, 18, "filters.tag.request.set.x-a: unknown variable '${consumr}'"),
    (14, 7, "filters.tag.request: unknown key 'remov' (did you mean 'remove'?)"),
    (15, 34, "filters.ips.allow[0]: '10.0.0.1/8' has bits set past the /8 prefix"),
    (16, 44, "filters.sz.max_body_bytes: invalid size '10XB'"),
    (17, 45, "filters.rw.path_regex.pattern: invalid RE2 pattern"),
    (18, 16, "filters.typo.type: unknown filter type 'header' (did you mean 'headers'?)"),
    (21, 20, "routes[0].filters[1]: unknown filter 'tga'"),
]


class FilterConfigErrorsTest(h.TurnpikeCase):
    def test_every_filter_error_has_file_line_column(self):
        # One error per mistake: no follow-on complaints about what failed to parse.
        err = self.assertConfigErrors(BAD_FILTERS, EXPECTED_ERRORS, count=9)
        self.assertNotIn("warning", err)


if __name__ == "__main__":
    unittest.main()
