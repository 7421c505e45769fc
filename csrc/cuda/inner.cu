// CUDA `inner`: inner products of x with k rows, ‖x‖² and optionally the rows' packed Gram matrix,
// over a list of pieces (docs/kernels.md). Every block writes its float64 partial sums to its own
// row of a scratch buffer (no atomics); the Python adapter adds the rows on the device. For a fixed
// grid the summation order is fixed, so results are bitwise reproducible.
//
// Work split: a launch covers up to kMaxPieces pieces cut into chunks of kChunk columns; block
// (bx, task) walks chunks bx, bx + gridDim.x, ... and blockIdx.y selects a *task*, a subset of the
// output entries whose rows the task reads:
//   dot_kernel  (no Gram): task a = row tile [a*KT, a*KT + KT) ∩ [0, k) (KT <= 16); task 0 also
//   ‖x‖². gram_kernel (Gram):    task = pair of row tiles (a, b), a <= b (GT <= 8); diagonal tasks
//   (a, a) also
//                          compute <rows_a, x>, and (0, 0) ‖x‖², so k <= 8 reads x and the rows
//                          once.
// Tasks write disjoint columns of the same partial row, so gridDim.x is the number of partial rows.
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

// Columns a thread handles per loop iteration: more independent loads in flight for small tiles.
template <int KT>
constexpr int unroll_for() {
  return KT <= 2 ? 4 : (KT <= 8 ? 2 : 1);
}

// out[j] (j in tile blockIdx.y) = Σ_p rows[j][p] x[p]; out[k] = Σ_p x[p]² (tile 0).
template <typename TX, typename TR, int KT>
__global__ void __launch_bounds__(kThreads) dot_kernel(
    const __grid_constant__ Table tab,  // a[t]: x piece (n[t],) TX; b[t]: rows (k, n[t]) TR
    int k,                              // rows per piece
    double* __restrict__ partials,      // (>= row_base + gridDim.x, W) float64, row-major
    int64_t W,                          // columns of partials
    int64_t row_base) {                 // first partial row of this launch
  constexpr int U = unroll_for<KT>();
  __shared__ double red[kWarps * (KT + 1)];
  const int j0 = blockIdx.y * KT;
  const int nt = min(KT, k - j0);
  const bool norm = blockIdx.y == 0;
  double acc[KT + 1];
#pragma unroll
  for (int v = 0; v <= KT; ++v) acc[v] = 0.0;

  for (int64_t c = blockIdx.x; c < tab.total_chunks; c += gridDim.x) {
    const auto [t, p0, p1] = chunk_span(tab, c);
    const int64_t ld = tab.ldb[t];
    const TX* __restrict__ x = static_cast<const TX*>(tab.a[t]);
    const TR* __restrict__ r = static_cast<const TR*>(tab.b[t]) + static_cast<int64_t>(j0) * ld;
    for (int64_t p = p0 + threadIdx.x; p < p1; p += int64_t{U} * kThreads) {
      double xv[U];
      double rv[U][KT];
      load_cols<U>(x, true, p, p1, xv);
      load_rows<U, KT>(r, ld, nt, p, p1, rv);
#pragma unroll
      for (int u = 0; u < U; ++u) {
#pragma unroll
        for (int jj = 0; jj < KT; ++jj) acc[jj] = fma(rv[u][jj], xv[u], acc[jj]);
        if (norm) acc[KT] = fma(xv[u], xv[u], acc[KT]);
      }
    }
  }

  block_sum<KT + 1>(acc, red);
  double* out = partials + (row_base + blockIdx.x) * W;
  if (threadIdx.x < nt) out[j0 + threadIdx.x] = red[threadIdx.x];
  if (norm && threadIdx.x == 0) out[k] = red[KT];
}

// Index of G[i][j] (i <= j) in the packed upper triangle, row by row.
__device__ __forceinline__ int64_t tri_index(int64_t i, int64_t j, int64_t k) {
  return i * k - i * (i - 1) / 2 + (j - i);
}

