// A non-blocking Redis client for filters that keep shared state in Redis (rate_limit, quota):
// hiredis's protocol reader and command formatter over an Asio TCP socket on the worker's own
// io_context. One connection per worker per Redis server, pipelined, with a deadline on every
// command, a bound on queued commands, AUTH/SELECT on connect, and reconnection with backoff
// (while the server is down, commands fail at once instead of queueing).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "turnpike/config/config.h"

namespace boost::asio {
class io_context;
}

namespace turnpike::filters::redis {

/// One Redis reply (RESP2). Errors the server sent (`-ERR ...`) are replies, not failures.
struct Reply {
  enum class Kind : std::uint8_t { Nil, Integer, String, Status, Error, Array };
  Kind kind = Kind::Nil;
  long long integer = 0;
  std::string str;  // String, Status and Error
  std::vector<Reply> elements;

  bool is_error() const noexcept { return kind == Kind::Error; }
};

/// Why a command got no reply.
enum class Failure : std::uint8_t {
  None,
  Timeout,      // no reply within `timeout` (the connection is then dropped and re-made)
  Down,         // not connected and in reconnect backoff, or the connection failed meanwhile
  Overloaded,   // `max_pending` commands already wait for replies
  Protocol,     // the server sent something that is not RESP, or AUTH/SELECT failed
  ShuttingDown  // the worker's event loop is going away
};

std::string_view to_string(Failure f) noexcept;

/// A command's outcome: a reply, or a failure.
struct Result {
  Failure failure = Failure::None;
  Reply reply;
  bool ok() const noexcept { return failure == Failure::None; }
};

using Callback = std::function<void(Result)>;

/// Where and how to connect.
struct Options {
  std::string host;  // IP literal
  std::uint16_t port = 6379;
  std::chrono::milliseconds connect_timeout{1'000};
  std::chrono::milliseconds timeout{250};  // per command, from the moment it is queued
  std::string password;                    // AUTH when set
  std::uint32_t database = 0;              // SELECT when not 0
  std::size_t max_pending = 4'096;         // commands queued or awaiting replies
  std::chrono::milliseconds backoff_min{50};
  std::chrono::milliseconds backoff_max{2'000};

  /// key(), computed once by from(): finding the worker's connection for a request compares it
  /// rather than building key() again. Empty: computed on each lookup.
  std::string id;

  static Options from(const config::Redis& r);
  /// Identifies the server and credentials (the per-worker connection is shared by equal keys).
  std::string key() const;
};

/// A Lua script run with EVALSHA, falling back to EVAL when the server does not know it yet
/// (NOSCRIPT: a restarted or flushed server).
class Script {
 public:
  explicit Script(std::string source);
  const std::string& source() const noexcept { return source_; }
  const std::string& sha1() const noexcept { return sha1_; }

 private:
  std::string source_;
  std::string sha1_;  // lower-case hex
};

/// One connection to one Redis server, owned by one worker. Owning worker thread only.
class Client : public std::enable_shared_from_this<Client> {
 public:
  /// The worker's connection for `opt` (made on first use; lives as long as `io`). Owning
  /// worker thread only: call it with the io_context the calling thread runs.
  static std::shared_ptr<Client> for_worker(boost::asio::io_context& io, const Options& opt);
  /// A connection of its own (tests).
  static std::shared_ptr<Client> create(boost::asio::io_context& io, const Options& opt);

  virtual ~Client() = default;

  /// Sends a command (pipelined behind earlier ones). `done` runs exactly once, on this
  /// worker, never inline (always from the event loop), unless the io_context is destroyed
  /// first, in which case it is dropped without running. Connects first when needed.
  virtual void command(std::vector<std::string> args, Callback done) = 0;
  /// EVALSHA script keys args, and EVAL on a NOSCRIPT error. Same contract as command().
  virtual void eval(const Script& script, std::vector<std::string> keys,
                    std::vector<std::string> args, Callback done) = 0;
  /// True while connected (for tests and stats).
  virtual bool connected() const noexcept = 0;
  /// Commands queued or awaiting replies.
  virtual std::size_t pending() const noexcept = 0;
};

}  // namespace turnpike::filters::redis
