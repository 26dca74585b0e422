// The key set a `jwt` filter fetches from an identity provider's JWKS URL through an upstream
// cluster. One object per filter instance and source, kept in the StateStore so it survives
// reloads that keep the source, and shared by every worker: the current KeySet is published
// (an atomic shared_ptr plus a version each worker compares with its own copy, so the request
// path takes no lock), at most one fetch is in flight, and refreshes are rate-limited so that
// tokens with forged kids cannot make the gateway hammer the identity provider. A failed
// refresh keeps the last good key set.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "filters/jwt/jwk.h"
#include "turnpike/filters/filter.h"

namespace boost::asio {
class io_context;
}

namespace turnpike::filters::jwt {

/// A request waiting for a fetch; releasing the last reference cancels the wait.
class Waiter {
 public:
  virtual ~Waiter() = default;
};

class RemoteJwks : public std::enable_shared_from_this<RemoteJwks> {
 public:
  struct Source {
    std::string cluster;
    std::string path;
    std::string host;
  };
  /// From the current snapshot's settings (may change on reload; the cache stays).
  struct Timing {
    std::chrono::milliseconds refresh_interval{600'000};
    std::chrono::milliseconds min_refresh_interval{30'000};
    std::chrono::milliseconds timeout{5'000};
  };
  static constexpr unsigned kMaxWorkers = 1024;          // config: workers 1..1024
  static constexpr std::size_t kMaxBytes = 1024 * 1024;  // a JWKS document's bound

  explicit RemoteJwks(Source source);
  ~RemoteJwks();

  /// This worker's view of the newest key set (null before the first good fetch) and its
  /// version (0: none). Owning worker only; lock-free.
  const KeySet* keys(StreamCallbacks& cb, std::uint64_t& version);

  /// Starts a background refresh when the refresh interval (or the answer's max-age) has
  /// passed. Never waits.
  void maybe_refresh(StreamCallbacks& cb, const Timing& t);

  /// Fetches ended so far (for wait()).
  std::uint64_t completed() const noexcept { return completed_.load(); }

  enum class Need : std::uint8_t { NoKeys, UnknownKid };
  /// Asks for a fetch now: true when one is in flight afterwards (started here or already
  /// running), so the caller can wait(); false when the rate limit refuses (an unknown kid
  /// within min_refresh_interval of the last fetch). `done` of the fetch may run inline.
  bool request_fetch(StreamCallbacks& cb, const Timing& t, Need need);

  /// Calls `done` once, on this worker, when a fetch ends after `seen` = completed() was read,
  /// or at `timeout`, whichever is first; never after the returned Waiter is released. Never
  /// inline.
  std::shared_ptr<Waiter> wait(StreamCallbacks& cb, std::uint64_t seen,
                               std::chrono::milliseconds timeout, std::function<void()> done);

  /// Fetches started so far.
  std::uint64_t fetches_started() const noexcept { return started_.load(); }

 private:
  struct Slot;
  struct WaiterImpl;
  using Clock = std::chrono::steady_clock;
  static std::int64_t now_ns() noexcept;

  bool try_begin(std::int64_t now, const Timing& t);
  void start_fetch(StreamCallbacks& cb, const Timing& t);
  void on_fetched(FetchResult r, const Timing& t);
  void wake(unsigned worker);
  Slot& slot(StreamCallbacks& cb);

  const Source source_;
  std::atomic<std::shared_ptr<const KeySet>> current_;
  std::atomic<std::uint64_t> version_{0};
  std::atomic<bool> fetching_{false};
  std::atomic<bool> failing_{false};  // the last fetch failed (logged once until one succeeds)
  std::atomic<std::int64_t> fetch_started_ns_{0};  // the last fetch's start (0: never)
  std::atomic<std::int64_t> next_refresh_ns_{0};
  std::atomic<std::uint64_t> completed_{0};
  std::atomic<std::uint64_t> started_{0};
  std::unique_ptr<Slot[]> slots_;
};

}  // namespace turnpike::filters::jwt