// Gram block of row tiles (a, b) (blockIdx.y enumerates a <= b row by row); diagonal tasks also do
// the x part of their tile (zeros when x is None).
template <typename TX, typename TR, int GT>
__global__ void __launch_bounds__(kThreads) gram_kernel(
    const __grid_constant__ Table tab,  // a[t]: x (n[t],) TX or nullptr; b[t]: (k, n[t]) TR
    int k,                              // rows per piece
    bool has_x,                         // x given (else the x entries are written as 0)
    double* __restrict__ partials,      // (>= row_base + gridDim.x, W) float64
    int64_t W,                          // k + 1 + k(k+1)/2
    int64_t row_base) {
  constexpr int U = GT <= 2 ? 4 : (GT <= 4 ? 2 : 1);
  constexpr int G2 = GT * GT;
  constexpr int V = G2 + GT + 1;  // Gram block, <rows_a, x>, ‖x‖²
  __shared__ double red[kWarps * V];

  const int ntiles = (k + GT - 1) / GT;
  int ta = 0, rem = static_cast<int>(blockIdx.y);
  while (rem >= ntiles - ta) {
    rem -= ntiles - ta;
    ++ta;
  }
  const int tb = ta + rem;
  const bool diag = ta == tb;
  const int ia = ta * GT, ib = tb * GT;
  const int na = min(GT, k - ia), nb = min(GT, k - ib);
  const bool do_x = has_x && diag;
  const bool do_norm = do_x && ta == 0;

  double acc[V];
#pragma unroll
  for (int v = 0; v < V; ++v) acc[v] = 0.0;

  for (int64_t c = blockIdx.x; c < tab.total_chunks; c += gridDim.x) {
    const auto [t, p0, p1] = chunk_span(tab, c);
    const int64_t ld = tab.ldb[t];
    const TR* __restrict__ ra = static_cast<const TR*>(tab.b[t]) + static_cast<int64_t>(ia) * ld;
    const TR* __restrict__ rb = static_cast<const TR*>(tab.b[t]) + static_cast<int64_t>(ib) * ld;
    const TX* __restrict__ x = static_cast<const TX*>(tab.a[t]);
    if (diag) {
      for (int64_t p = p0 + threadIdx.x; p < p1; p += int64_t{U} * kThreads) {
        double va[U][GT];
        double xv[U];
        load_cols<U>(x, do_x, p, p1, xv);
        load_rows<U, GT>(ra, ld, na, p, p1, va);
#pragma unroll
        for (int u = 0; u < U; ++u) {
#pragma unroll
          for (int ii = 0; ii < GT; ++ii) {
#pragma unroll
            for (int jj = ii; jj < GT; ++jj) {
              acc[ii * GT + jj] = fma(va[u][ii], va[u][jj], acc[ii * GT + jj]);
            }
            acc[G2 + ii] = fma(va[u][ii], xv[u], acc[G2 + ii]);
          }
          acc[G2 + GT] = fma(xv[u], xv[u], acc[G2 + GT]);
        }
      }
    } else {
      for (int64_t p = p0 + threadIdx.x; p < p1; p += int64_t{U} * kThreads) {
        double va[U][GT];
        double vb[U][GT];
        load_rows<U, GT>(ra, ld, na, p, p1, va);
        load_rows<U, GT>(rb, ld, nb, p, p1, vb);
#pragma unroll
        for (int u = 0; u < U; ++u) {
#pragma unroll
          for (int ii = 0; ii < GT; ++ii) {
#pragma unroll
            for (int jj = 0; jj < GT; ++jj) {
              acc[ii * GT + jj] = fma(va[u][ii], vb[u][jj], acc[ii * GT + jj]);
            }
          }
        }
      }
    }
  }

  block_sum<V>(acc, red);
  double* out = partials + (row_base + blockIdx.x) * W;
  for (int v = threadIdx.x; v < V; v += kThreads) {
    if (v < G2) {
      const int ii = v / GT, jj = v % GT;
      if (ii < na && jj < nb && (!diag || jj >= ii)) {
        out[k + 1 + tri_index(ia + ii, ib + jj, k)] = red[v];
      }
    } else if (v < G2 + GT) {
      const int ii = v - G2;
      if (diag && ii < na) out[ia + ii] = do_x ? red[v] : 0.0;
    } else if (diag && ta == 0) {
      out[k] = do_norm ? red[v] : 0.0;
    }
  }
}

