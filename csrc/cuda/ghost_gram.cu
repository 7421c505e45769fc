// CUDA kernel of the ghost Gram product (python/uno/reference/ghost_gram.py is the spec; the CPU
// kernel csrc/cpu/ghost_gram.cpp documents the maths):
//   out[i, j] = sum_{s < T1, t < T2} <A[i, s], A2[j, t]> * <G[i, s], G2[j, t]>.
//
// One block per sample pair (i, j) (j >= i for a symmetric Gram, which stores both entries). The
// block walks 16 x 16 tiles of position pairs (s, t); thread (ty, tx) owns the pair (s0 + ty, t0 +
// tx) and forms its entries of the two small Gram blocks A_i A2_j^T and G_i G2_j^T from 16 x 16
// shared memory tiles along d and p (a classic tiled GEMM), in the compute type (float64 for
// float64 inputs, else float32), multiplies them in float64 and adds to a float64 register. The 256
// registers are summed by block_sum (a fixed tree): deterministic, no atomics.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "uno/cuda_utils.cuh"
#include "uno/registry.h"

namespace uno {
namespace cuda {
namespace {

constexpr int kTile = 16;  // kTile * kTile == kThreads
static_assert(kTile * kTile == kThreads, "one thread per (s, t) entry of a tile");

struct View3 {
  int64_t sb, st, sk;  // element strides of a (B, T, K) operand
};

// acc[ty][tx] += sum_k X[s0 + ty, k] * Y[t0 + tx, k] over k < K (rows beyond T read as zero).
template <typename S, typename C>
__device__ __forceinline__ C tile_dot(const S* __restrict__ x, View3 vx, int64_t T1,
                                      const S* __restrict__ y, View3 vy, int64_t T2, int64_t K,
                                      int64_t s0, int64_t t0, C (*xs)[kTile + 1],
                                      C (*ys)[kTile + 1]) {
  const int tx = threadIdx.x % kTile, ty = threadIdx.x / kTile;
  C sum = C(0);
  for (int64_t k0 = 0; k0 < K; k0 += kTile) {
    const int64_t k = k0 + tx;
    const int64_t s = s0 + ty, t = t0 + ty;
    xs[ty][tx] = (s < T1 && k < K) ? static_cast<C>(load_f64(x + s * vx.st + k * vx.sk)) : C(0);
    ys[ty][tx] = (t < T2 && k < K) ? static_cast<C>(load_f64(y + t * vy.st + k * vy.sk)) : C(0);
    __syncthreads();
#pragma unroll
    for (int q = 0; q < kTile; ++q) sum += xs[ty][q] * ys[tx][q];
    __syncthreads();
  }
  return sum;
}

template <typename S>
__global__ void __launch_bounds__(kThreads)
    ghost_gram_kernel(const S* __restrict__ a, View3 va, const S* __restrict__ g, View3 vg,
                      const S* __restrict__ a2, View3 va2, const S* __restrict__ g2, View3 vg2,
                      int64_t B2, int64_t T1, int64_t T2, int64_t d, int64_t p, bool diag,
                      bool symmetric, double* __restrict__ out) {
  using C = std::conditional_t<std::is_same_v<S, double>, double, float>;
  __shared__ C xs[kTile][kTile + 1];
  __shared__ C ys[kTile][kTile + 1];
  __shared__ double red[kWarps];
  const int64_t q = blockIdx.x;
  const int64_t i = diag ? q : q / B2;
  const int64_t j = diag ? q : q % B2;
  if (symmetric && !diag && j < i) return;  // uniform over the block: before any barrier
  const S* ai = a + i * va.sb;
  const S* gi = g + i * vg.sb;
  const S* aj = a2 + j * va2.sb;
  const S* gj = g2 + j * vg2.sb;
  double acc = 0.0;
  for (int64_t s0 = 0; s0 < T1; s0 += kTile) {
    for (int64_t t0 = 0; t0 < T2; t0 += kTile) {
      const C sa = tile_dot<S, C>(ai, va, T1, aj, va2, T2, d, s0, t0, xs, ys);
      const C sg = tile_dot<S, C>(gi, vg, T1, gj, vg2, T2, p, s0, t0, xs, ys);
      acc += static_cast<double>(sa) * static_cast<double>(sg);  // zero outside [0,T1)x[0,T2)
    }
  }
  double vals[1] = {acc};
  block_sum<1>(vals, red);
  if (threadIdx.x == 0) {
    if (diag) {
      out[i] = red[0];
    } else {
      out[i * B2 + j] = red[0];
      if (symmetric) out[j * B2 + i] = red[0];
    }
  }
}

View3 view(const std::vector<int64_t>& strides, const char* name) {
  if (strides.size() != 3) {
    throw std::invalid_argument(std::string("ghost_gram_cuda: ") + name + " needs 3 strides, got " +
                                std::to_string(strides.size()));
  }
  return View3{strides[0], strides[1], strides[2]};
}

void ghost_gram_cuda(int64_t a_ptr, const std::vector<int64_t>& a_strides, int64_t g_ptr,
                     const std::vector<int64_t>& g_strides, int64_t a2_ptr,
                     const std::vector<int64_t>& a2_strides, int64_t g2_ptr,
                     const std::vector<int64_t>& g2_strides, int64_t b1, int64_t t1, int64_t b2,
                     int64_t t2, int64_t d, int64_t p, int dtype, bool diag, bool symmetric,
                     int64_t out_ptr, uintptr_t stream) {
  const std::string w = "ghost_gram_cuda";
  if (b1 < 0 || t1 < 0 || b2 < 0 || t2 < 0 || d < 0 || p < 0) {
    throw std::invalid_argument(w + ": negative size");
  }
  if (symmetric && (b2 != b1 || t2 != t1)) {
    throw std::invalid_argument(w + ": symmetric needs b2 == b1 and t2 == t1");
  }
  if (diag && !symmetric) throw std::invalid_argument(w + ": diag needs symmetric");
  const View3 va = view(a_strides, "a"), vg = view(g_strides, "g");
  const View3 va2 = symmetric ? va : view(a2_strides, "a2");
  const View3 vg2 = symmetric ? vg : view(g2_strides, "g2");
  dispatch_dtype(dtype, "ghost_gram_cuda inputs", [](auto) {});
  const int64_t nout = diag ? b1 : b1 * b2;
  if (nout == 0) return;
  if (out_ptr == 0) throw std::invalid_argument(w + ": out_ptr is null");
  if (nout > INT32_MAX) throw std::invalid_argument(w + ": too many output entries");
  double* out = reinterpret_cast<double*>(static_cast<uintptr_t>(out_ptr));
  const cudaStream_t s = as_stream(stream);
  pybind11::gil_scoped_release nogil;
  if (t1 == 0 || t2 == 0 || d == 0 || p == 0) {
    UNO_CUDA_CHECK(cudaMemsetAsync(out, 0, static_cast<size_t>(nout) * sizeof(double), s));
    return;
  }
  if (a_ptr == 0 || g_ptr == 0 || (!symmetric && (a2_ptr == 0 || g2_ptr == 0))) {
    throw std::invalid_argument(w + ": null input pointer");
  }
  const int64_t sa2 = symmetric ? a_ptr : a2_ptr, sg2 = symmetric ? g_ptr : g2_ptr;
  dispatch_dtype(dtype, "ghost_gram_cuda inputs", [&](auto tag) {
    using S = typename decltype(tag)::type;
    const dim3 grid(static_cast<unsigned>(nout));
    ghost_gram_kernel<S><<<grid, kThreads, 0, s>>>(
        reinterpret_cast<const S*>(a_ptr), va, reinterpret_cast<const S*>(g_ptr), vg,
        reinterpret_cast<const S*>(sa2), va2, reinterpret_cast<const S*>(sg2), vg2, diag ? b1 : b2,
        t1, t2, d, p, diag, symmetric, out);
    UNO_CUDA_CHECK_LAUNCH();
  });
}

void register_ghost_gram_cuda(pybind11::module_& m) {
  namespace py = pybind11;
  m.def(
      "ghost_gram_cuda", &ghost_gram_cuda, py::arg("a_ptr"), py::arg("a_strides"), py::arg("g_ptr"),
      py::arg("g_strides"), py::arg("a2_ptr"), py::arg("a2_strides"), py::arg("g2_ptr"),
      py::arg("g2_strides"), py::arg("b1"), py::arg("t1"), py::arg("b2"), py::arg("t2"),
      py::arg("d"), py::arg("p"), py::arg("dtype"), py::arg("diag"), py::arg("symmetric"),
      py::arg("out_ptr"), py::arg("stream"),
      "Ghost Gram of one factored layer on `stream` (python/uno/reference/ghost_gram.py is the "
      "spec): writes float64 out[i, j] ((b1, b2) row-major, device memory), or out[i] when diag.");
}

}  // namespace
}  // namespace cuda
}  // namespace uno

UNO_REGISTER(ghost_gram, cuda);
