#include "admin/admin_server.h"

#include <spdlog/spdlog.h>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <boost/url/parse.hpp>

#include "support/spawn.h"
#include "turnpike/config/to_json.h"

namespace turnpike::admin {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
using tcp = asio::ip::tcp;
using nlohmann::json;

namespace {
constexpr auto kAwait = asio::as_tuple(asio::use_awaitable);
constexpr auto kAcceptRestartBackoff = std::chrono::milliseconds(100);
}  // namespace

struct AdminServer::Impl : std::enable_shared_from_this<Impl> {
  Impl(asio::io_context& io_, AdminHooks h) : io(io_), acceptor(io_), hooks(std::move(h)) {}

  asio::awaitable<void> accept_loop() {
    auto self = shared_from_this();
    for (;;) {
      auto [ec, socket] = co_await acceptor.async_accept(kAwait);
      if (ec) {
        if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
        continue;
      }
      asio::co_spawn(io, session(std::move(socket)), support::log_exception("admin session"));
    }
  }

  asio::awaitable<void> session(tcp::socket socket) {
    auto self = shared_from_this();
    beast::tcp_stream stream(std::move(socket));
    beast::flat_buffer buffer;
    for (;;) {
      bhttp::request_parser<bhttp::string_body> parser;
      parser.body_limit(1024 * 1024);
      stream.expires_after(std::chrono::seconds(30));
      auto [ec, n] = co_await bhttp::async_read(stream, buffer, parser, kAwait);
      if (ec) break;
      auto req = parser.release();
      bhttp::response<bhttp::string_body> res = handle(req);
      res.keep_alive(req.keep_alive());
      res.prepare_payload();
      auto [wec, wn] = co_await bhttp::async_write(stream, res, kAwait);
      if (wec || !req.keep_alive()) break;
    }
    beast::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
  }

  bhttp::response<bhttp::string_body> reply(bhttp::status st, const json& body) {
    bhttp::response<bhttp::string_body> res{st, 11};
    res.set(bhttp::field::content_type, "application/json");
    res.body() = body.dump(2) + "\n";
    return res;
  }

  bhttp::response<bhttp::string_body> handle(const bhttp::request<bhttp::string_body>& req) {
    auto url = boost::urls::parse_origin_form(req.target());
    if (!url) return reply(bhttp::status::bad_request, {{"error", "bad request-target"}});
    std::string path = url->path();
    auto params = url->params();
    auto param = [&](std::string_view name) -> std::string {
      auto it = params.find(name);
      return it != params.end() ? std::string((*it).value) : std::string();
    };

    if (path == "/ready") {
      bool ok = hooks.ready();
      return reply(ok ? bhttp::status::ok : bhttp::status::service_unavailable, {{"ready", ok}});
    }
    if (path == "/reload") {
      if (req.method() != bhttp::verb::post)
        return reply(bhttp::status::method_not_allowed, {{"error", "use POST /reload"}});
      std::string dry = param("dry_run");
      if (dry == "1" || dry == "true") {
        json d = hooks.dry_run(req.body());
        return reply(d["valid"] ? bhttp::status::ok : bhttp::status::unprocessable_entity, d);
      }
      json st = hooks.reload("admin");
      if (st.contains("error")) return reply(bhttp::status::service_unavailable, st);
      bool rejected = st["last_reload"]["result"] == "rejected";
      return reply(rejected ? bhttp::status::unprocessable_entity : bhttp::status::ok, st);
    }
    if (req.method() != bhttp::verb::get && req.method() != bhttp::verb::head)
      return reply(bhttp::status::method_not_allowed, {{"error", "method not allowed"}});
    const GenerationView snap = hooks.snapshot();
    if (path == "/config") {
      json j = config::to_json(*snap.config);
      auto loaded =
          std::chrono::duration_cast<std::chrono::seconds>(snap.loaded_at.time_since_epoch())
              .count();
      return reply(bhttp::status::ok, {{"generation", snap.generation},
                                       {"source_file", snap.config->source_file},
                                       {"digest", snap.config->digest},
                                       {"loaded_at_unix", loaded},
                                       {"config", j}});
    }
    if (path == "/listeners") return reply(bhttp::status::ok, hooks.listeners());
    if (path == "/config/status") return reply(bhttp::status::ok, hooks.status());
    if (path == "/config/generations") return reply(bhttp::status::ok, hooks.generations());
    if (path == "/clusters" && hooks.clusters) return reply(bhttp::status::ok, hooks.clusters());
    if (path == "/explain") {
      std::string method = param("method");
      if (method.empty()) method = "GET";
      std::string target = param("path");
      if (target.empty()) target = "/";
      std::string query = param("query");
      if (!query.empty()) target += "?" + query;
      std::vector<std::pair<std::string, std::string>> headers;
      for (auto p : params) {
        if (p.key != "header") continue;
        std::string v(p.value);
        auto colon = v.find(':');
        if (colon == std::string::npos) continue;
        std::string value = v.substr(colon + 1);
        while (!value.empty() && value.front() == ' ')
          value.erase(0, 1);
        headers.emplace_back(v.substr(0, colon), value);
      }
      std::string error;
      json j = snap.routes->explain(method, param("host"), target, headers, error);
      if (!error.empty()) return reply(bhttp::status::bad_request, {{"error", error}});
      return reply(bhttp::status::ok, j);
    }
    return reply(bhttp::status::not_found,
                 {{"error", "not found"},
                  {"endpoints",
                   {"/ready", "/config", "/explain", "/listeners", "/config/status",
                    "/config/generations", "/clusters", "/reload"}}});
  }

  asio::io_context& io;
  tcp::acceptor acceptor;
  AdminHooks hooks;
};

AdminServer::AdminServer(asio::io_context& io, AdminHooks hooks)
    : impl_(std::make_shared<Impl>(io, std::move(hooks))) {}

AdminServer::~AdminServer() {
  stop();
}

std::string AdminServer::start(const std::string& address, std::uint16_t port) {
  boost::system::error_code ec;
  auto addr = asio::ip::make_address(address, ec);
  if (ec) return "admin.listen: bad address '" + address + "'";
  tcp::endpoint ep(addr, port);
  impl_->acceptor.open(ep.protocol(), ec);
  if (!ec) impl_->acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) impl_->acceptor.bind(ep, ec);
  if (!ec) impl_->acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) return "admin listener " + address + ":" + std::to_string(port) + ": " + ec.message();
  support::spawn_restarting(
      impl_->io.get_executor(), "admin: accept loop", kAcceptRestartBackoff,
      [impl = impl_] { return impl->accept_loop(); },
      [impl = impl_] { return impl->acceptor.is_open(); });
  return {};
}

void AdminServer::stop() {
  boost::system::error_code ignored;
  impl_->acceptor.close(ignored);
}

std::uint16_t AdminServer::port() const noexcept {
  boost::system::error_code ec;
  auto ep = impl_->acceptor.local_endpoint(ec);
  return ec ? 0 : ep.port();
}

}  // namespace turnpike::admin
