// CPU kernel of the `inner` primitive (docs/kernels.md): in one pass over x and k rows, the inner
// products <row_j, x>, |x|^2 and optionally the packed upper triangle of the rows' Gram matrix, all
// accumulated in float64 with a fixed order per thread count.
#include "uno/cpu_file.h"

namespace uno {
namespace cpu {
namespace UNO_ISA_NS {  // compiled once per ISA level (uno/cpu_kernels.h)
namespace {

// <a0, b> and <a1, b> in one sweep, sharing the loads of b.
template <typename V>
inline void gram_pair(const V* __restrict a0, const V* __restrict a1, const V* __restrict b,
                      int64_t n, double* s0, double* s1) {
  double u = 0.0, v = 0.0;
#pragma omp simd reduction(+ : u, v)
  for (int64_t p = 0; p < n; ++p) {
    const double bp = static_cast<double>(b[p]);
    u += static_cast<double>(a0[p]) * bp;
    v += static_cast<double>(a1[p]) * bp;
  }
  *s0 += u;
  *s1 += v;
}

// Register-blocked Gram tile (k >= kGramTileMin): s[i][j] = <ai[i], aj[j]> over n values for
// i < RI, j < RJ, with RI * RJ vector accumulators (each load of a row serves RJ or RI products,
// and RI * RJ independent sums hide the add latency; fused multiply-adds where the level has FMA).
// Lanes are added in a fixed tree, then the tail in order: deterministic; the lane split and the
// fusing follow the ISA level, so the last bits may differ between levels (like `dots`).
template <typename V, int RI, int RJ>
void gram_tile(const V* const* ai, const V* const* aj, int64_t n, double (*s)[4]) {
  VecD acc[RI][RJ];
#pragma GCC unroll 16
  for (int i = 0; i < RI * RJ; ++i) acc[i / RJ][i % RJ] = VecD{};
  int64_t p = 0;
  for (; p + kVecD <= n; p += kVecD) {
    VecD x[RI], y[RJ];
#pragma GCC unroll 4
    for (int i = 0; i < RI; ++i) x[i] = load_vec(ai[i] + p);
#pragma GCC unroll 4
    for (int j = 0; j < RJ; ++j) y[j] = load_vec(aj[j] + p);
#pragma GCC unroll 16
    for (int i = 0; i < RI * RJ; ++i) {
      acc[i / RJ][i % RJ] = fmadd(x[i / RJ], y[i % RJ], acc[i / RJ][i % RJ]);
    }
  }
  for (int i = 0; i < RI; ++i) {
    for (int j = 0; j < RJ; ++j) {
      double t = sum_vec(acc[i][j]);
      for (int64_t q = p; q < n; ++q) {
        t += static_cast<double>(ai[i][q]) * static_cast<double>(aj[j][q]);
      }
      s[i][j] = t;
    }
  }
}

// Tile edge: 4 x 4 with 32 vector registers (AVX-512), 3 x 3 with 16.
constexpr int kGramTile = kManyRegs ? 4 : 3;
constexpr int64_t kGramTileMin = 4;  // below, the pairwise sweeps (gram_pair) are as fast

template <typename V>
using GramTileFn = void (*)(const V* const*, const V* const*, int64_t, double (*)[4]);

template <typename V, int RI, int... RJ>
constexpr std::array<GramTileFn<V>, sizeof...(RJ)> gram_row(std::integer_sequence<int, RJ...>) {
  return {&gram_tile<V, RI, RJ + 1>...};
}
template <typename V, int... RI>
constexpr std::array<std::array<GramTileFn<V>, kGramTile>, sizeof...(RI)> gram_tiles(
    std::integer_sequence<int, RI...>) {
  return {gram_row<V, RI + 1>(std::make_integer_sequence<int, kGramTile>{})...};
}

// Adds the block's Gram upper triangle (packed row by row) to g. rp: k pointers to n values each.
template <typename V>
void gram_block(const V* const* rp, int64_t k, int64_t n, double* g) {
  // Packed index of (i, j), i <= j: i*k - i*(i-1)/2 + (j - i).
  auto at = [k](int64_t i, int64_t j) { return i * k - i * (i - 1) / 2 + (j - i); };
  if (k >= kGramTileMin) {
    static constexpr auto tiles = gram_tiles<V>(std::make_integer_sequence<int, kGramTile>{});
    double s[4][4];
    for (int64_t i0 = 0; i0 < k; i0 += kGramTile) {
      const int ri = static_cast<int>(std::min<int64_t>(kGramTile, k - i0));
      for (int64_t j0 = i0; j0 < k; j0 += kGramTile) {
        const int rj = static_cast<int>(std::min<int64_t>(kGramTile, k - j0));
        tiles[ri - 1][rj - 1](rp + i0, rp + j0, n, s);
        for (int i = 0; i < ri; ++i) {
          for (int j = 0; j < rj; ++j) {
            if (i0 + i <= j0 + j) g[at(i0 + i, j0 + j)] += s[i][j];
          }
        }
      }
    }
    return;
  }
  int64_t i = 0;
  for (; i + 1 < k; i += 2) {
    g[at(i, i)] += dot(rp[i], rp[i], n);
    for (int64_t j = i + 1; j < k; ++j) {
      gram_pair(rp[i], rp[i + 1], rp[j], n, &g[at(i, j)], &g[at(i + 1, j)]);
    }
  }
  if (i < k) g[at(i, i)] += dot(rp[i], rp[i], n);
}

// x_ptrs: T pointers to n_t elements of X, or empty (no x). row_ptrs, lds: the rows of R (a RowSet:
// T pointers to (k, n_t) blocks with row stride lds[t], or a table of T * k row pointers). ns: the
// T piece sizes n_t. out: W = k + 1 (+ k(k+1)/2) float64 values.
template <typename X, typename R>
void inner_kernel(const std::vector<int64_t>& x_ptrs, const std::vector<int64_t>& row_ptrs,
                  const std::vector<int64_t>& lds, const std::vector<int64_t>& ns, int64_t k,
                  bool with_gram, double* out, int num_threads) {
  using XV = typename Elem<X>::V;
  using RV = typename Elem<R>::V;
  const bool has_x = !x_ptrs.empty();
  const int64_t W = k + 1 + (with_gram ? k * (k + 1) / 2 : 0);
  const PieceIndex pieces(ns);
  const RowSet rs{row_ptrs, lds, k};
  const int64_t B = block_size(k, sizeof(RV));
  // k <= 4 without a conversion (and without the Gram) runs sweep_rows (uno/sweep.h), which needs
  // no cache blocks: one sweep per piece range.
  constexpr bool kDirect = std::is_same_v<X, XV> && std::is_same_v<R, RV>;
  const bool one_sweep = kDirect && k <= 4 && !with_gram && has_x;
  const Plan plan = plan_work(pieces.total() * (k + 1), num_threads);
  const int nchunks = plan.chunks;
  const int64_t WP = partial_stride(W);  // one row of sums per chunk, on its own cache lines
  std::vector<double> partial(static_cast<size_t>(nchunks * WP), 0.0);
  if (has_x || with_gram) {
    parallel_for(pieces.total(), plan, [&](int c, int64_t begin, int64_t end) {
      double* acc = partial.data() + c * WP;
      std::vector<XV> xbuf(std::is_same_v<X, XV> ? 0 : B);
      std::vector<RV> rbuf(std::is_same_v<R, RV> ? 0 : B * k);
      std::vector<const RV*> rp(k);
      NextBlock pf(k + 1);  // the blocked dots: the next block of the k rows and x, into L2
      pieces.for_each(begin, end, [&](size_t t, int64_t lo, int64_t hi) {
        const int64_t step = one_sweep ? hi - lo : B;
        for (int64_t b0 = lo; b0 < hi; b0 += step) {
          const int64_t n = std::min(step, hi - b0);
          for (int64_t j = 0; j < k; ++j) {
            rp[j] = load_block(rs.row<const R>(t, j) + b0, n, rbuf.data() + j * B);
          }
          if (has_x) {
            const X* x = reinterpret_cast<const X*>(x_ptrs[t]);
            const XV* xv = load_block(x + b0, n, xbuf.data());
            // k <= 4: one register sweep (uno/sweep.h; Update = false never writes through the
            // cast), else the four-row dots and |x|^2 over the block, the next block prefetched.
            if (!sweep_small<XV, false>(rp.data(), k, nullptr, const_cast<XV*>(xv), n, acc)) {
              const int64_t nn = std::min(step, hi - b0 - n);
              for (int64_t j = 0; j < k; ++j) {
                pf.set_row(j, rs.row<const R>(t, j) + b0 + n, nn * static_cast<int64_t>(sizeof(R)));
              }
              pf.set_row(k, x + b0 + n, nn * static_cast<int64_t>(sizeof(X)));
              pf.arm(k + 1, (k + 1) * n);
              dots(rp.data(), k, xv, n, acc, pf);
              acc[k] += dot(xv, xv, n, pf);
            }
          }
          if (with_gram) gram_block(rp.data(), k, n, acc + k + 1);
        }
      });
    });
  }
  for (int64_t w = 0; w < W; ++w) {
    double s = 0.0;
    for (int c = 0; c < nchunks; ++c) s += partial[c * WP + w];
    out[w] = s;
  }
}

}  // namespace

void run_inner(const I64s& x_ptrs, const I64s& row_ptrs, const I64s& lds, const I64s& ns, int64_t k,
               bool with_gram, int x_dtype, int row_dtype, double* out, int num_threads) {
  dispatch_pair(x_dtype, row_dtype, "inner_cpu", [&](auto x, auto r) {
    inner_kernel<decltype(x), decltype(r)>(x_ptrs, row_ptrs, lds, ns, k, with_gram, out,
                                           num_threads);
  });
}

}  // namespace UNO_ISA_NS

#ifdef UNO_CPU_BINDINGS  // the pybind11 entry point: the baseline compile only
namespace py = pybind11;
namespace {

void inner_cpu(const std::vector<int64_t>& x_ptrs, const std::vector<int64_t>& row_ptrs,
               const std::vector<int64_t>& lds, const std::vector<int64_t>& ns, int64_t k,
               bool with_gram, int x_dtype, int row_dtype, int64_t out_ptr, int num_threads) {
  const char* what = "inner_cpu";
  check_pieces(what, row_ptrs, lds, ns, k, /*table_ok=*/true);
  if (!x_ptrs.empty()) check_vector(what, "x", x_ptrs, ns);
  check_threads(what, num_threads);
  if (out_ptr == 0) throw std::invalid_argument("inner_cpu: out_ptr is null");
  dispatch_pair(x_dtype, row_dtype, what, [](auto, auto) {});  // validate before releasing the GIL
  const Kernels& isa = active();
  py::gil_scoped_release release;
  isa.inner(x_ptrs, row_ptrs, lds, ns, k, with_gram, x_dtype, row_dtype,
            reinterpret_cast<double*>(out_ptr), num_threads);
}

void register_inner_cpu(py::module_& m) {
  m.def(
      "inner_cpu", &inner_cpu, py::arg("x_ptrs"), py::arg("row_ptrs"), py::arg("lds"),
      py::arg("ns"), py::arg("k"), py::arg("with_gram"), py::arg("x_dtype"), py::arg("row_dtype"),
      py::arg("out_ptr"), py::arg("num_threads"),
      "inner primitive on CPU: writes [<row_j, x>]_j, |x|^2 (zeros without x) and, with_gram, the "
      "packed upper Gram triangle of the rows to the float64 buffer at out_ptr. row_ptrs: one "
      "pointer per piece (row j at j * lds[t] elements after it) or a row table of len(ns) * k "
      "pointers (row j of piece t at row_ptrs[t * k + j]).");
}

}  // namespace
#endif  // UNO_CPU_BINDINGS
}  // namespace cpu
}  // namespace uno

#ifdef UNO_CPU_BINDINGS
UNO_REGISTER(inner, cpu);
#endif
