#include "support/deadline.h"

#include <atomic>
#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include <boost/asio/execution_context.hpp>
#include <boost/asio/steady_timer.hpp>

namespace turnpike::support {

namespace asio = boost::asio;
using Clock = Deadline::Clock;

// One per io_context: every Deadline made with one of its executors. A binary min-heap of
// (fire time, deadline), each deadline knowing its slot, so push, decrease and remove are
// O(log n) with no allocation once the vector has grown; one steady_timer armed for the top.
// The timer is re-armed only when a new entry is earlier than what it waits for; an entry
// removed from the top leaves the timer as it is, and the early wake-up finds nothing due.
class DeadlineQueue final : public asio::execution_context::service {
 public:
  static inline asio::execution_context::id id;  // NOLINT: Asio's service identity

  explicit DeadlineQueue(asio::execution_context& ctx) : asio::execution_context::service(ctx) {}

  ~DeadlineQueue() override { epoch.fetch_add(1, std::memory_order_release); }

  // Bumped whenever a queue goes away, so that a thread's cached (context -> queue) entry is
  // never trusted for a new context that happens to reuse a destroyed one's address.
  static inline std::atomic<std::uint64_t> epoch{0};

  // The timer is made with the first executor a Deadline brings, not in the constructor (a
  // service gets only the execution_context), and goes in shutdown(): before the services it
  // uses are destroyed, whatever order they were created in.
  void attach(const asio::any_io_executor& ex) {
    if (!timer_ && !shut_down_) timer_.emplace(ex);
  }

  void push(Deadline* d, Clock::time_point at) {
    d->key_ = at;
    d->slot_ = heap_.size();
    heap_.push_back(d);
    up(d->slot_);
    if (d->slot_ == 0) arm(at);
  }

  void decrease(Deadline* d, Clock::time_point at) {
    d->key_ = at;
    up(d->slot_);
    if (d->slot_ == 0) arm(at);
  }

  void remove(Deadline* d) noexcept {
    const std::size_t i = d->slot_;
    d->slot_ = Deadline::kNone;
    Deadline* last = heap_.back();
    heap_.pop_back();
    if (last == d) return;
    place(i, last);
    if (i > 0 && last->key_ < heap_[(i - 1) / 2]->key_) {
      up(i);
    } else {
      down(i);
    }
  }

 private:
  void shutdown() override {
    shut_down_ = true;
    timer_.reset();  // pending waits are abandoned with the context's other operations
  }

  void place(std::size_t i, Deadline* d) noexcept {
    heap_[i] = d;
    d->slot_ = i;
  }

  void up(std::size_t i) noexcept {
    Deadline* d = heap_[i];
    while (i > 0) {
      const std::size_t parent = (i - 1) / 2;
      if (!(d->key_ < heap_[parent]->key_)) break;
      place(i, heap_[parent]);
      i = parent;
    }
    place(i, d);
  }

  void down(std::size_t i) noexcept {
    Deadline* d = heap_[i];
    const std::size_t n = heap_.size();
    for (;;) {
      std::size_t child = 2 * i + 1;
      if (child >= n) break;
      if (child + 1 < n && heap_[child + 1]->key_ < heap_[child]->key_) ++child;
      if (!(heap_[child]->key_ < d->key_)) break;
      place(i, heap_[child]);
      i = child;
    }
    place(i, d);
  }

  void arm(Clock::time_point at) {
    if ((armed_ && armed_at_ <= at) || !timer_) return;
    armed_ = true;
    armed_at_ = at;
    timer_->expires_at(at);  // a wait already pending completes with operation_aborted
    timer_->async_wait([this](const boost::system::error_code& ec) {
      if (ec != asio::error::operation_aborted) on_timer();
    });
  }

  void on_timer() {
    // A completion already queued when arm() moved the timer also lands here: harmless, it
    // fires what is due and re-arms.
    armed_ = false;
    const auto now = Clock::now();
    while (!heap_.empty() && heap_.front()->key_ <= now) {
      Deadline* d = heap_.front();
      remove(d);
      d->fire(now);  // may push, move or remove any entry, this one included
    }
    if (!heap_.empty()) arm(heap_.front()->key_);
  }

  std::optional<asio::steady_timer> timer_;
  std::vector<Deadline*> heap_;
  Clock::time_point armed_at_{};
  bool armed_ = false;
  bool shut_down_ = false;
};

namespace {

// The queue of the executor's context, looked up in Asio's service registry (a mutex and a
// type comparison) only when the thread has not seen that context before.
DeadlineQueue& queue_for(const asio::any_io_executor& ex) {
  struct Cached {
    asio::execution_context* ctx = nullptr;
    DeadlineQueue* queue = nullptr;
    std::uint64_t epoch = 0;
  };
  thread_local Cached cached;
  auto& ctx = asio::query(ex, asio::execution::context);
  const auto epoch = DeadlineQueue::epoch.load(std::memory_order_acquire);
  if (cached.ctx != &ctx || cached.epoch != epoch || cached.queue == nullptr) {
    cached.queue = &asio::use_service<DeadlineQueue>(ctx);
    cached.queue->attach(ex);
    cached.ctx = &ctx;
    cached.epoch = epoch;
  }
  return *cached.queue;
}

}  // namespace

Deadline::Deadline(const asio::any_io_executor& ex) : queue_(queue_for(ex)) {}

Deadline::~Deadline() {
  if (slot_ != kNone) queue_.remove(this);
}

void Deadline::schedule(Clock::time_point t) {
  if (slot_ == kNone) {
    queue_.push(this, t);
  } else {
    queue_.decrease(this, t);
  }
}

void Deadline::unschedule() noexcept {
  queue_.remove(this);
}

void Deadline::fire(Clock::time_point now) {
  if (deadline_ == Clock::time_point::max()) return;  // cleared since it was queued
  if (now < deadline_) {
    queue_.push(this, deadline_);  // moved later since it was queued: wait for the real one
    return;
  }
  expired_ = true;
  deadline_ = Clock::time_point::max();
  if (on_expire_) on_expire_();
}

}  // namespace turnpike::support
