-- bench/run.sh, scenario "close": one request per connection. Every request says
-- `Connection: close`; the proxy answers with `Connection: close` and closes, and wrk opens a new
-- connection for the next request (a proxy that closed without saying so would count as a read error).
wrk.headers["Connection"] = "close"
