#include "turnpike/filters/filter.h"

namespace turnpike::filters {

ActiveChain::ActiveChain(const FilterChain& chain) {
  append(chain);
}

void ActiveChain::append(const FilterChain& chain) {
  filters_.reserve(filters_.size() + chain.configs().size());
  for (const auto& cfg : chain.configs())
    filters_.push_back(cfg->create());
}

ActiveChain::~ActiveChain() {
  for (auto& f : filters_)
    f->on_destroy();
}

Status ActiveChain::run_request(http::RequestHead& req, StreamCallbacks& cb) {
  while (next_ < filters_.size()) {
    Filter& f = *filters_[next_++];
    if (f.on_request_headers(req, cb) == Status::Stop) return Status::Stop;
  }
  return Status::Continue;
}

void ActiveChain::run_response(http::ResponseHead& resp, StreamCallbacks& cb) {
  for (std::size_t i = next_; i-- > 0;)
    filters_[i]->on_response_headers(resp, cb);
}

void ActiveChain::complete(const http::ResponseHead& resp) noexcept {
  for (auto& f : filters_)
    f->on_complete(resp);
}

}  // namespace turnpike::filters
