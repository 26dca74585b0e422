// The Redis client filters share (see redis_client.h). hiredis only formats commands and parses
// replies; the socket, the pipeline and every deadline are ours, on the worker's io_context.
#include "turnpike/filters/redis_client.h"

#include <array>
#include <deque>
#include <utility>

#include <hiredis/hiredis.h>
#include <openssl/sha.h>
#include <spdlog/spdlog.h>
#include <boost/asio/execution_context.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>

namespace turnpike::filters::redis {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using boost::system::error_code;

// A reply bigger than this is not one our scripts produce: the stream is out of step.
constexpr std::size_t kMaxReplyBytes = 1 << 20;

Reply convert(const redisReply& r) {
  Reply out;
  switch (r.type) {
    case REDIS_REPLY_STRING:
      out.kind = Reply::Kind::String;
      out.str.assign(r.str, r.len);
      break;
    case REDIS_REPLY_STATUS:
      out.kind = Reply::Kind::Status;
      out.str.assign(r.str, r.len);
      break;
    case REDIS_REPLY_ERROR:
      out.kind = Reply::Kind::Error;
      out.str.assign(r.str, r.len);
      break;
    case REDIS_REPLY_INTEGER:
      out.kind = Reply::Kind::Integer;
      out.integer = r.integer;
      break;
    case REDIS_REPLY_ARRAY:
      out.kind = Reply::Kind::Array;
      out.elements.reserve(r.elements);
      for (std::size_t i = 0; i < r.elements; ++i)
        out.elements.push_back(convert(*r.element[i]));
      break;
    default:
      out.kind = Reply::Kind::Nil;
      break;
  }
  return out;
}

std::string format(const std::vector<std::string>& args) {
  std::vector<const char*> argv;
  std::vector<std::size_t> lens;
  argv.reserve(args.size());
  lens.reserve(args.size());
  for (const auto& a : args) {
    argv.push_back(a.data());
    lens.push_back(a.size());
  }
  char* cmd = nullptr;
  const int n =
      redisFormatCommandArgv(&cmd, static_cast<int>(args.size()), argv.data(), lens.data());
  std::string out;
  if (n > 0 && cmd) out.assign(cmd, static_cast<std::size_t>(n));
  redisFreeCommand(cmd);
  return out;
}

class ClientImpl final : public Client {
 public:
  ClientImpl(asio::io_context& io, Options opt)
      : io_(io),
        opt_(std::move(opt)),
        sock_(io),
        connect_timer_(io),
        deadline_timer_(io),
        backoff_(opt_.backoff_min) {}

  ~ClientImpl() override {
    if (reader_) redisReaderFree(reader_);
  }

  void command(std::vector<std::string> args, Callback done) override {
    submit(format(args), std::move(done));
  }

  void eval(const Script& script, std::vector<std::string> keys, std::vector<std::string> args,
            Callback done) override {
    std::vector<std::string> argv;
    argv.reserve(3 + keys.size() + args.size());
    argv.emplace_back("EVALSHA");
    argv.push_back(script.sha1());
    argv.push_back(std::to_string(keys.size()));
    for (auto& k : keys)
      argv.push_back(std::move(k));
    for (auto& a : args)
      argv.push_back(std::move(a));
    std::string cmd = format(argv);
    // The script's text is sent only when the server does not know its digest (a restarted
    // or flushed server); then EVAL also caches it there for the next EVALSHA.
    submit(std::move(cmd), [self = std::weak_ptr<ClientImpl>(me()), &script, argv = std::move(argv),
                            done = std::move(done)](Result r) mutable {
      auto me = self.lock();
      if (me && r.ok() && r.reply.is_error() && r.reply.str.starts_with("NOSCRIPT")) {
        argv[0] = "EVAL";
        argv[1] = script.source();
        me->submit(format(argv), std::move(done));
        return;
      }
      done(std::move(r));
    });
  }

  bool connected() const noexcept override { return state_ == State::Ready; }
  std::size_t pending() const noexcept override { return waiting_.size() + inflight_.size(); }

