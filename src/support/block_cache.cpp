#include "support/block_cache.h"

#include <algorithm>
#include <array>

namespace turnpike::support {

namespace {

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kCache = false;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kCache = false;
#else
constexpr bool kCache = true;
#endif
#else
constexpr bool kCache = true;
#endif

// Classes: (1 KiB, 4 KiB] in 256-byte steps (connection objects, request state), then 8, 16, 32
// and 64 KiB (buffers).
constexpr std::size_t kSmallest = 1024;
constexpr std::size_t kStep = 256;
constexpr std::size_t kStepped = 12;  // up to 4 KiB
constexpr std::size_t kClasses = kStepped + 4;
constexpr std::size_t kLargest = 64 * 1024;

constexpr std::size_t class_of(std::size_t size) noexcept {
  if (size <= 4096) return (size - kSmallest - 1) / kStep;
  if (size <= 8192) return kStepped;
  if (size <= 16384) return kStepped + 1;
  if (size <= 32768) return kStepped + 2;
  return kStepped + 3;
}

constexpr std::size_t class_size(std::size_t c) noexcept {
  return c < kStepped ? kSmallest + kStep * (c + 1) : std::size_t{8192} << (c - kStepped);
}

static_assert(class_of(1025) == 0 && class_size(0) == 1280);
static_assert(class_of(4096) == kStepped - 1 && class_size(kStepped - 1) == 4096);
static_assert(class_of(16384) == kStepped + 1 && class_size(kStepped + 1) == 16384);
static_assert(class_of(kLargest) == kClasses - 1 && class_size(kClasses - 1) == kLargest);

struct Node {
  Node* next;
};

struct FreeList {
  Node* head = nullptr;
  std::size_t count = 0;
};

// Trivially destructible, so still usable while other thread_local objects are destroyed at
// thread exit; the Drain below empties it and marks it closed.
struct Lists {
  std::array<FreeList, kClasses> lists{};
  bool closed = false;
};
thread_local Lists t_lists;

struct Drain {
  bool armed = false;
  ~Drain() {
    for (std::size_t c = 0; c < kClasses; ++c) {
      Node* n = t_lists.lists[c].head;
      while (n) {
        Node* next = n->next;
        ::operator delete(n, class_size(c));
        n = next;
      }
      t_lists.lists[c] = FreeList{};
    }
    t_lists.closed = true;
  }
};
thread_local Drain t_drain;

constexpr std::size_t max_free(std::size_t c) noexcept {
  return std::max<std::size_t>(4, kBlockClassBytes / class_size(c));
}

}  // namespace

void* block_allocate(std::size_t size) {
  if (!kCache || size <= kSmallest || size > kLargest) return ::operator new(size);
  const std::size_t c = class_of(size);
  FreeList& l = t_lists.lists[c];
  if (Node* n = l.head) {
    l.head = n->next;
    --l.count;
    return n;
  }
  return ::operator new(class_size(c));
}

void block_deallocate(void* p, std::size_t size) noexcept {
  if (!p) return;
  if (!kCache || size <= kSmallest || size > kLargest) {
    ::operator delete(p, size);
    return;
  }
  const std::size_t c = class_of(size);
  FreeList& l = t_lists.lists[c];
  if (t_lists.closed || l.count >= max_free(c)) {
    ::operator delete(p, class_size(c));
    return;
  }
  // A list that was empty may be this thread's first: its first use of t_drain registers the
  // drain that frees the cached blocks when the thread exits.
  if (!l.head) t_drain.armed = true;
  l.head = ::new (p) Node{l.head};
  ++l.count;
}

BlockCacheStats block_cache_stats() noexcept {
  BlockCacheStats s;
  for (std::size_t c = 0; c < kClasses; ++c) {
    s.blocks += t_lists.lists[c].count;
    s.bytes += t_lists.lists[c].count * class_size(c);
  }
  return s;
}

}  // namespace turnpike::support