// Returns the number of partial rows written to partials (max_blocks x W float64, row-major).
int64_t inner_cuda(const std::vector<int64_t>& x_ptrs, const std::vector<int64_t>& row_ptrs,
                   const std::vector<int64_t>& lds, const std::vector<int64_t>& ns, int64_t k,
                   bool with_gram, int x_dtype, int row_dtype, uintptr_t stream,
                   int64_t partials_ptr, int64_t max_blocks) {
  const size_t T = row_ptrs.size();
  check_common(T, row_ptrs.size(), lds.size(), ns.size(), k, "inner_cuda");
  if (!x_ptrs.empty() && x_ptrs.size() != T) {
    throw std::invalid_argument("inner_cuda: x_ptrs has " + std::to_string(x_ptrs.size()) +
                                " entries, expected 0 (x is None) or " + std::to_string(T));
  }
  const bool has_x = !x_ptrs.empty();
  // Validate the dtype pair even when there is nothing to do, so bad input always raises.
  dispatch_pair(has_x ? x_dtype : row_dtype, row_dtype, [](auto, auto) {});
  if (!has_x && !with_gram) return 0;  // all W = k + 1 entries are 0: the adapter sums no rows
  const int64_t W = k + 1 + (with_gram ? k * (k + 1) / 2 : 0);
  const std::vector<Launch> launches =
      plan_table("inner_cuda", x_ptrs, {}, row_ptrs, lds, ns, kChunk, max_blocks);
  if (launches.empty()) return 0;
  if (partials_ptr == 0) throw std::invalid_argument("inner_cuda: partials_ptr is null");
  double* partials = reinterpret_cast<double*>(static_cast<uintptr_t>(partials_ptr));
  const cudaStream_t s = as_stream(stream);
  const int kk = static_cast<int>(k);
  {
    pybind11::gil_scoped_release nogil;
    if (!with_gram) {
      launch_dot(launches, kk, x_dtype, row_dtype, partials, W, s);
    } else {
      dispatch_pair(has_x ? x_dtype : row_dtype, row_dtype, [&](auto tx, auto tr) {
        using TX = typename decltype(tx)::type;
        using TR = typename decltype(tr)::type;
        dispatch_tile<8>(kk, [&](auto gt) {
          constexpr int GT = decltype(gt)::value;
          const int ntiles = (kk + GT - 1) / GT;
          const int64_t tasks = int64_t{ntiles} * (ntiles + 1) / 2;
          if (tasks > 65535) {
            throw std::invalid_argument("inner_cuda: k=" + std::to_string(k) +
                                        " is too large for the Gram kernel (k <= 2888)");
          }
          for_each_launch(launches, [&](const Launch& L) {
            const dim3 grid(L.grid_x, static_cast<unsigned>(tasks));
            gram_kernel<TX, TR, GT>
                <<<grid, kThreads, 0, s>>>(L.tab, kk, has_x, partials, W, L.row_base);
          });
        });
      });
    }
  }
  return rows_written(launches);
}

void register_inner_cuda(pybind11::module_& m) {
  namespace py = pybind11;
  m.def("inner_cuda", &inner_cuda, py::arg("x_ptrs"), py::arg("row_ptrs"), py::arg("lds"),
        py::arg("ns"), py::arg("k"), py::arg("with_gram"), py::arg("x_dtype"), py::arg("row_dtype"),
        py::arg("stream"), py::arg("partials_ptr"), py::arg("max_blocks"),
        "CUDA inner products (docs/kernels.md) on `stream`: writes per-block float64 partial sums "
        "(rows of W = k + 1 (+ k(k+1)/2) entries) to the device buffer at partials_ptr (max_blocks "
        "rows) and returns the number of rows written; their column sums are the result.");
  m.attr("cuda_pieces_per_launch") = kMaxPieces;
  m.attr("cuda_threads_per_block") = kThreads;
}

}  // namespace

void launch_dot(const std::vector<Launch>& launches, int k, int x_dtype, int row_dtype,
                double* partials, int64_t W, cudaStream_t stream) {
  dispatch_pair(x_dtype, row_dtype, [&](auto tx, auto tr) {
    using TX = typename decltype(tx)::type;
    using TR = typename decltype(tr)::type;
    dispatch_tile<16>(k, [&](auto kt) {
      constexpr int KT = decltype(kt)::value;
      const unsigned tiles = static_cast<unsigned>((k + KT - 1) / KT);
      if (tiles > 65535u) throw std::invalid_argument("inner_cuda: k too large");
      for_each_launch(launches, [&](const Launch& L) {
        const dim3 grid(L.grid_x, tiles);
        dot_kernel<TX, TR, KT><<<grid, kThreads, 0, stream>>>(L.tab, k, partials, W, L.row_base);
      });
    });
  });
}

}  // namespace cuda
}  // namespace uno

UNO_REGISTER(inner, cuda);
