// Tokens a worker verified recently, so a client that sends the same token on every request
// costs one hash lookup instead of a signature check. One bounded LRU per worker (entries and
// bytes), keyed by the whole token; an entry ends at the token's exp (plus the clock skew) and
// when the key set it was verified with changes. Owning worker only: no locks.
#pragma once

#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "filters/jwt/verify.h"

namespace turnpike::filters::jwt {

class TokenCache {
 public:
  struct Entry {
    std::string token;
    Identity identity;
    std::int64_t expires_at = 0;  // unix seconds
    std::uint64_t key_version = 0;
    std::size_t bytes = 0;
  };

  TokenCache(std::size_t max_entries, std::size_t max_bytes)
      : max_entries_(max_entries), max_bytes_(max_bytes) {}

  /// The entry for `token` if still valid at `now` with key set `key_version`.
  const Entry* find(std::string_view token, std::int64_t now, std::uint64_t key_version) {
    const auto it = index_.find(token);
    if (it == index_.end()) return nullptr;
    const auto node = it->second;
    if (node->expires_at <= now || node->key_version != key_version) {
      erase(it);
      return nullptr;
    }
    lru_.splice(lru_.begin(), lru_, node);
    return &*node;
  }

  void insert(std::string token, Identity identity, std::int64_t expires_at,
              std::uint64_t key_version) {
    std::size_t bytes = 256 + token.size();
    for (const auto& [k, v] : identity.claims)
      bytes += k.size() + v.size() + 64;
    for (const auto& [k, v] : identity.forwarded)
      bytes += k.size() + v.size() + 64;
    for (const auto& g : identity.groups)
      bytes += g.size() + 32;
    for (const auto& s : identity.scopes)
      bytes += s.size() + 32;
    bytes += identity.consumer.size();
    if (bytes > max_bytes_ / 4 || max_entries_ == 0) return;  // never let one token dominate
    if (const auto it = index_.find(token); it != index_.end()) erase(it);
    while (!lru_.empty() && (index_.size() >= max_entries_ || bytes_ + bytes > max_bytes_))
      erase(index_.find(std::string_view(lru_.back().token)));
    lru_.push_front(Entry{std::move(token), std::move(identity), expires_at, key_version, bytes});
    // The key views the token inside its list node, which never moves.
    index_.emplace(std::string_view(lru_.front().token), lru_.begin());
    bytes_ += bytes;
  }

  std::size_t size() const noexcept { return index_.size(); }

 private:
  using List = std::list<Entry>;
  using Index = std::unordered_map<std::string_view, List::iterator>;

  void erase(Index::iterator it) {
    const auto node = it->second;
    bytes_ -= node->bytes;
    index_.erase(it);
    lru_.erase(node);
  }

  std::size_t max_entries_;
  std::size_t max_bytes_;
  std::size_t bytes_ = 0;
  List lru_;
  Index index_;
};

/// One TokenCache per worker, made by that worker on first use.
class TokenCaches {
 public:
  static constexpr unsigned kMaxWorkers = 1024;  // config: workers 1..1024
  TokenCaches(std::size_t max_entries, std::size_t max_bytes)
      : max_entries_(max_entries), max_bytes_(max_bytes), slots_(kMaxWorkers) {}

  TokenCache* for_worker(unsigned worker) {
    if (worker >= slots_.size()) return nullptr;
    auto& slot = slots_[worker];
    if (!slot) slot = std::make_unique<TokenCache>(max_entries_, max_bytes_);
    return slot.get();
  }

 private:
  std::size_t max_entries_;
  std::size_t max_bytes_;
  std::vector<std::unique_ptr<TokenCache>> slots_;
};

}  // namespace turnpike::filters::jwt
