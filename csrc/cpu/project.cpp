// CPU kernel of the `project` primitive (docs/kernels.md): x <- x - sum_j y_j row_j in place
// (float64, rounded once to x's dtype), and in the same pass the inner products of the stored x
// with every row and its squared norm, accumulated in float64 with a fixed order per thread count.
#include "uno/cpu_file.h"

namespace uno {
namespace cpu {
namespace UNO_ISA_NS {  // compiled once per ISA level (uno/cpu_kernels.h)
namespace {

// k > 4 rows of float or double (no conversion), one block of n columns: the blocked path's three
// sweeps (lincomb into a buffer, x <- x - s, then dots and dot of the stored x; uno/dtype.h) fused
// into one sweep, kLanes columns at a time, with the same operations in the same order, hence the
// same bits: s = sum_j y_j row_j per column (rows four at a time, products and sums not fused), x
// stored rounded, and the sums' accumulators kept as dots and dot keep them (two vectors per row
// for the rows in whole groups of four, the even and odd vectors of the columns; kAcc vectors for
// the last k % 4 rows and for |x|^2), added to acc at the block's end with the same tails. No s
// buffer, and every row value is converted once: the sums read the converted copy (conv, in L1).
// On a Zen 4 core (where converting 8 floats to doubles takes ~2 cycles) the three sweeps ran at
// 0.27 Gcolumns/s at k = 16 with the block in L2, below the rate of memory. Alternating rounds in
// one process, P = 1e7, k = 16, with NextBlock: 1.14x the previous code at 1 thread with the three
// sweeps, 1.30x fused (1.07x and 1.26x at 2 threads). acc2: 2 * k4 + kAcc * (k - k4) + kAcc
// vectors (k4: k rounded down to a multiple of 4), zeroed here; conv: kAcc * k vectors.
template <typename T, typename PF>
void project_fused(const T* const* rp, int64_t k, const double* y, T* __restrict x, int64_t n,
                   double* acc, VecD* __restrict acc2, VecD* __restrict conv, PF& pf) {
  static_assert(kAcc == 4, "the fused step covers kAcc vectors: dot's step");
  constexpr int64_t kStep = kLanes;  // kAcc vectors: one step of dot, two of dots
  const int64_t k4 = k / 4 * 4;
  VecD* const a4 = acc2 + 2 * k4;         // the last k - k4 rows: kAcc accumulators each
  VecD* const ax = a4 + kAcc * (k - k4);  // |x|^2
  const int64_t nacc = 2 * k4 + kAcc * (k - k4) + kAcc;
  for (int64_t i = 0; i < nacc; ++i) acc2[i] = VecD{};
  int64_t p = 0;
  for (; p + kStep <= n; p += kStep) {
    pf.advance((2 * k + 1) * kStep);
    VecD sv[kAcc];
#pragma GCC unroll 4
    for (int q = 0; q < kAcc; ++q) sv[q] = VecD{};
    int64_t j = 0;
    for (; j + 4 <= k; j += 4) {
      const VecD c0 = splat(y[j]), c1 = splat(y[j + 1]), c2 = splat(y[j + 2]), c3 = splat(y[j + 3]);
#pragma GCC unroll 4
      for (int q = 0; q < kAcc; ++q) {
        const int64_t o = p + q * kVecD;
        const VecD r0 = load_vec(rp[j] + o), r1 = load_vec(rp[j + 1] + o);
        const VecD r2 = load_vec(rp[j + 2] + o), r3 = load_vec(rp[j + 3] + o);
        VecD* const cv = conv + j * kAcc + q;
        cv[0] = r0;
        cv[kAcc] = r1;
        cv[2 * kAcc] = r2;
        cv[3 * kAcc] = r3;
        const VecD g = c0 * r0 + c1 * r1 + c2 * r2 + c3 * r3;
        sv[q] = sv[q] + g;
      }
    }
    for (; j < k; ++j) {
      const VecD c = splat(y[j]);
#pragma GCC unroll 4
      for (int q = 0; q < kAcc; ++q) {
        const VecD r = load_vec(rp[j] + p + q * kVecD);
        conv[j * kAcc + q] = r;
        sv[q] = sv[q] + c * r;
      }
    }
    VecD xv[kAcc];
#pragma GCC unroll 4
    for (int q = 0; q < kAcc; ++q) {
      T* const xp = x + p + q * kVecD;
      xv[q] = store_round(xp, load_vec(xp) - sv[q]);
    }
    for (j = 0; j < k4; ++j) {
      const VecD* __restrict r = conv + j * kAcc;
      VecD e = acc2[2 * j], o = acc2[2 * j + 1];
      e = fmadd(r[0], xv[0], e);
      o = fmadd(r[1], xv[1], o);
      e = fmadd(r[2], xv[2], e);
      o = fmadd(r[3], xv[3], o);
      acc2[2 * j] = e;
      acc2[2 * j + 1] = o;
    }
    for (; j < k; ++j) {
      VecD* const a = a4 + kAcc * (j - k4);
#pragma GCC unroll 4
      for (int q = 0; q < kAcc; ++q) a[q] = fmadd(conv[j * kAcc + q], xv[q], a[q]);
    }
#pragma GCC unroll 4
    for (int q = 0; q < kAcc; ++q) ax[q] = fmadd(xv[q], xv[q], ax[q]);
  }
  // The last n - p < kStep columns: the update as the blocked path does it, then each sum's tail in
  // the order dots and dot add it (dots: whole steps of two vectors first).
  const int64_t p0 = p;
  for (int64_t c = p0; c < n; ++c) {
    double sc = 0.0;
    int64_t j = 0;
    for (; j + 4 <= k; j += 4) {
      sc += y[j] * static_cast<double>(rp[j][c]) + y[j + 1] * static_cast<double>(rp[j + 1][c]) +
            y[j + 2] * static_cast<double>(rp[j + 2][c]) +
            y[j + 3] * static_cast<double>(rp[j + 3][c]);
    }
    for (; j < k; ++j) sc += y[j] * static_cast<double>(rp[j][c]);
    x[c] = static_cast<T>(static_cast<double>(x[c]) - sc);
  }
  constexpr int64_t kPair = 2 * kVecD;  // dots' step
  int64_t pe = p0;
  if (pe + kPair <= n) {
    for (int64_t j = 0; j < k4; ++j) {
      acc2[2 * j] = fmadd(load_vec(rp[j] + pe), load_vec(x + pe), acc2[2 * j]);
      acc2[2 * j + 1] =
          fmadd(load_vec(rp[j] + pe + kVecD), load_vec(x + pe + kVecD), acc2[2 * j + 1]);
    }
    pe += kPair;
  }
  for (int64_t j = 0; j < k4; ++j) {
    double t = sum_vec(acc2[2 * j] + acc2[2 * j + 1]);
    for (int64_t c = pe; c < n; ++c) t += static_cast<double>(rp[j][c]) * static_cast<double>(x[c]);
    acc[j] += t;
  }
  for (int64_t j = k4; j < k; ++j) {
    double t = sum_acc(a4 + kAcc * (j - k4));
    for (int64_t c = p0; c < n; ++c) t += static_cast<double>(rp[j][c]) * static_cast<double>(x[c]);
    acc[j] += t;
  }
  double t = sum_acc(ax);
  for (int64_t c = p0; c < n; ++c) t += static_cast<double>(x[c]) * static_cast<double>(x[c]);
  acc[k] += t;
}

// x_ptrs: T pointers to n_t elements of X, updated in place. row_ptrs, lds: the rows of R (a
// RowSet: T (k, n_t) blocks with row stride lds[t], or a table of T * k row pointers). ns: the T
// piece sizes. y: k float64 coefficients. out: k + 1 float64.
template <typename X, typename R>
void project_kernel(const std::vector<int64_t>& x_ptrs, const std::vector<int64_t>& row_ptrs,
                    const std::vector<int64_t>& lds, const std::vector<int64_t>& ns, int64_t k,
                    const double* y, double* out, int num_threads) {
  using XV = typename Elem<X>::V;
  using RV = typename Elem<R>::V;
  const int64_t W = k + 1;
  const PieceIndex pieces(ns);
  const RowSet rs{row_ptrs, lds, k};
  const int64_t B = block_size(k, sizeof(RV));
  // k <= 4 without a conversion runs sweep_rows (uno/sweep.h), which needs no cache blocks: one
  // sweep per piece range.
  constexpr bool kDirect = std::is_same_v<X, XV> && std::is_same_v<R, RV>;
  const bool one_sweep = kDirect && k <= 4;
  const Plan plan = plan_work(pieces.total() * (k + 1), num_threads);
  const int nchunks = plan.chunks;
  const int64_t WP = partial_stride(W);  // one row of sums per chunk, on its own cache lines
  std::vector<double> partial(static_cast<size_t>(nchunks * WP), 0.0);
  parallel_for(pieces.total(), plan, [&](int c, int64_t begin, int64_t end) {
    double* acc = partial.data() + c * WP;
    std::vector<double> s(kDirect ? 0 : B);  // sum_j y_j row_j over the block (16-bit x or rows)
    std::vector<XV> xbuf(std::is_same_v<X, XV> ? 0 : B);
    std::vector<RV> rbuf(std::is_same_v<R, RV> ? 0 : B * k);
    std::vector<const RV*> rp(k);
    NextBlock pf(k + 1);  // the blocked path: the next block of the k rows and x, into L2
    // project_fused's accumulators and converted rows (kDirect, k > 4)
    std::vector<VecD> acc2(kDirect ? static_cast<size_t>(kAcc * (k + 1)) : 0);
    std::vector<VecD> conv(kDirect ? static_cast<size_t>(kAcc * k) : 0);
    pieces.for_each(begin, end, [&](size_t t, int64_t lo, int64_t hi) {
      X* x = reinterpret_cast<X*>(x_ptrs[t]);
      const int64_t step = one_sweep ? hi - lo : B;
      for (int64_t b0 = lo; b0 < hi; b0 += step) {
        const int64_t n = std::min(step, hi - b0);
        for (int64_t j = 0; j < k; ++j) {
          rp[j] = load_block(rs.row<const R>(t, j) + b0, n, rbuf.data() + j * B);
        }
        X* __restrict xb = x + b0;
        if constexpr (kDirect) {  // update, <row_j, x_new> and |x_new|^2 in one sweep
          if (sweep_small<X, true>(rp.data(), k, y, xb, n, acc)) continue;
        }
        const int64_t nn = std::min(step, hi - b0 - n);  // the next block's columns
        for (int64_t j = 0; j < k; ++j) {
          pf.set_row(j, rs.row<const R>(t, j) + b0 + n, nn * static_cast<int64_t>(sizeof(R)));
        }
        pf.set_row(k, xb + n, nn * static_cast<int64_t>(sizeof(X)));
        pf.arm(k + 1, (2 * k + 1) * n);
        if constexpr (kDirect) {  // k > 4: the three sweeps below, fused (the same bits)
          project_fused(rp.data(), k, y, xb, n, acc, acc2.data(), conv.data(), pf);
          continue;
        }
        lincomb(rp.data(), y, k, n, s.data(), pf);
        const double* __restrict sb = s.data();
#pragma omp simd
        for (int64_t p = 0; p < n; ++p) {
          xb[p] = Elem<X>::store(static_cast<double>(Elem<X>::load(xb[p])) - sb[p]);
        }
        // Measure what was stored (rows of the block are still in cache).
        const XV* xv = load_block(static_cast<const X*>(xb), n, xbuf.data());
        dots(rp.data(), k, xv, n, acc, pf);
        acc[k] += dot(xv, xv, n, pf);
      }
    });
  });
  for (int64_t w = 0; w < W; ++w) {
    double sum = 0.0;
    for (int c = 0; c < nchunks; ++c) sum += partial[c * WP + w];
    out[w] = sum;
  }
}

}  // namespace

void run_project(const I64s& x_ptrs, const I64s& row_ptrs, const I64s& lds, const I64s& ns,
                 int64_t k, const double* y, int x_dtype, int row_dtype, double* out,
                 int num_threads) {
  dispatch_pair(x_dtype, row_dtype, "project_cpu", [&](auto x, auto r) {
    project_kernel<decltype(x), decltype(r)>(x_ptrs, row_ptrs, lds, ns, k, y, out, num_threads);
  });
}

}  // namespace UNO_ISA_NS

#ifdef UNO_CPU_BINDINGS  // the pybind11 entry point: the baseline compile only
namespace py = pybind11;
namespace {

void project_cpu(const std::vector<int64_t>& x_ptrs, const std::vector<int64_t>& row_ptrs,
                 const std::vector<int64_t>& lds, const std::vector<int64_t>& ns, int64_t k,
                 int64_t y_ptr, int x_dtype, int row_dtype, int64_t out_ptr, int num_threads) {
  const char* what = "project_cpu";
  check_pieces(what, row_ptrs, lds, ns, k, /*table_ok=*/true);
  check_vector(what, "x", x_ptrs, ns);
  check_threads(what, num_threads);
  if (y_ptr == 0) throw std::invalid_argument("project_cpu: y_ptr is null");
  if (out_ptr == 0) throw std::invalid_argument("project_cpu: out_ptr is null");
  dispatch_pair(x_dtype, row_dtype, what, [](auto, auto) {});  // validate before releasing the GIL
  const Kernels& isa = active();
  py::gil_scoped_release release;
  isa.project(x_ptrs, row_ptrs, lds, ns, k, reinterpret_cast<const double*>(y_ptr), x_dtype,
              row_dtype, reinterpret_cast<double*>(out_ptr), num_threads);
}

void register_project_cpu(py::module_& m) {
  m.def("project_cpu", &project_cpu, py::arg("x_ptrs"), py::arg("row_ptrs"), py::arg("lds"),
        py::arg("ns"), py::arg("k"), py::arg("y_ptr"), py::arg("x_dtype"), py::arg("row_dtype"),
        py::arg("out_ptr"), py::arg("num_threads"),
        "project primitive on CPU: x -= sum_j y[j] row_j in place, then writes [<row_j, x>]_j and "
        "|x|^2 of the stored x to the float64 buffer at out_ptr (k + 1 values). row_ptrs: one "
        "pointer per piece or a row table of len(ns) * k pointers (as inner_cpu).");
}

}  // namespace
#endif  // UNO_CPU_BINDINGS
}  // namespace cpu
}  // namespace uno

#ifdef UNO_CPU_BINDINGS
UNO_REGISTER(project, cpu);
#endif
