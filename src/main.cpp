// turnpike: argument parsing and start-up. Everything else lives in the modules.
#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <boost/url/parse.hpp>

#include "core/server.h"
#include "turnpike/config/config.h"
#include "turnpike/filters/registry.h"
#include "turnpike/router/route_table.h"

namespace {

constexpr const char* kDefaultConfig = "/etc/turnpike/turnpike.yaml";

void usage(std::FILE* out) {
  std::fprintf(out,
               "Usage:\n"
               "  turnpike [-c FILE]                       run the gateway (default config %s)\n"
               "  turnpike check -c FILE                   validate FILE, print every error\n"
               "  turnpike explain -c FILE METHOD URL [-H 'Name: value']...\n"
               "                                           show which route serves a request\n"
               "  turnpike --version | --help\n"
               "\n"
               "Signals: SIGTERM/SIGINT drain in-flight requests (drain_timeout) and exit 0.\n"
               "Docs: docs/configuration.md, docs/operations.md\n",
               kDefaultConfig);
}

// Loads a config, printing errors and warnings to stderr. Returns nullopt on errors.
std::optional<turnpike::config::Config> load(const std::string& path) {
  auto result = turnpike::config::load_file(path);
  for (const auto& w : result.warnings)
    std::fprintf(stderr, "%s\n", w.to_string().c_str());
  for (const auto& e : result.errors)
    std::fprintf(stderr, "%s\n", e.to_string().c_str());
  if (!result.errors.empty()) {
    std::fprintf(stderr, "%s: %zu error%s; configuration rejected\n", path.c_str(),
                 result.errors.size(), result.errors.size() == 1 ? "" : "s");
    return std::nullopt;
  }
  return std::move(result.config);
}

int cmd_explain(const std::string& path, const std::vector<std::string>& args) {
  std::vector<std::pair<std::string, std::string>> headers;
  std::vector<std::string> positional;
  for (std::size_t i = 0; i < args.size(); ++i) {
    if (args[i] == "-H" && i + 1 < args.size()) {
      const std::string& h = args[++i];
      auto colon = h.find(':');
      if (colon == std::string::npos) {
        std::fprintf(stderr, "explain: bad header '%s' (want 'Name: value')\n", h.c_str());
        return 2;
      }
      std::string v = h.substr(colon + 1);
      while (!v.empty() && v.front() == ' ')
        v.erase(0, 1);
      headers.emplace_back(h.substr(0, colon), v);
    } else {
      positional.push_back(args[i]);
    }
  }
  if (positional.size() != 2) {
    std::fprintf(stderr, "explain: want METHOD URL, e.g. GET http://api.example.com/users/7\n");
    return 2;
  }
  auto url = boost::urls::parse_uri_reference(positional[1]);
  if (!url) {
    std::fprintf(stderr, "explain: bad URL '%s'\n", positional[1].c_str());
    return 2;
  }
  std::string authority = url->has_authority() ? std::string(url->encoded_host_and_port()) : "";
  std::string target = url->encoded_path().empty() ? "/" : std::string(url->encoded_path());
  if (url->has_query()) target += "?" + std::string(url->encoded_query());
  auto cfg = load(path);
  if (!cfg) return 1;
  const turnpike::router::RouteTable routes(*cfg);
  std::string error;
  auto j = routes.explain(positional[0], authority, target, headers, error);
  if (!error.empty()) {
    std::fprintf(stderr, "explain: %s\n", error.c_str());
    return 2;
  }
  std::printf("%s\n", j.dump(2).c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  auto logger = spdlog::stderr_color_mt("turnpike");
  spdlog::set_default_logger(logger);
  spdlog::set_pattern("%Y-%m-%dT%H:%M:%S.%e%z [%l] %v");
  turnpike::filters::register_builtin_filter_types();

  std::vector<std::string> args(argv + 1, argv + argc);
  std::string command = "run";
  std::string config_path = kDefaultConfig;
  std::vector<std::string> rest;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--version" || a == "-v") {
      std::printf("turnpike %s\n", TP_VERSION);
      return 0;
    }
    if (a == "--help" || a == "-h") {
      usage(stdout);
      return 0;
    }
    if (a == "-c" || a == "--config") {
      if (i + 1 >= args.size()) {
        std::fprintf(stderr, "%s needs a file name\n", a.c_str());
        usage(stderr);
        return 2;
      }
      config_path = args[++i];
    } else if (i == 0 && (a == "check" || a == "explain" || a == "run")) {
      command = a;
    } else if (command == "explain") {
      rest.push_back(a);
    } else {
      std::fprintf(stderr, "unknown argument '%s'\n", a.c_str());
      usage(stderr);
      return 2;
    }
  }

  if (command == "check") {
    auto cfg = load(config_path);
    if (!cfg) return 1;
    std::printf("%s: configuration is valid\n", config_path.c_str());
    return 0;
  }
  if (command == "explain") return cmd_explain(config_path, rest);

  // A write to a pipe or socket whose reader is gone (access_log: stdout into a pipe, a peer
  // that reset) must fail with EPIPE where it happens, not end the process.
  std::signal(SIGPIPE, SIG_IGN);
  auto cfg = load(config_path);
  if (!cfg) return 1;
  spdlog::info("turnpike {} starting with {}", TP_VERSION, config_path);
  return turnpike::core::run_server(std::move(*cfg));
}