  /// The io_context is going away: drop everything without running callbacks.
  void shutdown() noexcept {
    shut_ = true;
    ++gen_;
    error_code ignored;
    sock_.close(ignored);
    connect_timer_.cancel();
    deadline_timer_.cancel();
    waiting_.clear();
    inflight_.clear();
  }

 private:
  std::shared_ptr<ClientImpl> me() {
    return std::static_pointer_cast<ClientImpl>(shared_from_this());
  }

  enum class State : std::uint8_t { Idle, Connecting, Ready, Down };

  struct Waiting {  // queued before the connection is up
    std::string cmd;
    Callback done;
    Clock::time_point deadline;
  };
  struct InFlight {  // written (or about to be): its reply comes in order
    Callback done;
    Clock::time_point deadline;
  };

  void fail_later(Callback done, Failure f) {
    asio::post(io_, [done = std::move(done), f]() mutable { done(Result{f, {}}); });
  }

  void submit(std::string cmd, Callback done) {
    if (shut_) return;
    if (cmd.empty()) return fail_later(std::move(done), Failure::Protocol);
    if (waiting_.size() + inflight_.size() >= opt_.max_pending)
      return fail_later(std::move(done), Failure::Overloaded);
    const auto now = Clock::now();
    if (state_ == State::Down) {
      if (now < down_until_) return fail_later(std::move(done), Failure::Down);
      state_ = State::Idle;
    }
    const auto deadline = now + opt_.timeout;
    if (state_ == State::Ready) {
      out_ += cmd;
      inflight_.push_back({std::move(done), deadline});
      do_write();
    } else {
      waiting_.push_back({std::move(cmd), std::move(done), deadline});
      if (state_ == State::Idle) do_connect();
    }
    arm_timer(deadline);
  }

  void do_connect() {
    state_ = State::Connecting;
    const std::uint64_t gen = ++gen_;
    error_code ec;
    const auto addr = asio::ip::make_address(opt_.host, ec);
    if (ec) {
      asio::post(io_, [self = me(), gen] {
        if (gen == self->gen_) self->fail_connection(Failure::Down);
      });
      return;
    }
    sock_ = tcp::socket(io_);
    connect_timer_.expires_after(opt_.connect_timeout);
    connect_timer_.async_wait([self = me(), gen](error_code tec) {
      if (tec || gen != self->gen_ || self->state_ != State::Connecting) return;
      self->fail_connection(Failure::Down);
    });
    sock_.async_connect(tcp::endpoint(addr, opt_.port), [self = me(), gen](error_code cec) {
      if (gen != self->gen_) return;
      self->on_connect(cec);
    });
  }

  void on_connect(error_code ec) {
    connect_timer_.cancel();
    if (ec) return fail_connection(Failure::Down);
    error_code ignored;
    sock_.set_option(tcp::no_delay(true), ignored);
    if (reader_) redisReaderFree(reader_);
    reader_ = redisReaderCreate();
    if (!reader_) return fail_connection(Failure::Protocol);
    state_ = State::Ready;
    // AUTH and SELECT go first in the pipeline; a failure there fails the connection.
    const auto first = waiting_.empty() ? Clock::now() + opt_.timeout : waiting_.front().deadline;
    auto check = [self = std::weak_ptr<ClientImpl>(me())](Result r) {
      auto me = self.lock();
      if (me && r.ok() && r.reply.is_error()) me->fail_connection(Failure::Protocol);
    };
    if (!opt_.password.empty()) {
      out_ += format({"AUTH", opt_.password});
      inflight_.push_back({check, first});
    }
    if (opt_.database != 0) {
      out_ += format({"SELECT", std::to_string(opt_.database)});
      inflight_.push_back({check, first});
    }
    for (auto& w : waiting_) {
      out_ += w.cmd;
      inflight_.push_back({std::move(w.done), w.deadline});
    }
    waiting_.clear();
    do_write();
    do_read();
  }

