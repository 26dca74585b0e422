#include "turnpike/filters/registry.h"

#include <stdexcept>

namespace turnpike::filters {

namespace {
std::map<std::string, FilterBuilder, std::less<>>& builders() {
  static std::map<std::string, FilterBuilder, std::less<>> table;
  return table;
}
}  // namespace

StateStore& state_store() {
  static StateStore store;
  return store;
}

void register_filter_type(const FilterType& type) {
  config::register_filter_parser(type.name, type.parse);
  builders()[std::string(type.name)] = type.build;
}

std::shared_ptr<const FilterConfig> build_filter(const config::Config& config,
                                                 const config::FilterInstance& instance) {
  const auto it = builders().find(instance.type);
  if (it == builders().end() || !instance.settings)
    throw std::runtime_error("filter '" + instance.name + "': unknown type '" + instance.type +
                             "'");
  BuildContext ctx{config, instance, state_store()};
  return it->second(*instance.settings, ctx);
}

}  // namespace turnpike::filters
