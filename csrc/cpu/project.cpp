// CPU kernel of the `project` primitive (docs/kernels.md): x <- x - sum_j y_j row_j in place
// (float64, rounded once to x's dtype), and in the same pass the inner products of the stored x
// with every row and its squared norm, accumulated in float64 with a fixed order per thread count.
#include "uno/cpu_file.h"

namespace uno {
namespace cpu {
namespace UNO_ISA_NS {  // compiled once per ISA level (uno/cpu_kernels.h)
namespace {

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
    std::vector<double> s(B);  // sum_j y_j row_j over the block
    std::vector<XV> xbuf(std::is_same_v<X, XV> ? 0 : B);
    std::vector<RV> rbuf(std::is_same_v<R, RV> ? 0 : B * k);
    std::vector<const RV*> rp(k);
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
        lincomb(rp.data(), y, k, n, s.data());
        const double* __restrict sb = s.data();
#pragma omp simd
        for (int64_t p = 0; p < n; ++p) {
          xb[p] = Elem<X>::store(static_cast<double>(Elem<X>::load(xb[p])) - sb[p]);
        }
        // Measure what was stored (rows of the block are still in cache).
        const XV* xv = load_block(static_cast<const X*>(xb), n, xbuf.data());
        dots(rp.data(), k, xv, n, acc);
        acc[k] += dot(xv, xv, n);
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
