-- bench/run.sh, scenario "upload": every request is a POST with a 1 MiB body (1048576 bytes).
-- No request() function, so wrk builds the request once and sends the same bytes every time.
-- turnpike-echo hashes bodies over 64 KiB (SHA-256) instead of echoing them: a small answer.
wrk.method = "POST"
wrk.body = string.rep("0123456789abcdef", 65536)
wrk.headers["Content-Type"] = "application/octet-stream"
