// turnpike-client: a Boost.Beast HTTP/1.1 client used by the integration tests to drive
// Turnpike the way a real client library would: N requests over one keep-alive connection,
// optionally pipelined K at a time. Prints a JSON summary on stdout; exit status 0 when every
// response arrived (whatever its status), 1 otherwise.
//
//   turnpike-client --host 127.0.0.1 --port 8080 --path /users/7 --requests 10000 [--pipeline 8]
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <string>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>

namespace asio = boost::asio;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;

int main(int argc, char** argv) {
  std::string host = "127.0.0.1";
  std::string port = "8080";
  std::string path = "/";
  std::string host_header;
  long requests = 1;
  long pipeline = 1;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i];
    std::string v = argv[i + 1];
    if (k == "--host")
      host = v;
    else if (k == "--port")
      port = v;
    else if (k == "--path")
      path = v;
    else if (k == "--host-header")
      host_header = v;
    else if (k == "--requests")
      requests = std::atol(v.c_str());
    else if (k == "--pipeline")
      pipeline = std::max(1L, std::atol(v.c_str()));
    else {
      std::fprintf(stderr, "unknown option %s\n", k.c_str());
      return 2;
    }
  }
  if (host_header.empty()) host_header = host + ":" + port;

  asio::io_context io;
  tcp::socket socket(io);
  std::map<unsigned, long> statuses;
  long received = 0;
  std::string error;
  const auto start = std::chrono::steady_clock::now();
  try {
    tcp::resolver resolver(io);
    asio::connect(socket, resolver.resolve(host, port));
    boost::beast::flat_buffer buffer;
    bhttp::request<bhttp::empty_body> req{bhttp::verb::get, path, 11};
    req.set(bhttp::field::host, host_header);
    req.set(bhttp::field::user_agent, "turnpike-client");
    while (received < requests) {
      long batch = std::min(pipeline, requests - received);
      for (long i = 0; i < batch; ++i)
        bhttp::write(socket, req);
      for (long i = 0; i < batch; ++i) {
        bhttp::response<bhttp::string_body> res;
        bhttp::read(socket, buffer, res);
        ++statuses[res.result_int()];
        ++received;
        if (!res.keep_alive() && received < requests) throw std::runtime_error("server closed");
      }
    }
  } catch (const std::exception& e) {
    error = e.what();
  }
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  std::printf("{\"requests\":%ld,\"received\":%ld,\"elapsed_ms\":%.1f,\"statuses\":{", requests,
              received, ms);
  bool first = true;
  for (const auto& [code, n] : statuses) {
    std::printf("%s\"%u\":%ld", first ? "" : ",", code, n);
    first = false;
  }
  std::printf("},\"error\":\"%s\"}\n", error.c_str());
  return received == requests ? 0 : 1;
}
