// CUDA `project`: x ← x − Σ_j y[j]·rows[j] in place (float64 arithmetic, one rounding to x's
// dtype), and in the same pass the inner products of the *stored* x with every row and its squared
// norm (docs/kernels.md). Per-block float64 partial sums go to a scratch buffer row per block (no
// atomics, fixed block -> chunk mapping: deterministic for a fixed grid); the adapter adds the rows
// on the device.
//
// k <= 32: one fused pass (project_kernel): a thread loads x and the k row values of a column into
//          registers, subtracts, stores, and accumulates the k + 1 measures from the same
//          registers.
// k > 32:  the rows of a column no longer fit in registers: subtract_kernel updates x (rows read
// once),
//          then the inner-product kernel of inner.cu measures the stored x (rows read a second
//          time).
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

constexpr int kMaxFusedK = 32;

template <typename TX, typename TR, int KT>
__global__ void __launch_bounds__(kThreads) project_kernel(
    const __grid_constant__ Table tab,  // a[t]: x (n[t],) TX, updated; b[t]: (k, n[t]) TR
    int k,                              // rows per piece, k <= KT
    const double* __restrict__ y,       // (k,) float64 coefficients
    double* __restrict__ partials,      // (>= row_base + gridDim.x, k + 1) float64
    int64_t row_base) {                 // first partial row of this launch
  constexpr int U = KT <= 2 ? 4 : (KT <= 8 ? 2 : 1);
  __shared__ double ys[KT];
  __shared__ double red[kWarps * (KT + 1)];
  if (threadIdx.x < KT) ys[threadIdx.x] = threadIdx.x < k ? y[threadIdx.x] : 0.0;
  __syncthreads();
  double acc[KT + 1];
#pragma unroll
  for (int v = 0; v <= KT; ++v) acc[v] = 0.0;

  for (int64_t c = blockIdx.x; c < tab.total_chunks; c += gridDim.x) {
    const auto [t, p0, p1] = chunk_span(tab, c);
    const int64_t ld = tab.ldb[t];
    // x is only reached through this pointer (the ops layer rejects x aliasing the rows).
    TX* __restrict__ x = static_cast<TX*>(tab.a[t]);
    const TR* __restrict__ r = static_cast<const TR*>(tab.b[t]);
    for (int64_t p = p0 + threadIdx.x; p < p1; p += int64_t{U} * kThreads) {
      double xv[U];
      double rv[U][KT];
      load_cols<U>(x, true, p, p1, xv);
      load_rows<U, KT>(r, ld, k, p, p1, rv);
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int64_t q = p + int64_t{u} * kThreads;
        double s = 0.0;
#pragma unroll
        for (int jj = 0; jj < KT; ++jj) s = fma(ys[jj], rv[u][jj], s);
        const TX stored = from_f64<TX>(xv[u] - s);  // the single rounding
        if (q < p1) x[q] = stored;
        const double xm = q < p1 ? to_f64(stored) : 0.0;  // measure what was stored
#pragma unroll
        for (int jj = 0; jj < KT; ++jj) acc[jj] = fma(rv[u][jj], xm, acc[jj]);
        acc[KT] = fma(xm, xm, acc[KT]);
      }
    }
  }

  block_sum<KT + 1>(acc, red);
  double* out = partials + (row_base + blockIdx.x) * static_cast<int64_t>(k + 1);
  if (threadIdx.x < k) out[threadIdx.x] = red[threadIdx.x];
  if (threadIdx.x == 0) out[k] = red[KT];
}

