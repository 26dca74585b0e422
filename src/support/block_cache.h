// Per-thread free lists for the blocks every connection and every request allocates and frees:
// a connection's read buffer (16 KiB), the connection object, a request's state. glibc serves
// blocks above its per-thread cache limit (1,032 bytes) from its shared bins, and a 16 KiB
// request first consolidates the fast bins: several hundred instructions and a handful of cache
// misses per block, paid on every new connection. Here a block of a known size class is one
// pointer pop, on the thread that frees it (a worker's blocks stay on the worker).
//
// Bounded: each class keeps at most kClassBytes of free blocks per thread (and at least a few);
// anything beyond goes back to the heap, as do blocks of 1 KiB or less (glibc's own per-thread
// cache is as fast for those) and blocks over 64 KiB. Under AddressSanitizer every block goes
// straight to the heap, so a use after free is still caught.
#pragma once

#include <cstddef>
#include <memory>
#include <new>
#include <utility>

namespace turnpike::support {

/// A block of at least `size` bytes, aligned for any object (alignof(std::max_align_t)).
void* block_allocate(std::size_t size);
/// Returns a block from block_allocate(size), with the same `size`. Any thread.
void block_deallocate(void* p, std::size_t size) noexcept;

/// What this thread keeps free right now (tests, the memory figures).
struct BlockCacheStats {
  std::size_t blocks = 0;
  std::size_t bytes = 0;
};
BlockCacheStats block_cache_stats() noexcept;

/// The largest free bytes kept per size class per thread.
inline constexpr std::size_t kBlockClassBytes = 256 * 1024;

/// A standard allocator over block_allocate (for containers, buffers and allocate_shared).
template <class T>
struct BlockAllocator {
  using value_type = T;
  BlockAllocator() noexcept = default;
  template <class U>
  BlockAllocator(const BlockAllocator<U>&) noexcept {}  // NOLINT(google-explicit-constructor)
  T* allocate(std::size_t n) {
    static_assert(alignof(T) <= alignof(std::max_align_t));
    return static_cast<T*>(block_allocate(n * sizeof(T)));
  }
  void deallocate(T* p, std::size_t n) noexcept { block_deallocate(p, n * sizeof(T)); }
  template <class U>
  bool operator==(const BlockAllocator<U>&) const noexcept {
    return true;
  }
};

/// Destroys and frees an object made by make_block().
template <class T>
struct BlockDelete {
  void operator()(T* p) const noexcept {
    p->~T();
    block_deallocate(p, sizeof(T));
  }
};

template <class T>
using BlockPtr = std::unique_ptr<T, BlockDelete<T>>;

/// std::make_unique over the block cache.
template <class T, class... Args>
BlockPtr<T> make_block(Args&&... args) {
  static_assert(alignof(T) <= alignof(std::max_align_t));
  void* p = block_allocate(sizeof(T));
  try {
    return BlockPtr<T>(::new (p) T(std::forward<Args>(args)...));
  } catch (...) {
    block_deallocate(p, sizeof(T));
    throw;
  }
}

}  // namespace turnpike::support
