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

Status ActiveChain::run_response(http::ResponseHead& resp, StreamCallbacks& cb) {
  if (!responding_) {
    responding_ = true;
    resp_next_ = next_;
  }
  while (resp_next_ > 0) {
    Filter& f = *filters_[--resp_next_];
    if (f.on_response_headers(resp, cb) == Status::Stop) return Status::Stop;
  }
  return Status::Continue;
}

void ActiveChain::cancel_suspended() noexcept {
  if (responding_) {
    // run_response already moved past the suspended filter (at resp_next_).
    if (resp_next_ < filters_.size()) filters_[resp_next_]->on_destroy();
  } else if (next_ > 0) {
    filters_[next_ - 1]->on_destroy();
    --next_;
  }
}

void ActiveChain::complete(const http::ResponseHead& resp) noexcept {
  for (auto& f : filters_)
    f->on_complete(resp);
}

}  // namespace turnpike::filters
