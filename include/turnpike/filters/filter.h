// The filter interface: each request runs through the filters its listener and route name,
// request phase in order, response phase in reverse order. Codec-neutral (HTTP/1.1 and HTTP/2
// requests go through the same chain). All calls happen on the request's owning worker thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "turnpike/http/message.h"

namespace boost::asio {
class io_context;
}

namespace turnpike::filters {

/// What a filter phase decided. Both phases may continue, answer locally (send_local_reply(),
/// then Stop) or suspend (Stop, then later resume() or send_local_reply()).
enum class Status : std::uint8_t {
  Continue,  // run the next filter
  Stop,      // answered locally, or suspended until StreamCallbacks::resume()/send_local_reply()
};

using HeaderList = std::vector<std::pair<std::string, std::string>>;

/// Facts about the request that filters read and write: who the client is (address, TLS client
/// certificate, the authenticated consumer, its groups and JWT claims) and what later phases
/// should do (extra response headers, a body limit). Owned by the request; later filters read
/// what earlier ones wrote.
struct RequestContext {
  std::string client_address;  // the TCP peer
  /// The client as far as filters are concerned: the peer, or the address a trusted proxy
  /// named in X-Forwarded-For (ip_filter with trusted_proxies). Used by ${client_ip}, rate
  /// limits keyed by client_ip and authz CIDR rules.
  std::string client_ip;
  std::string tls_client_subject;  // the verified client certificate's subject (RFC 2253), or ""
  std::vector<std::string> tls_client_dns;  // its SAN DNS names
  std::vector<std::string> tls_client_uri;  // its SAN URIs
  std::string request_id;
  std::string listener;
  std::string route;  // empty while listener filters run (before routing)
  /// The authenticated consumer (a `consumers:` name, or a JWT's consumer claim) and its groups.
  std::string consumer;
  std::vector<std::string> groups;
  /// A verified JWT's top-level claims (strings as they are, other values as JSON text) and its
  /// scopes (`scope` split on spaces, or `scp`).
  HeaderList claims;
  std::vector<std::string> scopes;
  /// Headers to add to the response whatever it is (rate-limit headers on allowed requests...).
  HeaderList response_headers;
  /// The request body may not exceed this (413 while streaming); unset: the listener's limit.
  std::optional<std::uint64_t> max_body_bytes;
  /// The upstream's response body may not exceed this: a response that grows past it while
  /// streaming is cut off (the client sees an incomplete response). Unset: no limit.
  std::optional<std::uint64_t> max_response_body_bytes;

  const std::string* claim(std::string_view name) const noexcept {
    for (const auto& [k, v] : claims)
      if (k == name) return &v;
    return nullptr;
  }
};

/// A filter's own answer: `error` becomes the JSON body {"error": ..., "request_id": ...} (or
/// the gRPC status for gRPC requests); with an empty error and a status below 400, no body.
struct LocalReply {
  int status = 403;
  std::string error;
  HeaderList headers;
};

/// What a filter's GET to an upstream cluster (a JWKS fetch) got back.
struct FetchResult {
  int status = 0;     // the HTTP status; 0 when the fetch failed (`error` says why)
  std::string error;  // "upstream timed out", "no cluster 'idp'", "response too large"...
  std::string body;
  HeaderList headers;  // names lower-cased
};

/// Requests a filter makes itself, through the clusters of the current snapshot and this
/// worker's connection pools. Owning worker thread only.
class Upstreams {
 public:
  /// GETs `path_and_query` from `cluster` with Host `host` (empty: the endpoint's address).
  /// `done` runs exactly once, on this worker, after the response or a failure; the fetch has
  /// its own deadline `timeout`, a body bound `max_bytes`, and does not depend on the request
  /// that started it still being there.
  virtual void fetch(std::string_view cluster, std::string path_and_query, std::string host,
                     std::chrono::milliseconds timeout, std::size_t max_bytes,
                     std::function<void(FetchResult)> done) = 0;

