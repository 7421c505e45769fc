// CPU kernel of the `combine` primitive (docs/kernels.md): out[i] = sum_j m[i, j] row_j for every
// column, computed in float64 and rounded once. `out` may be the memory of `rows` (in-place
// transform of a Basis): every block of columns is loaded for all k rows before any of it is
// stored.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "uno/dtype.h"
#include "uno/parallel.h"
#include "uno/registry.h"

namespace py = pybind11;

namespace uno {
namespace {

// out_ptrs: T pointers to (r, n_t) blocks of T_ with row stride out_lds[t]. row_ptrs: T pointers to
// (k, n_t) blocks of T_ with row stride lds[t]. ns: the T piece sizes. m: (r, k) float64,
// row-major.
template <typename T_>
void combine_kernel(const std::vector<int64_t>& out_ptrs, const std::vector<int64_t>& out_lds,
                    const std::vector<int64_t>& row_ptrs, const std::vector<int64_t>& lds,
                    const std::vector<int64_t>& ns, int64_t k, int64_t r, const double* m,
                    int num_threads) {
  using V = typename Elem<T_>::V;
  const PieceIndex pieces(ns);
  const int64_t B = block_size(k, sizeof(V));
  const int nchunks = plan_chunks(pieces.total() * (k + r), num_threads);
  parallel_for(pieces.total(), nchunks, [&](int, int64_t begin, int64_t end) {
    std::vector<V> rbuf(B * k);  // a copy of the block's k rows: out may overwrite rows
    std::vector<const V*> rp(k);
    std::vector<double> s(B);
    pieces.for_each(begin, end, [&](size_t t, int64_t lo, int64_t hi) {
      const T_* rows = reinterpret_cast<const T_*>(row_ptrs[t]);
      T_* out = reinterpret_cast<T_*>(out_ptrs[t]);
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
  py::gil_scoped_release release;
  dispatch_one(dtype, what, [&](auto e) {
    combine_kernel<decltype(e)>(out_ptrs, out_lds, row_ptrs, lds, ns, k, r,
                                reinterpret_cast<const double*>(m_ptr), num_threads);
  });
}

void register_combine(py::module_& m) {
  m.def("combine_cpu", &combine_cpu, py::arg("out_ptrs"), py::arg("out_lds"), py::arg("row_ptrs"),
        py::arg("lds"), py::arg("ns"), py::arg("k"), py::arg("r"), py::arg("m_ptr"),
        py::arg("dtype"), py::arg("num_threads"),
        "combine primitive on CPU: out[t][i] = sum_j m[i, j] rows[t][j] for the (r, k) float64 "
        "matrix at m_ptr; out may be the memory of rows (r <= k).");
}

}  // namespace
}  // namespace uno

UNO_REGISTER(combine_cpu, uno::register_combine);
