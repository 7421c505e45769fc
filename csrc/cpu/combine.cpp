// CPU kernel of the `combine` primitive (docs/kernels.md): out[i] = sum_j m[i, j] row_j for every
// column, computed in float64 and rounded once. `out` may be the memory of `rows` (in-place
// transform of a Basis): every column (k <= 4) or block of columns is loaded for all k rows before
// any of it is stored. k <= 4 runs a register kernel per (k, r) (one pass, 2-5x faster than
// the blocked kernel at these k, bench/bench_combine.py); larger k a register-blocked micro-kernel
// over panels of columns, streamed panel by panel from memory for k <= kStreamMaxK (combine_cols:
// read from the rows, or packed as float64) and packed a block of panels at a time above
// (combine_block).
#include "uno/cpu_file.h"

namespace uno {
namespace cpu {
namespace UNO_ISA_NS {  // compiled once per ISA level (uno/cpu_kernels.h)
namespace {

// Small k (<= 4, r <= k): each column's k values are held in registers and its r outputs computed
// from them in one pass over memory, K and R known at compile time. In place is safe: a column's k
// values are all loaded before any of its r outputs is stored, and out aliases rows only at the
// same positions (same row stride and offsets, checked by the adapter). rp / op: the K input and R
// output row pointers of one piece.
template <typename T_, int K, int R>
void combine_small(const T_* const* rp, T_* const* op, int64_t lo, int64_t hi, const double* m) {
  double c[R][K];
  for (int i = 0; i < R; ++i) {
    for (int j = 0; j < K; ++j) c[i][j] = m[i * K + j];
  }
  const T_* __restrict a_[K];
  T_* __restrict o_[R];
  for (int j = 0; j < K; ++j) a_[j] = rp[j];
  for (int i = 0; i < R; ++i) o_[i] = op[i];
#pragma omp simd
  for (int64_t p = lo; p < hi; ++p) {
    double a[K];
    for (int j = 0; j < K; ++j) a[j] = static_cast<double>(Elem<T_>::load(a_[j][p]));
    for (int i = 0; i < R; ++i) {
      double s = 0.0;
      for (int j = 0; j < K; ++j) s += c[i][j] * a[j];
      o_[i][p] = Elem<T_>::store(s);
    }
  }
}

template <typename T_>
using SmallKernel = void (*)(const T_* const*, T_* const*, int64_t, int64_t, const double*);

// The register kernel for (k, r), or null when k > 4.
template <typename T_>
SmallKernel<T_> small_kernel(int64_t k, int64_t r) {
  switch (k * 8 + r) {
    case 8 + 1:
      return &combine_small<T_, 1, 1>;
    case 16 + 1:
      return &combine_small<T_, 2, 1>;
    case 16 + 2:
      return &combine_small<T_, 2, 2>;
    case 24 + 1:
      return &combine_small<T_, 3, 1>;
    case 24 + 2:
      return &combine_small<T_, 3, 2>;
    case 24 + 3:
      return &combine_small<T_, 3, 3>;
    case 32 + 1:
      return &combine_small<T_, 4, 1>;
    case 32 + 2:
      return &combine_small<T_, 4, 2>;
    case 32 + 3:
      return &combine_small<T_, 4, 3>;
    case 32 + 4:
      return &combine_small<T_, 4, 4>;
    default:
      return nullptr;
  }
}

// k > 4: a register-blocked micro-kernel over packed float64 panels of columns.
//
// The k rows are converted to float64 and packed in panels of kTileCols columns (a panel holds its
// k x kTileCols values contiguously, so one panel, k * kTileCols * 8 bytes, stays in L1 while every
// group of output rows reads it): one panel at a time as the columns stream from memory
// (combine_cols, k <= kStreamMaxK) or a block of panels at a time (combine_block). A tile of
// kTileRows outputs x kTileCols columns is held in 2 * kTileRows vector registers; every step j
// loads two vectors of row j and multiplies them by kTileRows broadcast coefficients. The packed
// copy also makes in-place safe: a panel (a block) is read completely before any of its outputs is
// stored, and the outputs land on the same columns only.
//
// Each output is sum_j m[i, j] * row_j in the order j = 0, 1, ..., k - 1, each term added with a
// fused multiply-add where the level has FMA (x86-64-v3 and v4, which therefore give the same bits)
// and with a rounded product and a rounded add at x86-64-v2 (whose last bits may differ); the
// result never depends on the vector width or the thread count.
constexpr int kTileRows = kManyRegs ? 8 : 6;  // 16 of 32 zmm registers hold the tile; 12 of 16
constexpr int kTileCols = 2 * kVecD;

// Columns per block for the blocked kernel: the packed k rows (float64) within ~256 KiB (L2), or,
// when `streamed` (every output row of the piece is written with non-temporal stores,
// store_tile_row) at x86-64-v4, 64 columns: four panels, so the packed block (32 KiB at k = 64)
// stays in L1 beside the group's rows of m, while the next block's rows are prefetched into L2
// during its tiles (combine_block). Standalone, one thread, P = 1e6, aligned float outputs: k = 64
// 46 -> 49-53 % of the FMA peak, k = 32 33 -> 45 %; with plain stores (an unaligned output row,
// 16-bit types) the short blocks are slower (k = 64: 94 -> 118 ms float, 100 -> 154 ms double: 2k
// short row segments per block, their write-allocate reads among them), so those keep the L2-sized
// blocks. Below v4 the tiles are half as wide and bind the kernel (64-72 % of v3's peak at k = 64
// with either block size): L2-sized blocks.
inline int64_t blocked_cols(int64_t k, bool streamed) {
  if (kManyRegs && streamed) return 64;
  const int64_t cols = (256 * 1024) / (8 * k) / kTileCols * kTileCols;
  return std::min<int64_t>(2048, std::max<int64_t>(kTileCols, cols));
}

// Whether store_tile_row streams full panel rows of T_ at this level.
template <typename T_>
constexpr bool kStreamsOut =
    (kTileCols == 16 && (std::is_same_v<T_, float> || std::is_same_v<T_, double>)) ||
    (kTileCols == 8 && std::is_same_v<T_, double> && kVecD == 4);

// Stores the w <= kTileCols values of res rounded to T_ at dst (plain stores).
template <typename T_>
inline void store_panel(T_* __restrict dst, const double* __restrict res, int64_t w) {
  if (w == kTileCols) {
#pragma omp simd
    for (int c = 0; c < kTileCols; ++c) dst[c] = Elem<T_>::store(res[c]);
  } else {
    for (int64_t c = 0; c < w; ++c) dst[c] = Elem<T_>::store(res[c]);
  }
}

// One output row of a tile, a0 and a1 (its kTileCols values, float64), rounded to T_ at dst: w of
// them. A full row of float or double is converted and stored straight from the registers; anything
// else (a range's short last panel, 16-bit types) goes through res and store_panel. The values
// stored are the same either way. (Before, every tile stored its accumulators to res and
// store_panel loaded them back: at k = 16, r = 16 a third of the kernel's stores and loads beside
// the multiply-adds.)
//
// A full panel row that covers whole 64-byte lines at a 64-byte aligned address goes out as
// non-temporal stores when nt: combine's output is written once and not read again soon, so its
// lines need no read-for-ownership and do not evict the rows still to be read. That is float at
// x86-64-v4 (16 values: one line) and double at v4 (two lines) and v3 (8 values: one line);
// standalone, one thread, P = 1e6 (5e5 at k = 64), float64 at v4: k = 8 19 -> 11.4-12.1 ms, k = 16
// 47-52 -> 30-31 ms, k = 64 116-121 -> 78-80 ms; at v3: k = 16 45-49 -> 36-38 ms, k = 64 124 ->
// 116-119 ms. A float panel row at v3 is half a line: streaming it (tried) leaves partial lines
// that are flushed half-filled, 2.3-2.9x slower at k = 8 and 16, so v3 stores floats normally.
template <typename T_>
inline void store_tile_row(T_* __restrict dst, VecD a0, VecD a1, int64_t w, bool nt,
                           double* __restrict res) {
  if constexpr (std::is_same_v<T_, float> || std::is_same_v<T_, double>) {
    if (w == kTileCols) {
      if (kStreamsOut<T_> && nt && (reinterpret_cast<uintptr_t>(dst) & 63) == 0) {
        stream_vec(dst, a0);  // back to back: the two halves of one line, or two whole lines
        stream_vec(dst + kVecD, a1);
      } else {
        store_round(dst, a0);
        store_round(dst + kVecD, a1);
      }
      return;
    }
  }
  *reinterpret_cast<VecDu*>(res) = a0;
  *reinterpret_cast<VecDu*>(res + kVecD) = a1;
  store_panel(dst, res, w);
}

// A tile's panel: row j's kTileCols values at row(j), as float64 (Packed: the packed float64
// panel, panel[j * kTileCols + c]) or as T_ (Rows: columns [c0, c0 + kTileCols) of the k rows,
// converted as they are loaded; float or double only, where converting a value is exact, so the
// products and sums, and the bits, are those of the packed panel).
struct Packed {
  const double* panel;
  const double* row(int64_t j) const { return panel + j * kTileCols; }
};
template <typename T_>
struct Rows {
  const T_* const* rp;
  int64_t c0;
  const T_* row(int64_t j) const { return rp[j] + c0; }
};

// out[ii][c0 + c] = sum_j m[ii * ldm + j] * panel.row(j)[c] for ii < RB, c < w (w <= kTileCols; w =
// kTileCols for Rows), rounded to T_; res: scratch for the rows store_tile_row cannot store from
// registers. Reading Rows, each group of output rows converts the panel again, which costs fewer
// instructions than packing it (a converting load and a store per vector, then a load per group)
// for the one to three groups of combine_cols (k <= 24).
template <typename T_, typename Panel, int RB>
void tile(Panel panel, int64_t k, const double* __restrict m, int64_t ldm, T_* const* out,
          int64_t c0, int64_t w, bool nt, double* __restrict res) {
  // Fully unrolled, so that the accumulators live in registers only (no zeroed stack copy).
  VecD acc0[RB], acc1[RB];
#pragma GCC unroll 16
  for (int ii = 0; ii < RB; ++ii) {
    acc0[ii] = VecD{};
    acc1[ii] = VecD{};
  }
  for (int64_t j = 0; j < k; ++j) {
    const auto* __restrict src = panel.row(j);
    const VecD a0 = load_vec(src);
    const VecD a1 = load_vec(src + kVecD);
#pragma GCC unroll 16
    for (int ii = 0; ii < RB; ++ii) {
      const VecD c = splat(m[ii * ldm + j]);
      acc0[ii] = fmadd(c, a0, acc0[ii]);
      acc1[ii] = fmadd(c, a1, acc1[ii]);
    }
  }
#pragma GCC unroll 16
  for (int ii = 0; ii < RB; ++ii) store_tile_row(out[ii] + c0, acc0[ii], acc1[ii], w, nt, res);
}

template <typename T_, typename Panel>
using TileFn = void (*)(Panel, int64_t, const double*, int64_t, T_* const*, int64_t, int64_t, bool,
                        double*);

template <typename T_, typename Panel, int... RB>
constexpr std::array<TileFn<T_, Panel>, sizeof...(RB)> tile_table(
    std::integer_sequence<int, RB...>) {
  return {&tile<T_, Panel, RB + 1>...};
}
// tiles<T_, Panel>[rb - 1]: the tile of rb output rows (the last group of r rows may be short).
template <typename T_, typename Panel>
constexpr std::array<TileFn<T_, Panel>, kTileRows> tiles =
    tile_table<T_, Panel>(std::make_integer_sequence<int, kTileRows>{});

// combine_cols up to this k (measured faster at k = 8, 16; slower at k = 32, 64: see
// combine_block).
constexpr int64_t kStreamMaxK = 24;
// How far ahead combine_cols prefetches the rows, in panels.
constexpr int64_t kAheadPanels = 4;

// k <= kStreamMaxK: columns [lo, hi) of one piece, a panel of kTileCols columns at a time: every
// group of kTileRows outputs over the panel read straight from the rows (tiles over Rows: float and
// double, full panels, unless in place with more than one group) or over the panel's k rows packed
// as float64 (zero-padded at the end of the range). In a standalone loop (k = r = 16, float, one
// thread, Zen 5; bench/cpp/combine_standalone.cpp), the rows in L2 (P = 2000, 1000 calls): 56 % of
// the FMA peak packed with res stores -> 65 % storing from registers (store_tile_row) -> 74 % with
// Rows; P = 1e6 from memory: 9.6 -> 9.3 ms at 1 thread, 6.6 -> 5.5 ms at 2 (medians of 5
// alternating processes). The panel (k * kTileCols doubles) and m stay in L1; the rows are
// prefetched kAheadPanels panels ahead, so their loads overlap the tiles of the panels before (a
// whole block packed first, as before, left memory idle while the tiles ran and the FMA units idle
// while it packed: k = 16, one thread, 17.5 -> 12 ms at P = 1e6 in a standalone loop).
template <typename T_>
void combine_cols(const T_* const* rp, T_* const* op, int64_t lo, int64_t hi, int64_t k, int64_t r,
                  const double* m, double* __restrict panel, bool nt) {
  constexpr int64_t kAhead = kAheadPanels * kTileCols;  // columns
  constexpr int kLineElems = 64 / static_cast<int>(sizeof(T_));
  alignas(64) double res[kTileCols];  // store_tile_row's scratch
  // Full panels of float or double skip the packing (Rows) unless an output row is an input
  // row and a later group of outputs would read a panel an earlier group has overwritten (one
  // group reads all k rows before it stores).
  bool in_place = false;
  if (r > kTileRows) {
    for (int64_t i = 0; i < r && !in_place; ++i) {
      for (int64_t j = 0; j < k; ++j) in_place |= static_cast<const T_*>(op[i]) == rp[j];
    }
  }
  for (int64_t c0 = lo; c0 < hi; c0 += kTileCols) {
    const int64_t w = std::min<int64_t>(kTileCols, hi - c0);
    if (c0 + kAhead < hi) {
      for (int64_t j = 0; j < k; ++j) {
        for (int e = 0; e < kTileCols; e += kLineElems) __builtin_prefetch(rp[j] + c0 + kAhead + e);
      }
    }
    if constexpr (std::is_same_v<T_, float> || std::is_same_v<T_, double>) {
      if (w == kTileCols && !in_place) {
        for (int64_t i0 = 0; i0 < r; i0 += kTileRows) {
          const int rb = static_cast<int>(std::min<int64_t>(kTileRows, r - i0));
          tiles<T_, Rows<T_>>[rb - 1](Rows<T_>{rp, c0}, k, m + i0* k, k, op + i0, c0, kTileCols, nt,
                                      res);
        }
        continue;
      }
    }
    for (int64_t j = 0; j < k; ++j) {
      const T_* __restrict src = rp[j] + c0;
      double* __restrict dst = panel + j * kTileCols;
      if (w == kTileCols) {
#pragma omp simd
        for (int c = 0; c < kTileCols; ++c) dst[c] = static_cast<double>(Elem<T_>::load(src[c]));
      } else {  // the range's last panel: zero-padded (its padding columns are never stored)
        for (int c = 0; c < kTileCols; ++c) {
          dst[c] = c < w ? static_cast<double>(Elem<T_>::load(src[c])) : 0.0;
        }
      }
    }
    for (int64_t i0 = 0; i0 < r; i0 += kTileRows) {
      const int rb = static_cast<int>(std::min<int64_t>(kTileRows, r - i0));
      tiles<T_, Packed>[rb - 1](Packed{panel}, k, m + i0* k, k, op + i0, c0, w, nt, res);
    }
  }
}

// k > kStreamMax: the same tiles over a packed block of columns (blocked_cols), one group of
// kTileRows outputs at a time across all the block's panels (the group's rows of m stay in L1).
// Streaming panels straight from memory as combine_cols does would keep 2k rows in flight at once:
// beyond what the prefetchers and the TLB follow (measured slower at k = 64). Instead, the next
// block's columns of every row, up to `hi` (the end of the piece's range), are prefetched into L2
// while this block's tiles run, a few lines before each tile, so that packing the next block reads
// L2 and not memory (without it packing and tiles ran one after the other: at k = 64 the packing
// alone took a quarter of the time).
template <typename T_>
void combine_block(const T_* const* rp, T_* const* op, int64_t b0, int64_t n, int64_t hi, int64_t k,
                   int64_t r, const double* m, double* pack, bool nt) {
  const int64_t panels = (n + kTileCols - 1) / kTileCols;
  for (int64_t j = 0; j < k; ++j) {
    const T_* __restrict src = rp[j] + b0;
    for (int64_t q = 0; q < panels; ++q) {
      double* __restrict dst = pack + (q * k + j) * kTileCols;
      const int64_t c0 = q * kTileCols, w = std::min<int64_t>(kTileCols, n - c0);
      if (w == kTileCols) {
#pragma omp simd
        for (int c = 0; c < kTileCols; ++c)
          dst[c] = static_cast<double>(Elem<T_>::load(src[c0 + c]));
      } else {  // the block's last panel: zero-padded (its padding columns are never stored)
        for (int c = 0; c < kTileCols; ++c) {
          dst[c] = c < w ? static_cast<double>(Elem<T_>::load(src[c0 + c])) : 0.0;
        }
      }
    }
  }
  constexpr int64_t kLineElems = 64 / static_cast<int64_t>(sizeof(T_));
  const int64_t next_cols = std::min(n, hi - (b0 + n));
  const int64_t lines_per_row = next_cols > 0 ? (next_cols + kLineElems - 1) / kLineElems : 0;
  const int64_t lines = lines_per_row * k;
  const int64_t n_tiles = (r + kTileRows - 1) / kTileRows * panels;
  const int64_t per_tile = (lines + n_tiles - 1) / n_tiles;
  int64_t line = 0;                   // the next line of the next block to prefetch, row by row
  alignas(64) double res[kTileCols];  // store_tile_row's scratch
  for (int64_t i0 = 0; i0 < r; i0 += kTileRows) {
    const int rb = static_cast<int>(std::min<int64_t>(kTileRows, r - i0));
    for (int64_t q = 0; q < panels; ++q) {
      const int64_t c0 = q * kTileCols, w = std::min<int64_t>(kTileCols, n - c0);
      for (int64_t e = 0; e < per_tile && line < lines; ++e, ++line) {
        const int64_t j = line / lines_per_row, l = line % lines_per_row;
        __builtin_prefetch(rp[j] + b0 + n + l * kLineElems, 0, 1);  // 1: into L2 (prefetcht2)
      }
      tiles<T_, Packed>[rb - 1](Packed{pack + q * k * kTileCols}, k, m + i0* k, k, op + i0, b0 + c0,
                                w, nt, res);
    }
  }
}

// out_ptrs, out_lds: the r output rows (a RowSet: T (r, n_t) blocks of T_ with row stride
// out_lds[t], or a table of T * r row pointers). row_ptrs, lds: the k input rows, likewise. ns: the
// T piece sizes. m: (r, k) float64, row-major. Every output is a float64 sum over j, rounded once.
template <typename T_>
void combine_kernel(const std::vector<int64_t>& out_ptrs, const std::vector<int64_t>& out_lds,
                    const std::vector<int64_t>& row_ptrs, const std::vector<int64_t>& lds,
                    const std::vector<int64_t>& ns, int64_t k, int64_t r, const double* m,
                    int num_threads) {
  const PieceIndex pieces(ns);
  const RowSet in{row_ptrs, lds, k}, outs{out_ptrs, out_lds, r};
  // The blocked kernel does r * k multiply-adds per column: count them as work too (k = 64 is
  // compute-bound), so that mid-sized inputs use every thread.
  const Plan plan = plan_work(pieces.total() * (k + r + (k > 4 ? r * k / 8 : 0)), num_threads);
  const SmallKernel<T_> small = small_kernel<T_>(k, r);
  // the pack's size: one panel for combine_cols, the largest block for combine_block
  const int64_t B =
      k <= kStreamMaxK ? kTileCols : std::max(blocked_cols(k, false), blocked_cols(k, true));
  parallel_for(pieces.total(), plan, [&](int, int64_t begin, int64_t end) {
    std::vector<const T_*> rp(k);
    std::vector<T_*> op(r);
    // uninitialised (every value is written before it is read): no memset of B * k doubles per call
    std::unique_ptr<double[]> pack(small ? nullptr : new double[static_cast<size_t>(B * k)]);
    pieces.for_each(begin, end, [&](size_t t, int64_t lo, int64_t hi) {
      for (int64_t j = 0; j < k; ++j) rp[j] = in.row<const T_>(t, j);
      for (int64_t i = 0; i < r; ++i) op[i] = outs.row<T_>(t, i);
      if (small) {
        small(rp.data(), op.data(), lo, hi, m);
        return;
      }
      if (k <= kStreamMaxK) {
        combine_cols(rp.data(), op.data(), lo, hi, k, r, m, pack.get(), /*nt=*/true);
        return;
      }
      bool streamed = kStreamsOut<T_>;  // every output row 64-byte aligned: all full panels stream
      for (int64_t i = 0; i < r; ++i)
        streamed &= (reinterpret_cast<uintptr_t>(op[i] + lo) & 63) == 0;
      const int64_t Bt = blocked_cols(k, streamed);
      for (int64_t b0 = lo; b0 < hi; b0 += Bt) {
        combine_block(rp.data(), op.data(), b0, std::min(Bt, hi - b0), hi, k, r, m, pack.get(),
                      /*nt=*/true);
      }
    });
#if defined(__AVX__)
    if (!small)
      _mm_sfence();  // store_tile_row's non-temporal stores, before the chunk counts as done
#endif
  });
}

// One thread's share of fma_peak: iters steps of kChains independent vector multiply-adds, all in
// registers. Not inlined, so every thread runs this same code: inlined into parallel_for's chunk
// loop (the helper-thread path), GCC kept the accumulator array in memory and stored all of it
// on every step, which halved the rate (one store port) and made the 2-thread peak read about 0.7x
// one thread's instead of 2x (perf annotate; two single-threaded processes read 2x).
template <int kChains>
__attribute__((noinline)) double fma_chains(int64_t iters) {
  VecD a[kChains];
#pragma GCC unroll 16
  for (int i = 0; i < kChains; ++i) a[i] = splat(1.0 + i);
  const VecD b = splat(0.999999),
             d = splat(1e-7);  // a converges to 0.1: no overflow, no denormals
  for (int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 16
    for (int i = 0; i < kChains; ++i) a[i] = fmadd(a[i], b, d);
  }
  double t = 0.0;
#pragma GCC unroll 16
  for (int i = 0; i < kChains; ++i) t += sum_vec(a[i]);
  return t;
}

// The FMA peak the micro-kernel is measured against (uno bench roofline): iters steps of 2 *
// kTileRows independent vector multiply-adds (the tile's accumulator count) on each of num_threads
// threads, no memory traffic. Returns the number of (scalar) multiply-adds done.
double fma_peak(int64_t iters, int num_threads) {
  constexpr int kChains = 2 * kTileRows;
  std::vector<double> sink(static_cast<size_t>(num_threads) * 8, 0.0);
  parallel_for(num_threads, num_threads, num_threads, [&sink, iters](int c, int64_t, int64_t) {
    sink[static_cast<size_t>(c) * 8] = fma_chains<kChains>(iters);  // keeps the loop
  });
  double t = 0.0;
  for (double v : sink) t += v;
  return t == 0.0 ? 0.0 : static_cast<double>(iters) * kChains * kVecD * num_threads;
}

}  // namespace

void run_combine(const I64s& out_ptrs, const I64s& out_lds, const I64s& row_ptrs, const I64s& lds,
                 const I64s& ns, int64_t k, int64_t r, const double* m, int dtype,
                 int num_threads) {
  dispatch_one(dtype, "combine_cpu", [&](auto e) {
    combine_kernel<decltype(e)>(out_ptrs, out_lds, row_ptrs, lds, ns, k, r, m, num_threads);
  });
}

double run_fma_peak(int64_t iters, int num_threads) { return fma_peak(iters, num_threads); }

}  // namespace UNO_ISA_NS

#ifdef UNO_CPU_BINDINGS  // the pybind11 entry point: the baseline compile only
namespace py = pybind11;
namespace {

void combine_cpu(const std::vector<int64_t>& out_ptrs, const std::vector<int64_t>& out_lds,
                 const std::vector<int64_t>& row_ptrs, const std::vector<int64_t>& lds,
                 const std::vector<int64_t>& ns, int64_t k, int64_t r, int64_t m_ptr, int dtype,
                 int num_threads) {
  const char* what = "combine_cpu";
  check_pieces(what, row_ptrs, lds, ns, k, /*table_ok=*/true);
  if (r < 1 || r > k) {
    throw std::invalid_argument("combine_cpu: r must be in [1, k] = [1, " + std::to_string(k) +
                                "], got " + std::to_string(r));
  }
  if (out_ptrs.size() != ns.size()) {
    throw std::invalid_argument("combine_cpu: out has " + std::to_string(out_ptrs.size()) +
                                " pieces but rows have " + std::to_string(ns.size()));
  }
  check_pieces("combine_cpu (out)", out_ptrs, out_lds, ns, r, /*table_ok=*/true);
  check_threads(what, num_threads);
  if (m_ptr == 0) throw std::invalid_argument("combine_cpu: m_ptr is null");
  dispatch_one(dtype, what, [](auto) {});  // validate before releasing the GIL
  const Kernels& isa = active();
  py::gil_scoped_release release;
  isa.combine(out_ptrs, out_lds, row_ptrs, lds, ns, k, r, reinterpret_cast<const double*>(m_ptr),
              dtype, num_threads);
}

double fma_peak_cpu(int64_t iters, int num_threads) {
  if (iters < 1) throw std::invalid_argument("fma_peak_cpu: iters must be >= 1");
  check_threads("fma_peak_cpu", num_threads);
  if (num_threads > kMaxThreads) {
    throw std::invalid_argument("fma_peak_cpu: num_threads must be <= " +
                                std::to_string(kMaxThreads));
  }
  const Kernels& isa = active();
  py::gil_scoped_release release;
  return isa.fma_peak(iters, num_threads);
}

void register_combine_cpu(py::module_& m) {
  m.def("combine_cpu", &combine_cpu, py::arg("out_ptrs"), py::arg("out_lds"), py::arg("row_ptrs"),
        py::arg("lds"), py::arg("ns"), py::arg("k"), py::arg("r"), py::arg("m_ptr"),
        py::arg("dtype"), py::arg("num_threads"),
        "combine primitive on CPU: out[t][i] = sum_j m[i, j] rows[t][j] for the (r, k) float64 "
        "matrix at m_ptr; out may be the memory of rows (r <= k). rows and out: one pointer per "
        "piece or a row table (len(ns) * k, resp. len(ns) * r pointers, as inner_cpu).");
  m.def("fma_peak_cpu", &fma_peak_cpu, py::arg("iters"), py::arg("num_threads"),
        "The float64 multiply-add peak combine's micro-kernel is measured against: iters steps "
        "of independent vector FMAs (the tile's accumulator count, no memory traffic) on each of "
        "num_threads threads; returns the number of multiply-adds done (time the call).");
}

}  // namespace
#endif  // UNO_CPU_BINDINGS
}  // namespace cpu
}  // namespace uno

#ifdef UNO_CPU_BINDINGS
UNO_REGISTER(combine, cpu);
#endif
