// Header values with ${variables}, for the headers filter and anything else that writes text
// from the request: ${client_ip}, ${request_id}, ${consumer}, ${route}, ${listener}, ${host},
// ${method}, ${path}, ${jwt.sub} (any claim: ${jwt.NAME} or ${jwt.claim.NAME}) and
// ${header.NAME}. "$$" is a literal "$". Parsed once at config load.
#pragma once

#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "turnpike/filters/filter.h"

namespace turnpike::filters {

class Template {
 public:
  /// The template, or an error message naming the bad variable.
  static std::variant<Template, std::string> parse(std::string_view text);

  /// Unknown values (no consumer yet, a missing claim or header) render as "".
  std::string render(const RequestContext& ctx, const http::RequestHead& req) const;
  bool literal() const noexcept {
    return parts_.size() <= 1 && (parts_.empty() || parts_[0].kind == Kind::Literal);
  }

 private:
  enum class Kind : std::uint8_t {
    Literal,
    ClientIp,
    RequestId,
    Consumer,
    Route,
    Listener,
    Host,
    Method,
    Path,
    Claim,
    Header
  };
  struct Part {
    Kind kind;
    std::string text;  // the literal, claim name or header name
  };
  std::vector<Part> parts_;
};

}  // namespace turnpike::filters
