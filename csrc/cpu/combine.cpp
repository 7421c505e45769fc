// CPU kernel of the `combine` primitive (docs/kernels.md): out[i] = sum_j m[i, j] row_j for every
// column, computed in float64 and rounded once. `out` may be the memory of `rows` (in-place
// transform of a Basis): every column (k <= 4) or block of columns is loaded for all k rows before
// any of it is stored. k <= 4 runs a register kernel per (k, r) (one pass, 2-5x faster than
// the blocked kernel at these k, bench/bench_combine.py); larger k the blocked kernel.
#ifdef UNO_CPU_BINDINGS
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "uno/registry.h"
#endif

#include <algorithm>
#include <cstdint>
#include <vector>

#include "uno/cpu_kernels.h"
#include "uno/dtype.h"
#include "uno/parallel.h"

namespace uno {
namespace cpu {
namespace UNO_ISA_NS {  // compiled once per ISA level (uno/cpu_kernels.h)
namespace {

// Small k (<= 4, r <= k): each column's k values are held in registers and its r outputs computed
// from them in one pass over memory, K and R known at compile time. In place is safe: a column's k
// values are all loaded before any of its r outputs is stored, and out aliases rows only at the
// same positions (same row stride and offsets, checked by the adapter).
template <typename T_, int K, int R>
void combine_small(const T_* rows, int64_t ld, T_* out, int64_t old, int64_t lo, int64_t hi,
                   const double* m) {
  double c[R][K];
  for (int i = 0; i < R; ++i) {
    for (int j = 0; j < K; ++j) c[i][j] = m[i * K + j];
  }
#pragma omp simd
  for (int64_t p = lo; p < hi; ++p) {
    double a[K];
    for (int j = 0; j < K; ++j) a[j] = static_cast<double>(Elem<T_>::load(rows[j * ld + p]));
    for (int i = 0; i < R; ++i) {
      double s = 0.0;
      for (int j = 0; j < K; ++j) s += c[i][j] * a[j];
      out[i * old + p] = Elem<T_>::store(s);
    }
  }
}

template <typename T_>
using SmallKernel = void (*)(const T_*, int64_t, T_*, int64_t, int64_t, int64_t, const double*);

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

// out_ptrs: T pointers to (r, n_t) blocks of T_ with row stride out_lds[t]. row_ptrs: T pointers to
// (k, n_t) blocks of T_ with row stride lds[t]. ns: the T piece sizes. m: (r, k) float64,
// row-major. Every output is a float64 sum over j, rounded once.
template <typename T_>
void combine_kernel(const std::vector<int64_t>& out_ptrs, const std::vector<int64_t>& out_lds,
                    const std::vector<int64_t>& row_ptrs, const std::vector<int64_t>& lds,
                    const std::vector<int64_t>& ns, int64_t k, int64_t r, const double* m,
                    int num_threads) {
  using V = typename Elem<T_>::V;
  const PieceIndex pieces(ns);
  const int nchunks = plan_chunks(pieces.total() * (k + r), num_threads);
  const SmallKernel<T_> small = small_kernel<T_>(k, r);
  const int64_t B = block_size(k, sizeof(V));
  parallel_for(pieces.total(), nchunks, [&](int, int64_t begin, int64_t end) {
    // k > 4: blocks of columns; a copy of the block's k rows (out may overwrite rows), then every
    // output as a float64 linear combination of the copies
    std::vector<V> rbuf(small ? 0 : B * k);
    std::vector<const V*> rp(k);
    std::vector<double> s(small ? 0 : B);
    pieces.for_each(begin, end, [&](size_t t, int64_t lo, int64_t hi) {
      const T_* rows = reinterpret_cast<const T_*>(row_ptrs[t]);
      T_* out = reinterpret_cast<T_*>(out_ptrs[t]);
      if (small) {
        small(rows, lds[t], out, out_lds[t], lo, hi, m);
        return;
      }
      for (int64_t b0 = lo; b0 < hi; b0 += B) {
        const int64_t n = std::min(B, hi - b0);
        for (int64_t j = 0; j < k; ++j) {
          rp[j] = copy_block(rows + j * lds[t] + b0, n, rbuf.data() + j * B);
        }
        for (int64_t i = 0; i < r; ++i) {
          lincomb(rp.data(), m + i * k, k, n, s.data());
          T_* __restrict ob = out + i * out_lds[t] + b0;
          const double* __restrict sb = s.data();
#pragma omp simd
          for (int64_t p = 0; p < n; ++p) ob[p] = Elem<T_>::store(sb[p]);
        }
      }
    });
  });
}

}  // namespace

void run_combine(const I64s& out_ptrs, const I64s& out_lds, const I64s& row_ptrs, const I64s& lds,
                 const I64s& ns, int64_t k, int64_t r, const double* m, int dtype,
                 int num_threads) {
  dispatch_one(dtype, "combine_cpu", [&](auto e) {
    combine_kernel<decltype(e)>(out_ptrs, out_lds, row_ptrs, lds, ns, k, r, m, num_threads);
  });
}

}  // namespace UNO_ISA_NS

#ifdef UNO_CPU_BINDINGS  // the pybind11 entry point: the baseline compile only
namespace py = pybind11;
namespace {

void combine_cpu(const std::vector<int64_t>& out_ptrs, const std::vector<int64_t>& out_lds,
                 const std::vector<int64_t>& row_ptrs, const std::vector<int64_t>& lds,
                 const std::vector<int64_t>& ns, int64_t k, int64_t r, int64_t m_ptr, int dtype,
                 int num_threads) {
  const char* what = "combine_cpu";
  check_pieces(what, row_ptrs, lds, ns, k);
  if (r < 1 || r > k) {
    throw std::invalid_argument("combine_cpu: r must be in [1, k] = [1, " + std::to_string(k) +
                                "], got " + std::to_string(r));
  }
  if (out_ptrs.size() != ns.size()) {
    throw std::invalid_argument("combine_cpu: out has " + std::to_string(out_ptrs.size()) +
                                " pieces but rows have " + std::to_string(ns.size()));
  }
  check_pieces("combine_cpu (out)", out_ptrs, out_lds, ns, r);
  check_threads(what, num_threads);
  if (m_ptr == 0) throw std::invalid_argument("combine_cpu: m_ptr is null");
  dispatch_one(dtype, what, [](auto) {});  // validate before releasing the GIL
  const Kernels& isa = active();
  py::gil_scoped_release release;
  isa.combine(out_ptrs, out_lds, row_ptrs, lds, ns, k, r, reinterpret_cast<const double*>(m_ptr),
              dtype, num_threads);
}

void register_combine_cpu(py::module_& m) {
  m.def("combine_cpu", &combine_cpu, py::arg("out_ptrs"), py::arg("out_lds"), py::arg("row_ptrs"),
        py::arg("lds"), py::arg("ns"), py::arg("k"), py::arg("r"), py::arg("m_ptr"),
        py::arg("dtype"), py::arg("num_threads"),
        "combine primitive on CPU: out[t][i] = sum_j m[i, j] rows[t][j] for the (r, k) float64 "
        "matrix at m_ptr; out may be the memory of rows (r <= k).");
}

}  // namespace
#endif  // UNO_CPU_BINDINGS
}  // namespace cpu
}  // namespace uno

#ifdef UNO_CPU_BINDINGS
UNO_REGISTER(combine, cpu);
#endif
