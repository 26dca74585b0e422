#include "support/block_cache.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

namespace turnpike::support {
namespace {

// The cache is compiled out under AddressSanitizer (every block goes to the heap, so a use after
// free is still caught); these tests check what the release build does.
#if defined(__SANITIZE_ADDRESS__)
constexpr bool kCached = false;
#else
constexpr bool kCached = true;
#endif

TEST(BlockCache, FreedBlockOfAClassIsHandedOutAgainOnTheSameThread) {
  if (!kCached) GTEST_SKIP() << "cache compiled out under ASan";
  void* a = block_allocate(16384);
  std::memset(a, 0xab, 16384);  // the whole class size is usable
  block_deallocate(a, 16384);
  // Any size of the same class (16 KiB class: 8193..16384) gets the same block back.
  void* b = block_allocate(12000);
  EXPECT_EQ(a, b);
  block_deallocate(b, 12000);
  void* c = block_allocate(1100);  // another class: a different block
  EXPECT_NE(a, c);
  block_deallocate(c, 1100);
}

TEST(BlockCache, SmallAndHugeBlocksAreNotKept) {
  const BlockCacheStats before = block_cache_stats();
  block_deallocate(block_allocate(512), 512);
  block_deallocate(block_allocate(1024), 1024);
  block_deallocate(block_allocate(128 * 1024), 128 * 1024);
  const BlockCacheStats after = block_cache_stats();
  EXPECT_EQ(after.blocks, before.blocks);
  EXPECT_EQ(after.bytes, before.bytes);
}

TEST(BlockCache, KeepsAtMostItsBoundPerClass) {
  if (!kCached) GTEST_SKIP() << "cache compiled out under ASan";
  std::thread([] {
    std::vector<void*> blocks;
    for (int i = 0; i < 200; ++i)
      blocks.push_back(block_allocate(16384));
    for (void* p : blocks)
      block_deallocate(p, 16384);
    const BlockCacheStats s = block_cache_stats();
    EXPECT_EQ(s.blocks, kBlockClassBytes / 16384);
    EXPECT_EQ(s.bytes, kBlockClassBytes);
  }).join();
}

TEST(BlockCache, BlocksAreAlignedForAnyObject) {
  for (std::size_t size : {1025u, 1500u, 4096u, 5000u, 16384u, 65536u}) {
    void* p = block_allocate(size);
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(p) % alignof(std::max_align_t), 0u) << size;
    block_deallocate(p, size);
  }
}

TEST(BlockCache, AllocatorAndMakeBlockWork) {
  struct Big {
    explicit Big(int v) : value(v) {}
    int value;
    char pad[2000];
  };
  BlockPtr<Big> b = make_block<Big>(7);
  EXPECT_EQ(b->value, 7);
  std::vector<char, BlockAllocator<char>> v(3000, 'x');
  EXPECT_EQ(v[2999], 'x');
  auto shared = std::allocate_shared<Big>(BlockAllocator<char>{}, 9);
  EXPECT_EQ(shared->value, 9);
}

TEST(BlockCache, ABlockFreedOnAnotherThreadIsKeptThere) {
  if (!kCached) GTEST_SKIP() << "cache compiled out under ASan";
  void* p = block_allocate(8192);
  std::thread([p] {
    block_deallocate(p, 8192);
    EXPECT_EQ(block_cache_stats().blocks, 1u);
    // The thread's exit frees it (valgrind/LSan would see a leak otherwise).
  }).join();
}

}  // namespace
}  // namespace turnpike::support