 protected:
  ~Upstreams() = default;
};

/// Implemented by the proxy stream. Owning worker thread only.
class StreamCallbacks {
 public:
  /// Resumes a chain suspended by Status::Stop. May run the rest of the chain inline.
  virtual void resume() = 0;
  /// Answers locally; later filters of the phase do not run. From a request phase: the answer
  /// instead of proxying. From a response phase (before the response is sent): the answer
  /// replaces the response (the upstream's body is dropped), and goes through the response
  /// phases of the filters before this one. Call it from a phase (then return Stop) or, after
  /// a suspension, instead of resume().
  virtual void send_local_reply(LocalReply reply) = 0;
  virtual RequestContext& context() = 0;
  /// The worker's event loop, for filters that wait on I/O (Redis, a JWKS fetch).
  virtual boost::asio::io_context& io_context() = 0;
  /// This worker's index (0..workers-1), for per-worker state.
  virtual unsigned worker_index() const = 0;
  virtual Upstreams& upstreams() = 0;

 protected:
  ~StreamCallbacks() = default;
};

/// One instance per request, made from a shared immutable FilterConfig.
class Filter {
 public:
  virtual ~Filter() = default;
  virtual Status on_request_headers(http::RequestHead&, StreamCallbacks&) {
    return Status::Continue;
  }
  virtual Status on_response_headers(http::ResponseHead&, StreamCallbacks&) {
    return Status::Continue;
  }
  /// Logging phase: exactly once per request, whatever happened.
  virtual void on_complete(const http::ResponseHead&) noexcept {}
  /// The stream is going away, or the filter's suspension outlived the deadline: cancel pending
  /// asynchronous work; the filter must not call back afterwards. May be called more than once.
  virtual void on_destroy() noexcept {}
};

/// Immutable, built on the control thread, shared by every worker.
class FilterConfig {
 public:
  virtual ~FilterConfig() = default;
  virtual std::unique_ptr<Filter> create() const = 0;
};

/// The filter configs a request runs, in order (listener-level first, then route-level).
class FilterChain {
 public:
  void add(std::shared_ptr<const FilterConfig> config) { configs_.push_back(std::move(config)); }
  bool empty() const noexcept { return configs_.empty(); }
  const std::vector<std::shared_ptr<const FilterConfig>>& configs() const noexcept {
    return configs_;
  }

 private:
  std::vector<std::shared_ptr<const FilterConfig>> configs_;
};

/// Runs a chain for one request: owns the per-request Filter objects and where the chain is.
class ActiveChain {
 public:
  ActiveChain() = default;
  explicit ActiveChain(const FilterChain& chain);
  ~ActiveChain();
  /// Runs request phases from the current position. Returns Stop when a filter suspended
  /// (call again after resume()) and Continue when all filters ran.
  Status run_request(http::RequestHead& req, StreamCallbacks& cb);
  /// Adds filters after the ones already there (the route's after the listener's).
  void append(const FilterChain& chain);
  /// Response phases, in reverse order, over the filters whose request phase ran to completion
  /// (a filter that answered locally has already shaped its answer), from the current
  /// position. Returns Stop when a filter suspended (call again after resume()) or answered
  /// locally; the filters after it in this order then see the local answer, through another
  /// call, while it and the ones before it are done.
  Status run_response(http::ResponseHead& resp, StreamCallbacks& cb);
  /// A filter answered locally in the request phase: it is excluded from the response phase.
  void mark_replied() noexcept {
    if (next_ > 0 && !responding_) --next_;
  }
  /// The filter that suspended did not finish in time: it is told to drop its pending work
  /// (on_destroy(), so it never calls back) and is excluded from the response phase.
  void cancel_suspended() noexcept;
  void complete(const http::ResponseHead& resp) noexcept;
  bool empty() const noexcept { return filters_.empty(); }

 private:
  std::vector<std::unique_ptr<Filter>> filters_;
  std::size_t next_ = 0;       // request phase: the next filter to run
  std::size_t resp_next_ = 0;  // response phase: filters [0, resp_next_) are still to run
  bool responding_ = false;
};

}  // namespace turnpike::filters
