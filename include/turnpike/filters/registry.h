// Filter types by name. Each folder under src/filters/ is one type and registers itself (parser
// and builder) from a function the build generates a call to, so adding a type touches no other
// filter and no list. The config loader parses a type's block with its parser; the snapshot
// builder turns the parsed settings into the FilterConfig that makes per-request filters.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "turnpike/config/config.h"
#include "turnpike/config/reader.h"
#include "turnpike/filters/filter.h"

namespace turnpike::filters {

/// State that outlives one snapshot: rate-limit buckets, JWKS caches, Redis connections. A
/// reload that keeps a filter instance (same name, type and settings key) gets the same state
/// back; state nobody uses any more is freed with the last snapshot holding it. Built on the
/// control thread; what it holds must be safe to use from every worker.
class StateStore {
 public:
  template <typename T, typename Make>
  std::shared_ptr<T> get(const std::string& key, Make&& make) {
    std::lock_guard lock(mu_);
    auto& slot = items_[key];
    if (auto existing = std::static_pointer_cast<T>(slot.lock())) return existing;
    std::shared_ptr<T> made = make();
    slot = made;
    return made;
  }

 private:
  std::mutex mu_;  // control thread only in practice; the lock keeps tests honest
  std::map<std::string, std::weak_ptr<void>> items_;
};

/// The process-wide store (snapshots are built on the control thread).
StateStore& state_store();

/// What a builder sees.
struct BuildContext {
  const config::Config& config;
  const config::FilterInstance& instance;
  StateStore& state;
};

/// Throws std::runtime_error when the filter cannot be built (settings are already valid).
using FilterBuilder = std::shared_ptr<const FilterConfig> (*)(const config::FilterSettings& s,
                                                              BuildContext& ctx);

struct FilterType {
  std::string_view name;
  config::FilterParser parse;
  FilterBuilder build;
};

/// Start-up only.
void register_filter_type(const FilterType& type);
/// Registers every type under src/filters/ (generated). Idempotent.
void register_builtin_filter_types();

/// Builds one configured instance; throws std::runtime_error.
std::shared_ptr<const FilterConfig> build_filter(const config::Config& config,
                                                 const config::FilterInstance& instance);

/// The settings as their concrete type (the builder's own parser made them).
template <typename T>
const T& settings_as(const config::FilterSettings& s) {
  return static_cast<const T&>(s);
}

/// The FilterConfig of a type whose per-request filter needs nothing but its settings:
/// `FilterT(const SettingsT&)`. Keeps the settings alive as long as the snapshot.
template <typename FilterT, typename SettingsT>
class SettingsFilterConfig final : public FilterConfig {
 public:
  explicit SettingsFilterConfig(std::shared_ptr<const SettingsT> s) : s_(std::move(s)) {}
  std::unique_ptr<Filter> create() const override { return std::make_unique<FilterT>(*s_); }

 private:
  std::shared_ptr<const SettingsT> s_;
};

/// A FilterBuilder for such types: `register_filter_type({"x", parse, build_with<F, S>})`.
template <typename FilterT, typename SettingsT>
std::shared_ptr<const FilterConfig> build_with(const config::FilterSettings&, BuildContext& ctx) {
  return std::make_shared<SettingsFilterConfig<FilterT, SettingsT>>(
      std::static_pointer_cast<const SettingsT>(ctx.instance.settings));
}

}  // namespace turnpike::filters
