// The filter interface: each request runs through the filters its listener and route name,
// request phase in order, response phase in reverse order. Codec-neutral (HTTP/1.1 and HTTP/2
// requests go through the same chain). All calls happen on the request's owning worker thread.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "turnpike/http/message.h"

namespace turnpike::filters {

/// What a filter phase decided.
enum class Status : std::uint8_t {
  Continue,  // run the next filter
  Stop,      // suspended: the filter later calls StreamCallbacks::resume() or send_local_reply()
};

/// Facts about the request that filters read and write (the authenticated consumer, claims,
/// client address...). Grows with the filter issue; owned by the stream.
struct RequestContext {
  std::string client_address;
  std::string tls_client_subject;  // the verified client certificate's subject (RFC 2253), or ""
  std::vector<std::string> tls_client_dns;  // its SAN DNS names
  std::vector<std::string> tls_client_uri;  // its SAN URIs
  std::string request_id;
  std::string route;
  std::string consumer;
};

/// Implemented by the proxy stream. Owning worker thread only.
class StreamCallbacks {
 public:
  /// Resumes a chain suspended by Status::Stop. May run the rest of the chain inline.
  virtual void resume() = 0;
  /// Ends the request phase with a local answer; later filters do not run.
  virtual void send_local_reply(int status, std::string_view body, std::string_view details) = 0;
  virtual RequestContext& context() = 0;

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
  /// The stream is going away: cancel pending asynchronous work.
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
  explicit ActiveChain(const FilterChain& chain);
  ~ActiveChain();
  /// Runs request phases from the current position. Returns Stop when a filter suspended
  /// (call again after resume()) and Continue when all filters ran.
  Status run_request(http::RequestHead& req, StreamCallbacks& cb);
  /// Response phases in reverse order over the filters whose request phase ran.
  void run_response(http::ResponseHead& resp, StreamCallbacks& cb);
  void complete(const http::ResponseHead& resp) noexcept;
  bool empty() const noexcept { return filters_.empty(); }

 private:
  std::vector<std::unique_ptr<Filter>> filters_;
  std::size_t next_ = 0;
};

}  // namespace turnpike::filters