// x ← x − Σ_j y[j]·rows[j] for any k (no reduction); the measures come from launch_dot afterwards.
template <typename TX, typename TR>
__global__ void __launch_bounds__(kThreads) subtract_kernel(
    const __grid_constant__ Table tab,  // a[t]: x (n[t],) TX, updated; b[t]: (k, n[t])
    int k,                              // rows per piece
    const double* __restrict__ y) {     // (k,) float64 coefficients
  for (int64_t c = blockIdx.x; c < tab.total_chunks; c += gridDim.x) {
    const auto [t, p0, p1] = chunk_span(tab, c);
    const int64_t ld = tab.ldb[t];
    TX* __restrict__ x = static_cast<TX*>(tab.a[t]);
    const TR* __restrict__ r = static_cast<const TR*>(tab.b[t]);
    for (int64_t p = p0 + threadIdx.x; p < p1; p += kThreads) {
      double s = 0.0;
#pragma unroll 8
      for (int j = 0; j < k; ++j) s = fma(__ldg(y + j), load_f64(r + j * ld + p), s);
      x[p] = from_f64<TX>(load_f64(x + p) - s);
    }
  }
}

int64_t project_cuda(const std::vector<int64_t>& x_ptrs, const std::vector<int64_t>& row_ptrs,
                     const std::vector<int64_t>& lds, const std::vector<int64_t>& ns, int64_t k,
                     int64_t y_ptr, int x_dtype, int row_dtype, uintptr_t stream,
                     int64_t partials_ptr, int64_t max_blocks) {
  const size_t T = x_ptrs.size();
  check_common(T, row_ptrs.size(), lds.size(), ns.size(), k, "project_cuda");
  dispatch_pair(x_dtype, row_dtype, [](auto, auto) {});  // validate even when there is no work
  const std::vector<Launch> launches =
      plan_table("project_cuda", x_ptrs, {}, row_ptrs, lds, ns, kChunk, max_blocks);
  if (launches.empty()) return 0;
  if (partials_ptr == 0 || y_ptr == 0) {
    throw std::invalid_argument("project_cuda: partials_ptr and y_ptr must be device pointers");
  }
  double* partials = reinterpret_cast<double*>(static_cast<uintptr_t>(partials_ptr));
  const double* y = reinterpret_cast<const double*>(static_cast<uintptr_t>(y_ptr));
  const cudaStream_t s = as_stream(stream);
  const int kk = static_cast<int>(k);
  pybind11::gil_scoped_release nogil;
  dispatch_pair(x_dtype, row_dtype, [&](auto tx, auto tr) {
    using TX = typename decltype(tx)::type;
    using TR = typename decltype(tr)::type;
    if (kk <= kMaxFusedK) {
      dispatch_tile<kMaxFusedK>(kk, [&](auto kt) {
        constexpr int KT = decltype(kt)::value;
        for_each_launch(launches, [&](const Launch& L) {
          project_kernel<TX, TR, KT>
              <<<L.grid_x, kThreads, 0, s>>>(L.tab, kk, y, partials, L.row_base);
        });
      });
    } else {
      for_each_launch(launches, [&](const Launch& L) {
        subtract_kernel<TX, TR><<<L.grid_x, kThreads, 0, s>>>(L.tab, kk, y);
      });
      launch_dot(launches, kk, x_dtype, row_dtype, partials, k + 1, s);
    }
  });
  return rows_written(launches);
}

void register_project_cuda(pybind11::module_& m) {
  namespace py = pybind11;
  m.def("project_cuda", &project_cuda, py::arg("x_ptrs"), py::arg("row_ptrs"), py::arg("lds"),
        py::arg("ns"), py::arg("k"), py::arg("y_ptr"), py::arg("x_dtype"), py::arg("row_dtype"),
        py::arg("stream"), py::arg("partials_ptr"), py::arg("max_blocks"),
        "CUDA fused projection (docs/kernels.md) on `stream`: x -= y @ rows in place, then writes "
        "per-block float64 partial sums of <rows_j, x>, ‖x‖² (rows of k + 1 entries) to the device "
        "buffer at partials_ptr (max_blocks rows); returns the number of rows written.");
}

}  // namespace
}  // namespace cuda
}  // namespace uno

UNO_REGISTER(project, cuda);