  void do_write() {
    if (writing_ || out_.empty() || state_ != State::Ready) return;
    writing_ = true;
    auto buf = std::make_shared<std::string>(std::move(out_));
    out_.clear();
    asio::async_write(sock_, asio::buffer(*buf),
                      [self = me(), buf, gen = gen_](error_code ec, std::size_t) {
                        if (gen != self->gen_) return;
                        self->writing_ = false;
                        if (ec) return self->fail_connection(Failure::Down);
                        self->do_write();
                      });
  }

  void do_read() {
    sock_.async_read_some(asio::buffer(rbuf_),
                          [self = me(), gen = gen_](error_code ec, std::size_t n) {
                            if (gen != self->gen_) return;
                            if (ec) return self->fail_connection(Failure::Down);
                            self->on_read(n, gen);
                          });
  }

  void on_read(std::size_t n, std::uint64_t gen) {
    if (redisReaderFeed(reader_, rbuf_.data(), n) != REDIS_OK)
      return fail_connection(Failure::Protocol);
    for (;;) {
      void* raw = nullptr;
      if (redisReaderGetReply(reader_, &raw) != REDIS_OK) return fail_connection(Failure::Protocol);
      if (!raw) break;
      Reply reply = convert(*static_cast<redisReply*>(raw));
      freeReplyObject(raw);
      if (inflight_.empty()) return fail_connection(Failure::Protocol);  // unsolicited
      backoff_ = opt_.backoff_min;
      if (reported_down_) {
        reported_down_ = false;
        spdlog::info("redis {}:{}: answering again", opt_.host, opt_.port);
      }
      Callback done = std::move(inflight_.front().done);
      inflight_.pop_front();
      done(Result{Failure::None, std::move(reply)});
      // The callback may have failed or shut the connection (a failed AUTH).
      if (gen != gen_) return;
    }
    if (reader_->len - reader_->pos > kMaxReplyBytes) return fail_connection(Failure::Protocol);
    do_read();
  }

  // One timer for all deadlines: every command gets `timeout` from when it is queued, so the
  // queue fronts carry the earliest ones. A timer that fires early just re-arms.
  void arm_timer(Clock::time_point at) {
    if (timer_armed_) return;
    timer_armed_ = true;
    deadline_timer_.expires_at(at);
    deadline_timer_.async_wait([self = me()](error_code ec) {
      self->timer_armed_ = false;
      if (ec || self->shut_) return;
      self->on_deadline();
    });
  }

  void on_deadline() {
    const auto now = Clock::now();
    while (!waiting_.empty() && waiting_.front().deadline <= now) {
      Callback done = std::move(waiting_.front().done);
      waiting_.pop_front();
      done(Result{Failure::Timeout, {}});
    }
    // A command written but unanswered past its deadline: the server (or the path to it) is
    // stuck; later replies cannot be trusted to arrive either.
    if (!inflight_.empty() && inflight_.front().deadline <= now) fail_connection(Failure::Timeout);
    Clock::time_point next = Clock::time_point::max();
    if (!waiting_.empty()) next = waiting_.front().deadline;
    if (!inflight_.empty()) next = std::min(next, inflight_.front().deadline);
    if (next != Clock::time_point::max()) arm_timer(next);
  }

  void fail_connection(Failure f) {
    // Logged once per outage and worker, not once per reconnection attempt.
    if (!reported_down_ && !shut_ && f != Failure::ShuttingDown) {
      reported_down_ = true;
      spdlog::warn("redis {}:{}: {}; filters apply their on_redis_failure policy until it answers",
                   opt_.host, opt_.port, to_string(f));
    }
    ++gen_;
    error_code ignored;
    sock_.close(ignored);
    connect_timer_.cancel();
    writing_ = false;
    out_.clear();
    if (reader_) {
      redisReaderFree(reader_);
      reader_ = nullptr;
    }
    state_ = State::Down;
    down_until_ = Clock::now() + backoff_;
    backoff_ = std::min(backoff_ * 2, opt_.backoff_max);
    // Callbacks may queue new commands (which now fail fast): take the queues first.
    auto waiting = std::move(waiting_);
    auto inflight = std::move(inflight_);
    waiting_.clear();
    inflight_.clear();
    for (auto& p : inflight)
      p.done(Result{f, {}});
    for (auto& w : waiting)
      w.done(Result{f, {}});
  }

