// The GCRA table behind `rate_limit` (exact admission counts under concurrent threads, refill,
// slot reuse) and the Redis client against a real redis-server (pipelining, EVALSHA/EVAL,
// deadlines, fail-fast while down).
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fcntl.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/io_context.hpp>

#include "filters/rate_limit/gcra_table.h"
#include "turnpike/filters/redis_client.h"

extern char** environ;

namespace turnpike::filters {
namespace {

using rate_limit::GcraTable;
using rate_limit::key_hash;

constexpr std::uint64_t kSecond = 1'000'000'000;

TEST(GcraTable, BurstAtOneInstant) {
  GcraTable t(1024, kSecond / 10, 5);  // 10/s, burst 5
  const std::uint64_t h = key_hash("c=alice");
  int admitted = 0;
  for (int i = 0; i < 20; ++i)
    admitted += t.acquire(h, 100 * kSecond).allowed;
  EXPECT_EQ(admitted, 5);
  const auto o = t.acquire(h, 100 * kSecond);
  EXPECT_FALSE(o.allowed);
  EXPECT_EQ(o.remaining, 0u);
  EXPECT_EQ(o.retry_after_ns, kSecond / 10);  // the next token
  EXPECT_EQ(o.reset_ns, kSecond / 2);         // full again after 5 intervals
}

TEST(GcraTable, RefillsAtTheRate) {
  GcraTable t(1024, kSecond / 10, 5);
  const std::uint64_t h = key_hash("k");
  std::uint64_t now = 100 * kSecond;
  int admitted = 0;
  // Ten seconds of one attempt per millisecond: burst + 10 s × 10/s.
  for (int i = 0; i <= 10'000; ++i, now += kSecond / 1000)
    admitted += t.acquire(h, now).allowed;
  EXPECT_EQ(admitted, 5 + 100);
}

TEST(GcraTable, RemainingCountsDown) {
  GcraTable t(64, kSecond, 3);
  const std::uint64_t h = key_hash("k");
  EXPECT_EQ(t.acquire(h, 50 * kSecond).remaining, 2u);
  EXPECT_EQ(t.acquire(h, 50 * kSecond).remaining, 1u);
  EXPECT_EQ(t.acquire(h, 50 * kSecond).remaining, 0u);
  EXPECT_FALSE(t.acquire(h, 50 * kSecond).allowed);
}

TEST(GcraTable, KeysAreIndependent) {
  GcraTable t(1024, kSecond, 2);
  for (int k = 0; k < 100; ++k) {
    const auto h = key_hash("ip=10.0.0." + std::to_string(k));
    EXPECT_TRUE(t.acquire(h, 10 * kSecond).allowed);
    EXPECT_TRUE(t.acquire(h, 10 * kSecond).allowed);
    EXPECT_FALSE(t.acquire(h, 10 * kSecond).allowed);
  }
}

TEST(GcraTable, ExactAcrossThreads) {
  // Eight threads hammer one key at a frozen instant: exactly `burst` pass, whatever the
  // interleaving of compare-exchanges.
  GcraTable t(4096, kSecond, 10'000);
  const std::uint64_t h = key_hash("shared");
  std::atomic<int> admitted{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&] {
      int mine = 0;
      for (int j = 0; j < 5'000; ++j)
        mine += t.acquire(h, 1'000 * kSecond).allowed;
      admitted += mine;
    });
  }
  for (auto& th : threads)
    th.join();
  EXPECT_EQ(admitted.load(), 10'000);
}

TEST(GcraTable, ExactAcrossThreadsWithRefillAndManyKeys) {
  // 1000/s with burst 100 per key, 4 threads, 32 keys, a shared simulated clock that advances
  // 1 s in total: every key admits burst + 1000 exactly.
  GcraTable t(1024, kSecond / 1000, 100);
  std::atomic<std::uint64_t> clock{500 * kSecond};
  const std::uint64_t start = clock.load();
  std::vector<std::atomic<int>> per_key(32);
  // Every key's first token at `start`, so each budget is measured from the same instant.
  for (int k = 0; k < 32; ++k)
    per_key[k] += t.acquire(key_hash("k" + std::to_string(k)), start).allowed;
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&, i] {
      for (int j = 0; j < 200'000; ++j) {
        const int k = (j + i) % 32;
        // Time only moves forward; stop at start + 1 s.
        std::uint64_t now = clock.load();
        if (now < start + kSecond && j % 4 == 0) now = clock.fetch_add(20'000) + 20'000;
        now = std::min(now, start + kSecond);
        if (t.acquire(key_hash("k" + std::to_string(k)), now).allowed) ++per_key[k];
      }
    });
  }
  for (auto& th : threads)
    th.join();
  ASSERT_GE(clock.load(), start + kSecond) << "the load did not span the second";
  for (int k = 0; k < 32; ++k)
    EXPECT_EQ(per_key[k].load(), 100 + 1'000) << "key " << k;
}

TEST(GcraTable, RefilledSlotsAreReused) {
  // A 16-slot table serves 10'000 keys over time: each key's bucket is full again a second
  // later, so its slot is free for the next one; none goes untracked.
  GcraTable t(16, kSecond, 1);
  std::uint64_t now = 10 * kSecond;
  int untracked = 0;
  for (int k = 0; k < 10'000; ++k, now += kSecond) {
    const auto o = t.acquire(key_hash("ip=" + std::to_string(k)), now);
    EXPECT_TRUE(o.allowed);
    untracked += !o.tracked;
  }
  EXPECT_EQ(untracked, 0);
}

TEST(GcraTable, FullTableAdmitsUntracked) {
  GcraTable t(16, kSecond, 1);
  int untracked = 0;
  for (int k = 0; k < 64; ++k)
    untracked += !t.acquire(key_hash("ip=" + std::to_string(k)), 10 * kSecond).tracked;
  EXPECT_EQ(untracked, 64 - 16);
}

TEST(GcraTable, KeysChosenToShareAHomeSlotStillSpreadOut) {
  // key_hash is public and stable, so a client choosing its key could find many whose hashes
  // agree in the low bits. The table places keys by a per-table seeded mix: they spread.
  GcraTable t(1024, kSecond, 1);
  std::vector<std::uint64_t> crowd;
  for (int i = 0; crowd.size() < 40 && i < 1'000'000; ++i) {
    const std::uint64_t h = key_hash("x-client=" + std::to_string(i));
    if ((h & 1023) == 7) crowd.push_back(h);
  }
  ASSERT_EQ(crowd.size(), 40u);
  int untracked = 0;
  for (const auto h : crowd)
    untracked += !t.acquire(h, 10 * kSecond).tracked;
  EXPECT_EQ(untracked, 0);
}

TEST(GcraTable, ReconciliationMovesTheBucketForward) {
  GcraTable t(64, kSecond, 10);
  const std::uint64_t h = key_hash("k");
  const std::uint64_t now = 10 * kSecond;
  const auto first = t.acquire(h, now, /*count_unsynced=*/true);
  t.acquire(h, now, true);
  std::uint64_t reported = 0;
  t.drain_unsynced(now, [&](std::size_t slot, std::uint64_t key, std::uint64_t n) {
    EXPECT_EQ(key, h);
    reported += n;
    // Another instance spent 7 more: the shared TAT is 9 intervals ahead.
    t.merge(slot, key, now + 9 * kSecond);
  });
  EXPECT_TRUE(first.fresh);  // asked Redis itself: not reported again
  EXPECT_EQ(reported, 1u);
  EXPECT_EQ(first.slot, t.acquire(h, now).slot);  // the 10th token
  EXPECT_FALSE(t.acquire(h, now).allowed);
}

TEST(KeyHash, StableAndNonZero) {
  EXPECT_EQ(key_hash("c=alice\x1f"), key_hash(std::string("c=alice\x1f")));
  EXPECT_NE(key_hash("a"), key_hash("b"));
  EXPECT_NE(key_hash(""), 0u);
}

// ---- Redis client, against a real server --------------------------------------------------

sockaddr_in loopback(std::uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  return a;
}

// A port below the kernel's ephemeral range, claimed with an flock on a file in the same directory
// the integration harness uses (tests/integration/harness.py free_port), so that concurrent test
// processes never pick the same one; the lock is held until this process exits.
std::uint16_t free_port() {
  static const char* const kDir = "/tmp/turnpike-test-ports";
  ::mkdir(kDir, 0777);
  const auto first = static_cast<unsigned>(::getpid()) * 7919u;
  for (unsigned i = 0; i < 12000; ++i) {
    const auto port = static_cast<std::uint16_t>(20000 + (first + i) % 12000);
    const std::string path = std::string(kDir) + "/" + std::to_string(port);
    const int lock = ::open(path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0666);
    if (lock < 0) continue;
    if (::flock(lock, LOCK_EX | LOCK_NB) != 0) {
      ::close(lock);
      continue;
    }
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const sockaddr_in a = loopback(port);
    const bool ok = ::bind(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) == 0;
    ::close(fd);
    if (!ok) {
      ::close(lock);
      continue;
    }
    return port;  // `lock` stays open (and locked) for the life of the process
  }
  ADD_FAILURE() << "no free port in 20000-32000";
  return 0;
}

bool port_open(std::uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  const sockaddr_in a = loopback(port);
  const bool ok = ::connect(fd, reinterpret_cast<const sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

class RedisServer {
 public:
  explicit RedisServer(std::uint16_t port, const char* password = nullptr) : port_(port) {
    std::vector<std::string> args{"/usr/bin/redis-server",
                                  "--port",
                                  std::to_string(port),
                                  "--bind",
                                  "127.0.0.1",
                                  "--save",
                                  "",
                                  "--appendonly",
                                  "no"};
    if (password) {
      args.emplace_back("--requirepass");
      args.emplace_back(password);
    }
    std::vector<char*> argv;
    for (auto& a : args)
      argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    if (::posix_spawn(&pid_, argv[0], &fa, nullptr, argv.data(), environ) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&fa);
    for (int i = 0; i < 200 && pid_ > 0 && !port_open(port_); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ~RedisServer() { stop(); }
  bool running() const { return pid_ > 0 && port_open(port_); }
  void stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

 private:
  std::uint16_t port_;
  pid_t pid_ = -1;
};

redis::Options options(std::uint16_t port) {
  redis::Options o;
  o.host = "127.0.0.1";
  o.port = port;
  o.timeout = std::chrono::milliseconds(500);
  o.connect_timeout = std::chrono::milliseconds(500);
  return o;
}

// Runs the loop until `done` or 5 s.
void run_until(boost::asio::io_context& io, const bool& done) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  io.restart();
  while (!done && std::chrono::steady_clock::now() < end) {
    io.run_for(std::chrono::milliseconds(10));
    io.restart();
  }
}

TEST(RedisClient, PipelinesInOrderAndRunsScripts) {
  if (::access("/usr/bin/redis-server", X_OK) != 0) GTEST_SKIP() << "no redis-server";
  const auto port = free_port();
  RedisServer server(port);
  ASSERT_TRUE(server.running());
  boost::asio::io_context io;
  auto c = redis::Client::create(io, options(port));
  std::vector<long long> got;
  bool done = false;
  for (int i = 0; i < 100; ++i) {
    c->command({"INCR", "n"}, [&](redis::Result r) {
      ASSERT_TRUE(r.ok());
      got.push_back(r.reply.integer);
    });
  }
  // A script the server has never seen: EVALSHA fails with NOSCRIPT, EVAL runs it.
  static const redis::Script script("return {tonumber(ARGV[1]) * 2, KEYS[1]}");
  redis::Reply scripted;
  c->eval(script, {"key"}, {"21"}, [&](redis::Result r) {
    ASSERT_TRUE(r.ok());
    scripted = r.reply;
  });
  c->command({"GET", "missing"}, [&](redis::Result r) {
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r.reply.kind, redis::Reply::Kind::Nil);
    done = true;
  });
  run_until(io, done);
  ASSERT_TRUE(done);
  ASSERT_EQ(got.size(), 100u);
  for (int i = 0; i < 100; ++i)
    EXPECT_EQ(got[i], i + 1);
  // The NOSCRIPT fallback answers after the GET queued behind the first EVALSHA; wait for it.
  bool scripted_done = false;
  c->command({"PING"}, [&](redis::Result) { scripted_done = true; });
  run_until(io, scripted_done);
  ASSERT_EQ(scripted.kind, redis::Reply::Kind::Array);
  ASSERT_EQ(scripted.elements.size(), 2u);
  EXPECT_EQ(scripted.elements[0].integer, 42);
  EXPECT_EQ(scripted.elements[1].str, "key");
  // Known now: EVALSHA alone.
  bool again = false;
  c->eval(script, {"k2"}, {"5"}, [&](redis::Result r) {
    ASSERT_TRUE(r.ok());
    ASSERT_EQ(r.reply.kind, redis::Reply::Kind::Array);
    EXPECT_EQ(r.reply.elements[0].integer, 10);
    again = true;
  });
  run_until(io, again);
  EXPECT_TRUE(again);
}

TEST(RedisClient, AuthOnConnect) {
  if (::access("/usr/bin/redis-server", X_OK) != 0) GTEST_SKIP() << "no redis-server";
  const auto port = free_port();
  RedisServer server(port, "s3cret");
  ASSERT_TRUE(server.running());
  boost::asio::io_context io;
  auto opt = options(port);
  opt.password = "s3cret";
  opt.database = 3;
  auto c = redis::Client::create(io, opt);
  bool done = false;
  c->command({"SET", "x", "1"}, [&](redis::Result r) {
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(r.reply.kind, redis::Reply::Kind::Status) << r.reply.str;
    done = true;
  });
  run_until(io, done);
  EXPECT_TRUE(done);
  // A wrong password fails the connection (not just one command).
  opt.password = "wrong";
  auto bad = redis::Client::create(io, opt);
  bool failed = false;
  bad->command({"PING"}, [&](redis::Result r) {
    EXPECT_FALSE(r.ok());
    failed = true;
  });
  run_until(io, failed);
  EXPECT_TRUE(failed);
}

TEST(RedisClient, DownFailsFastAndRecovers) {
  if (::access("/usr/bin/redis-server", X_OK) != 0) GTEST_SKIP() << "no redis-server";
  const auto port = free_port();
  boost::asio::io_context io;
  auto opt = options(port);
  opt.backoff_min = std::chrono::milliseconds(100);
  auto c = redis::Client::create(io, opt);
  // Nothing listens: connection refused.
  redis::Failure first = redis::Failure::None;
  bool done = false;
  c->command({"PING"}, [&](redis::Result r) {
    first = r.failure;
    done = true;
  });
  run_until(io, done);
  EXPECT_EQ(first, redis::Failure::Down);
  // In backoff: fails without trying, from the event loop (never inline).
  bool inline_call = true;
  bool fast = false;
  c->command({"PING"}, [&](redis::Result r) {
    EXPECT_EQ(r.failure, redis::Failure::Down);
    EXPECT_FALSE(inline_call);
    fast = true;
  });
  inline_call = false;
  run_until(io, fast);
  EXPECT_TRUE(fast);
  RedisServer server(port);
  ASSERT_TRUE(server.running());
  std::this_thread::sleep_for(std::chrono::milliseconds(250));  // past the backoff
  bool back = false;
  c->command({"PING"}, [&](redis::Result r) {
    EXPECT_TRUE(r.ok());
    EXPECT_EQ(r.reply.str, "PONG");
    back = true;
  });
  run_until(io, back);
  EXPECT_TRUE(back);
}

TEST(RedisClient, DeadlineWhenTheServerNeverAnswers) {
  // A listener that accepts and never replies (the kernel completes the handshake).
  const int lfd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(lfd, 16), 0);
  socklen_t len = sizeof a;
  ::getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &len);
  boost::asio::io_context io;
  auto opt = options(ntohs(a.sin_port));
  opt.timeout = std::chrono::milliseconds(100);
  auto c = redis::Client::create(io, opt);
  const auto start = std::chrono::steady_clock::now();
  int timeouts = 0;
  bool done = false;
  for (int i = 0; i < 3; ++i) {
    c->command({"PING"}, [&](redis::Result r) {
      timeouts += r.failure == redis::Failure::Timeout;
      done = timeouts == 3;
    });
  }
  run_until(io, done);
  const auto took = std::chrono::steady_clock::now() - start;
  ::close(lfd);
  EXPECT_EQ(timeouts, 3);
  EXPECT_LT(took, std::chrono::milliseconds(1'000));
  EXPECT_EQ(c->pending(), 0u);
}

TEST(RedisClient, BoundedQueue) {
  const int lfd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(lfd, 16), 0);
  socklen_t len = sizeof a;
  ::getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &len);
  boost::asio::io_context io;
  auto opt = options(ntohs(a.sin_port));
  opt.timeout = std::chrono::milliseconds(100);
  opt.max_pending = 10;
  auto c = redis::Client::create(io, opt);
  int overloaded = 0;
  int total = 0;
  for (int i = 0; i < 15; ++i) {
    c->command({"PING"}, [&](redis::Result r) {
      overloaded += r.failure == redis::Failure::Overloaded;
      ++total;
    });
  }
  EXPECT_EQ(c->pending(), 10u);
  bool done = false;
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(3);
  while (total < 15 && std::chrono::steady_clock::now() < end) {
    io.run_for(std::chrono::milliseconds(10));
    io.restart();
  }
  (void)done;
  ::close(lfd);
  EXPECT_EQ(total, 15);
  EXPECT_EQ(overloaded, 5);
}

}  // namespace
}  // namespace turnpike::filters
