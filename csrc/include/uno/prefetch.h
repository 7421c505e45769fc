// Software prefetch policies of the CPU reductions (dot, dots, lincomb in uno/dtype.h, and
// project's fused sweep). The blocked kernels (k > 4) walk a column block of k rows row group by
// row group, each group over the whole block, so every row segment of a block is a short stream (4
// KiB at k = 16).
//
// - Ahead (the default): every stream prefetched kPrefetchAhead bytes ahead of where it is read
//   (prefetch_ahead, uno/simd.h).
// - NextBlock (inner's and project's blocked paths): the *next* block's lines of every row, into
//   L2, a few at a time, spread evenly over the current block's work. On a Zen 4 core the hardware
//   prefetchers start each short segment over again: in a standalone loop (one thread, P = 1e7,
//   k = 16 float rows, 4 KiB segments) the blocked dots read 11.8 GB/s with Ahead, 14.2 with no
//   software prefetch and 19.4 with NextBlock, against 20.8 for a same-run copy. The same
//   prefetches issued in one burst per block (12.7) or per row group (13.8) left the core waiting
//   on them: they must be spread.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "uno/isa.h"
#include "uno/simd.h"

namespace uno {
// Per ISA level (uno/isa.h): each level's copy of these inline helpers has its own symbols.
inline namespace UNO_ISA_NS {

// prefetch_ahead on every stream; no work-paced prefetches.
struct Ahead {
  template <int Elems, typename T>
  void stream(const T* p) {
    prefetch_ahead<Elems>(p);
  }
  void advance(int64_t) {}
};

// The next column block of a set of rows, prefetched into L2 (prefetcht1) one line every
// `every` units of work: arm() with the block's total work (in row-columns: a loop over r rows and
// n columns is r * n units) and the rows' next segments, then advance() as the work is done.
class NextBlock {
 public:
  template <int Elems, typename T>
  void stream(const T*) {}

  // Room for the next segments of up to `rows` rows (one allocation, before the blocks).
  explicit NextBlock(int64_t rows) : rows_(static_cast<size_t>(rows)) {}

  // Row i's next segment: `bytes` from p (i < the constructor's rows).
  void set_row(int64_t i, const void* p, int64_t bytes) {
    rows_[static_cast<size_t>(i)] = Seg{static_cast<const char*>(p), (bytes + 63) / 64};
  }

  // Starts a block: the next segments of rows 0 .. nrows - 1 (set_row); work: the units the
  // current block will advance by. Segments of 0 bytes (no next block) prefetch nothing.
  void arm(int64_t nrows, int64_t work) {
    nrows_ = nrows;
    row_ = 0;
    line_ = 0;
    int64_t total = 0;
    for (int64_t i = 0; i < nrows; ++i) total += rows_[static_cast<size_t>(i)].lines;
    every_ = std::max<int64_t>(1, total > 0 ? work / total : 1);
    credit_ = 0;
    skip_empty();
  }

  void advance(int64_t units) {
    if (row_ >= nrows_) return;
    credit_ += units;
    while (credit_ >= every_ && row_ < nrows_) {
      credit_ -= every_;
      const Seg& r = rows_[static_cast<size_t>(row_)];
      __builtin_prefetch(r.p + line_ * 64, 0, 2);  // 2: into L2 (prefetcht1)
      if (++line_ == r.lines) {
        line_ = 0;
        ++row_;
        skip_empty();
      }
    }
  }

 private:
  struct Seg {
    const char* p = nullptr;
    int64_t lines = 0;
  };
  void skip_empty() {
    while (row_ < nrows_ && rows_[static_cast<size_t>(row_)].lines == 0) ++row_;
  }
  std::vector<Seg> rows_;
  int64_t nrows_ = 0, row_ = 0, line_ = 0, every_ = 1, credit_ = 0;
};

}  // namespace UNO_ISA_NS
}  // namespace uno