  asio::io_context& io_;
  Options opt_;
  tcp::socket sock_;
  asio::steady_timer connect_timer_;
  asio::steady_timer deadline_timer_;
  State state_ = State::Idle;
  std::deque<Waiting> waiting_;
  std::deque<InFlight> inflight_;
  std::string out_;
  bool writing_ = false;
  bool timer_armed_ = false;
  bool shut_ = false;
  bool reported_down_ = false;
  redisReader* reader_ = nullptr;
  std::array<char, 16 * 1024> rbuf_{};
  Clock::time_point down_until_{};
  std::chrono::milliseconds backoff_;
  std::uint64_t gen_ = 0;  // bumped by every connection attempt and teardown: stale handlers quit
};

// The connections of one io_context (one worker), made on first use and closed with it.
class ClientRegistry;
struct RegistryCache {
  asio::io_context* io = nullptr;
  ClientRegistry* registry = nullptr;
};
thread_local RegistryCache tl_cache;

class ClientRegistry final : public asio::execution_context::service {
 public:
  using key_type = ClientRegistry;
  static inline asio::execution_context::id id;

  explicit ClientRegistry(asio::execution_context& ctx) : asio::execution_context::service(ctx) {}
  ~ClientRegistry() override {
    if (tl_cache.registry == this) tl_cache = {};
  }

  std::shared_ptr<Client> get(asio::io_context& io, const Options& opt) {
    std::string built;
    const std::string& wanted = opt.id.empty() ? (built = opt.key()) : opt.id;
    for (const auto& [k, c] : clients_)
      if (k == wanted) return c;
    auto c = std::make_shared<ClientImpl>(io, opt);
    clients_.emplace_back(wanted, c);
    return c;
  }

 private:
  void shutdown() override {
    for (auto& [k, c] : clients_)
      c->shutdown();
    clients_.clear();
  }

  std::vector<std::pair<std::string, std::shared_ptr<ClientImpl>>> clients_;
};

}  // namespace

std::string_view to_string(Failure f) noexcept {
  switch (f) {
    case Failure::None:
      return "ok";
    case Failure::Timeout:
      return "redis timed out";
    case Failure::Down:
      return "redis unavailable";
    case Failure::Overloaded:
      return "redis queue full";
    case Failure::Protocol:
      return "redis protocol error";
    case Failure::ShuttingDown:
      return "shutting down";
  }
  return "redis error";
}

Options Options::from(const config::Redis& r) {
  Options o;
  o.host = r.host;
  o.port = r.port;
  o.connect_timeout = r.connect_timeout;
  o.timeout = r.timeout;
  o.password = r.password;
  o.database = r.database;
  o.id = o.key();
  return o;
}

std::string Options::key() const {
  return host + "|" + std::to_string(port) + "|" + std::to_string(database) + "|" + password + "|" +
         std::to_string(connect_timeout.count()) + "|" + std::to_string(timeout.count()) + "|" +
         std::to_string(max_pending);
}

Script::Script(std::string source) : source_(std::move(source)) {
  unsigned char md[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(source_.data()), source_.size(), md);
  static constexpr char kHex[] = "0123456789abcdef";
  for (unsigned char b : md) {
    sha1_ += kHex[b >> 4];
    sha1_ += kHex[b & 15];
  }
}

std::shared_ptr<Client> Client::for_worker(asio::io_context& io, const Options& opt) {
  if (tl_cache.io != &io) {
    auto& ctx = static_cast<asio::execution_context&>(io);
    tl_cache = {&io, &asio::use_service<ClientRegistry>(ctx)};
  }
  return tl_cache.registry->get(io, opt);
}

std::shared_ptr<Client> Client::create(asio::io_context& io, const Options& opt) {
  return std::make_shared<ClientImpl>(io, opt);
}

}  // namespace turnpike::filters::redis
