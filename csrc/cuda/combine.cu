// CUDA `combine`: out[t][i, p] = Σ_j m[i, j]·rows[t][j, p] (float64 arithmetic, one rounding on
// store), docs/kernels.md. `out` may be the same memory as `rows` (in-place transform of a Basis, r
// <= k), so every column's k inputs are loaded before any of its outputs is stored, and rows/out
// are deliberately *not*
// __restrict__ and never read through the non-coherent cache.
//
// k <= 32: combine_kernel, one column per thread, the k values in registers, m in shared memory (or
// read
//          from global memory when r*k*8 bytes exceed 48 KiB).
// k > 32:  combine_tile_kernel, a block stages a tile of tc columns x k rows in shared memory
//          (k*tc*8 <= 48 KiB), synchronises, then computes and stores the r x tc outputs.
// No reduction: nothing is written to a partial-sum buffer (the _C function returns 0).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>
#include <vector>

#include "uno/cuda_utils.cuh"
#include "uno/registry.h"

namespace uno {
namespace cuda {
namespace {

constexpr int kMaxRegK = 32;

template <typename T, int KT>
__global__ void __launch_bounds__(kThreads)
    combine_kernel(const __grid_constant__ Table tab,  // a[t]: out (r, n[t]) T, row stride lda[t];
                                                       // b[t]: rows (k, n[t]) T, row stride ldb[t]
                   int k,                              // input rows, k <= KT
                   int r,                              // output rows
                   const double* __restrict__ m,       // (r, k) float64, row-major
                   bool m_in_smem) {  // stage m in dynamic shared memory (r*k doubles)
  constexpr int U = KT <= 4 ? 2 : 1;
  extern __shared__ double msh[];
  if (m_in_smem) {
    for (int i = threadIdx.x; i < r * k; i += kThreads) msh[i] = m[i];
    __syncthreads();
  }
  const double* mm = m_in_smem ? msh : m;

  for (int64_t c = blockIdx.x; c < tab.total_chunks; c += gridDim.x) {
    const auto [t, p0, p1] = chunk_span(tab, c);
    const int64_t ldr = tab.ldb[t];
    const int64_t ldo = tab.lda[t];
    const T* rows = static_cast<const T*>(tab.b[t]);  // may alias out: no __restrict__
    T* out = static_cast<T*>(tab.a[t]);
    for (int64_t p = p0 + threadIdx.x; p < p1; p += int64_t{U} * kThreads) {
      double v[U][KT];
      load_rows<U, KT>(rows, ldr, k, p, p1, v);
      // All k inputs of these columns are in registers: storing now is safe even when out == rows.
      for (int i = 0; i < r; ++i) {
        double mi[KT];
#pragma unroll
        for (int j = 0; j < KT; ++j) mi[j] = j < k ? mm[i * k + j] : 0.0;
#pragma unroll
        for (int u = 0; u < U; ++u) {
          const int64_t q = p + int64_t{u} * kThreads;
          double s = 0.0;
#pragma unroll
          for (int j = 0; j < KT; ++j) s = fma(mi[j], v[u][j], s);
          if (q < p1) store_f64(out + i * ldo + q, s);
        }
      }
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) combine_tile_kernel(
    const __grid_constant__ Table tab,         // as combine_kernel; chunk == tc columns
    int k,                                     // input rows
    int r,                                     // output rows
    const double* __restrict__ m) {            // (r, k) float64, row-major
  extern __shared__ double tile[];             // (k, tc) float64
  const int tc = static_cast<int>(tab.chunk);  // a power of two
  const int lg = __ffs(tc) - 1;
  for (int64_t c = blockIdx.x; c < tab.total_chunks; c += gridDim.x) {  // uniform per block
    const int t = find_piece(tab, c);
    const int64_t p0 = (c - tab.chunk_begin[t]) * tab.chunk;
    const int width = static_cast<int>(min(tab.chunk, tab.n[t] - p0));
    const int64_t ldr = tab.ldb[t];
    const int64_t ldo = tab.lda[t];
    const T* rows = static_cast<const T*>(tab.b[t]) + p0;  // may alias out: no __restrict__
    T* out = static_cast<T*>(tab.a[t]) + p0;
    for (int idx = threadIdx.x; idx < k * tc; idx += kThreads) {
      const int j = idx >> lg, cc = idx & (tc - 1);
      tile[idx] = cc < width ? load_f64(rows + j * ldr + cc) : 0.0;
    }
    __syncthreads();  // every input of the tile is loaded before any output is stored
    for (int idx = threadIdx.x; idx < r * tc; idx += kThreads) {
      const int i = idx >> lg, cc = idx & (tc - 1);
      if (cc < width) {
        const double* mi = m + static_cast<int64_t>(i) * k;
        double s = 0.0;
        for (int j = 0; j < k; ++j) s = fma(__ldg(mi + j), tile[j * tc + cc], s);
        store_f64(out + i * ldo + cc, s);
      }
    }
    __syncthreads();  // the tile is reused by the next chunk
  }
}

int64_t combine_cuda(const std::vector<int64_t>& out_ptrs, const std::vector<int64_t>& out_lds,
                     const std::vector<int64_t>& row_ptrs, const std::vector<int64_t>& lds,
                     const std::vector<int64_t>& ns, int64_t k, int64_t r, int64_t m_ptr, int dtype,
                     uintptr_t stream, int64_t /*partials_ptr (unused: no reduction)*/,
                     int64_t max_blocks) {
  const size_t T = out_ptrs.size();
  check_common(T, row_ptrs.size(), lds.size(), ns.size(), k, "combine_cuda");
  if (out_lds.size() != T) {
    throw std::invalid_argument("combine_cuda: out_lds has " + std::to_string(out_lds.size()) +
                                " entries, expected " + std::to_string(T));
  }
  if (r < 1 || r > (int64_t{1} << 20)) {
    throw std::invalid_argument("combine_cuda: r must be in [1, 2^20], got " + std::to_string(r));
  }
  dispatch_dtype(dtype, "rows", [](auto) {});  // validate even when there is no work
  const int kk = static_cast<int>(k), rr = static_cast<int>(r);
  const bool reg = kk <= kMaxRegK;
  int64_t tc = kChunk;
  if (!reg) {
    tc = 256;  // largest power of two with k*tc doubles within the shared-memory budget
    while (tc > 1 && static_cast<size_t>(k) * tc * sizeof(double) > kSmemBudget) tc /= 2;
    if (static_cast<size_t>(k) * tc * sizeof(double) > kSmemBudget) {
      throw std::invalid_argument("combine_cuda: k=" + std::to_string(k) +
                                  " exceeds the shared-memory tile (k <= 6144)");
    }
  }
  const std::vector<Launch> launches =
      plan_table("combine_cuda", out_ptrs, out_lds, row_ptrs, lds, ns, tc, max_blocks);
  if (launches.empty()) return 0;
  if (m_ptr == 0) throw std::invalid_argument("combine_cuda: m_ptr is null");
  const double* m = reinterpret_cast<const double*>(static_cast<uintptr_t>(m_ptr));
  const cudaStream_t s = as_stream(stream);
  pybind11::gil_scoped_release nogil;
  dispatch_dtype(dtype, "rows", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if (reg) {
      const size_t m_bytes = static_cast<size_t>(r) * static_cast<size_t>(k) * sizeof(double);
      const bool m_in_smem = m_bytes <= kSmemBudget;
      const size_t smem = m_in_smem ? m_bytes : 0;
      dispatch_tile<kMaxRegK>(kk, [&](auto kt) {
        constexpr int KT = decltype(kt)::value;
        for_each_launch(launches, [&](const Launch& L) {
          combine_kernel<T, KT><<<L.grid_x, kThreads, smem, s>>>(L.tab, kk, rr, m, m_in_smem);
        });
      });
    } else {
      const size_t smem = static_cast<size_t>(k) * static_cast<size_t>(tc) * sizeof(double);
      for_each_launch(launches, [&](const Launch& L) {
        combine_tile_kernel<T><<<L.grid_x, kThreads, smem, s>>>(L.tab, kk, rr, m);
      });
    }
  });
  return 0;
}

void register_combine_cuda(pybind11::module_& m) {
  namespace py = pybind11;
  m.def("combine_cuda", &combine_cuda, py::arg("out_ptrs"), py::arg("out_lds"), py::arg("row_ptrs"),
        py::arg("lds"), py::arg("ns"), py::arg("k"), py::arg("r"), py::arg("m_ptr"),
        py::arg("dtype"), py::arg("stream"), py::arg("partials_ptr"), py::arg("max_blocks"),
        "CUDA combine (docs/kernels.md) on `stream`: out[t] = m @ rows[t] (out may be rows). "
        "partials_ptr is unused (no reduction); max_blocks caps the grid. Returns 0 (no partial "
        "rows).");
}

}  // namespace
}  // namespace cuda
}  // namespace uno

UNO_REGISTER(combine, cuda);
