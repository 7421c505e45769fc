// CUDA fused projected optimizer step (spec: python/uno/reference/optim_step.py; CPU twin:
// csrc/cpu/optim_step.cpp). Phases:
//   phase 0 (write):       SGD/Adam step; with coefficients, g' = g - sum_j c_j q_j
//                          (project="grad") or p' = p + u - sum_j c_j q_j (project="update"),
//                          formed in float64; c is read from a (k,) float64 device buffer.
//   phase 1 (grad coef):   c = [<q_j, g>]_j in float64.
//   phase 2 (update coef): c = [<q_j, u>]_j (u recomputed, nothing written).
//
// Launch structure. One launch covers up to kOptPieces = 256 pieces (the piece table travels as a
// ~20 KiB __grid_constant__ kernel argument: CUDA >= 12.1 allows 32,764 bytes of kernel parameters
// on Volta and newer, see kOptPieces). A coefficient launch writes one float64 partial row per
// block, then every block fences and counts itself on a device counter; the last block to arrive
// sums the partial rows in a fixed order (deterministic for a fixed grid), stores the (k,)
// coefficients in the caller's device buffer and resets the counter to 0. So a projected step with
// k <= 16 over <= 256 pieces is 2 launches: coefficients, then write; no reduction kernel, no host
// synchronisation. k > 16 runs ceil(k / 16) coefficient launches (register tiles of 16 rows, each
// re-reading g); more than 256 pieces run one launch per group of 256 per phase and tile, and the
// last group's launch finishes the sum over every group's rows (earlier launches precede it on the
// stream). With kStepsPending (Adam, set by the cuda adapter only) the kernels use step + 1 as
// this step's count and the last block of each write launch stores it (not when found_inf != 0):
// the step-count increment costs no extra launch either.
// found_inf, grad_scale and the Adam step counts are read on the device, and the counter is left at
// 0 by every launch, so a step is capturable in a CUDA graph and replayable.
// Status: compiled for sm_80/sm_90 with nvcc 13.0; this launch structure has NOT been run on a GPU
// yet (scripts/gpu_check.sh, section "ProjectedAdam", checks it on a lent machine).
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

// Kernel parameters may total 32,764 bytes (was 4,096) with CUDA >= 12.1 on Volta (sm_70) and
// newer: NVIDIA, "CUDA 12.1 Supports Large Kernel Parameters",
// https://developer.nvidia.com/blog/cuda-12-1-supports-large-kernel-parameters/ . This package
// targets sm_80/sm_90; an older toolkit keeps the 4 KiB table (32 pieces per launch, more groups).
#if defined(CUDART_VERSION) && CUDART_VERSION >= 12010
constexpr size_t kMaxKernelParamBytes = 32764;
constexpr int kOptPieces = 256;  // pieces per launch: one launch covers a realistic parameter list
#else
constexpr size_t kMaxKernelParamBytes = 4096;
constexpr int kOptPieces = 32;
#endif
using namespace ::uno::step;  // kinds, phases and flags, kStepsPending (uno/abi.h)

struct OptTable {
  int count;             // pieces in this launch (>= 1; empty pieces included, they own no chunk)
  int64_t chunk;         // columns per chunk
  int64_t total_chunks;  // == chunk_begin[count]
  int64_t chunk_begin[kOptPieces + 1];
  void* p[kOptPieces];           // parameter piece (n[t],)
  void* g[kOptPieces];           // gradient piece
  void* s1[kOptPieces];          // momentum buffer / exp_avg (or nullptr)
  void* s2[kOptPieces];          // exp_avg_sq (or nullptr)
  void* s3[kOptPieces];          // max_exp_avg_sq (or nullptr)
  float* step[kOptPieces];       // Adam step count (or nullptr); written only with kStepsPending
  const void* rows[kOptPieces];  // (k, n[t]) rows with row stride ld[t] (or nullptr)
  int64_t ld[kOptPieces];
  int64_t n[kOptPieces];
};

struct Hyper {
  double lr, h1, h2, h3, wd;  // SGD: lr, momentum, 1 - dampening, -, wd; Adam: lr, b1, b2, eps, wd
  int flags;
  int has_mom;   // SGD: momentum buffers present
  int use_rows;  // write phase: subtract sum_j coef_j q_j (grad or update)
};

// Every other kernel argument (k, j0, 7 pointers, 2 int64), rounded up generously for padding.
constexpr size_t kOptOtherArgBytes = sizeof(Hyper) + 2 * sizeof(int) + 9 * sizeof(int64_t) + 64;
static_assert(sizeof(OptTable) + kOptOtherArgBytes <= kMaxKernelParamBytes,
              "optim piece table too large for the kernel-argument limit");

// Called by every thread of every block after the block's global writes; true (block-uniform) in
// the one block that arrives last, which then sees every other block's writes. Classic
// threadfence reduction: the fence before the count publishes this block's writes (and orders its
// reads before the count); the fence after the count orders the last block's reads after it.
__device__ __forceinline__ bool last_block_to_arrive(unsigned* counter) {
  __shared__ unsigned arrived_last;
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) {
    const unsigned before = atomicAdd(counter, 1u);
    arrived_last = before == gridDim.x - 1 ? 1u : 0u;
    if (arrived_last) *counter = 0u;  // everyone has counted: reset for the next launch / replay
  }
  __syncthreads();
  const bool last = arrived_last != 0u;
  if (last) __threadfence();
  return last;
}

template <typename P, typename R, typename S, int KIND, int PHASE, int KT>
__global__ void __launch_bounds__(kThreads)
    optim_step_kernel(const __grid_constant__ OptTable tab,  // the pieces of this launch
                      const Hyper h,                         // hyperparameters and flags
                      int k,                                 // basis rows (0: none)
                      int j0,  // coefficient phases: first row of this launch's tile
                      const double* __restrict__ coef,   // (k,) float64, write phase (or nullptr)
                      const float* __restrict__ gscale,  // () grad scale (or nullptr)
                      const float* __restrict__ found_inf,  // () (or nullptr)
                      double* __restrict__ partials,   // (>= finish_rows, k) float64 scratch rows
                      int64_t row_base,                // first partial row of this launch
                      unsigned* __restrict__ counter,  // () 0 on entry and exit; nullptr: no
                                                       // last-block epilogue in this launch
                      int64_t finish_rows,  // coefficient phases: rows [0, finish_rows) the last
                                            // block sums (all groups' rows); write phase: unused
                      double* __restrict__ coef_out) {  // (k,) float64 result, coef phases
  using C = std::conditional_t<std::is_same<P, double>::value, double, float>;
  __shared__ double red[kWarps * KT];
  double acc[KT];
#pragma unroll
  for (int v = 0; v < KT; ++v) acc[v] = 0.0;
  const bool skip = found_inf != nullptr && *found_inf != 0.0f;
  const int flags = h.flags;
  const bool maximize = flags & kMaximize, nesterov = flags & kNesterov, first = flags & kFirst;
  const bool write_grad = (flags & kWriteGrad) && PHASE == 0;
  const bool proj_update = flags & kProjectUpdate;
  const bool ams = flags & kAmsgrad, decoupled = flags & kDecoupled;
  const bool pending = flags & kStepsPending;
  // A non-finite coefficient (a nan/inf gradient element) is not projected out: the write phase
  // then runs the stock step (the reference's rule). Every thread reads the k coefficients here, on
  // the device: no host synchronisation.
  bool coef_ok = PHASE == 0 && h.use_rows;
  if (coef_ok) {
    for (int j = 0; j < k; ++j) coef_ok = coef_ok && isfinite(__ldg(coef + j));
  }
  const bool proj_grad = coef_ok && !proj_update;
  const bool proj_upd_write = coef_ok && proj_update;
  const C scale = gscale != nullptr ? static_cast<C>(*gscale) : C(1);
  const C lr = static_cast<C>(h.lr), h1 = static_cast<C>(h.h1), h2 = static_cast<C>(h.h2);
  const C eps = static_cast<C>(h.h3), wd = static_cast<C>(h.wd);
  const C decay = static_cast<C>(1.0 - h.lr * h.wd), neg_lr_wd = static_cast<C>(-(h.lr * h.wd));

  for (int64_t c = skip ? tab.total_chunks : blockIdx.x; c < tab.total_chunks; c += gridDim.x) {
    const auto [t, p0, p1] = chunk_span(tab, c);
    P* __restrict__ pp = static_cast<P*>(tab.p[t]);
    P* __restrict__ gp = static_cast<P*>(tab.g[t]);
    S* __restrict__ b1 = static_cast<S*>(tab.s1[t]);
    S* __restrict__ b2 = static_cast<S*>(tab.s2[t]);
    S* __restrict__ b3 = static_cast<S*>(tab.s3[t]);
    const R* __restrict__ rw = static_cast<const R*>(tab.rows[t]);
    const int64_t ld = tab.ld[t];
    C step_size = C(0), bc2_sqrt = C(1);
    if (KIND == kAdam) {
      // float32 increment as torch._foreach_add_(steps, 1) would make it.
      const float st32 = pending ? *tab.step[t] + 1.0f : *tab.step[t];
      const double st = static_cast<double>(st32);
      step_size = static_cast<C>(h.lr / (1.0 - pow(h.h1, st)));
      bc2_sqrt = static_cast<C>(sqrt(1.0 - pow(h.h2, st)));
    }
    for (int64_t q = p0 + threadIdx.x; q < p1; q += kThreads) {
      if (PHASE == 1) {
        const double gv = load_f64(gp + q);
#pragma unroll
        for (int jj = 0; jj < KT; ++jj) {
          if (j0 + jj < k) acc[jj] = fma(load_f64(rw + (j0 + jj) * ld + q), gv, acc[jj]);
        }
        continue;
      }
      double sproj = 0.0;
      if (proj_grad || proj_upd_write) {
        for (int j = 0; j < k; ++j) sproj = fma(__ldg(coef + j), load_f64(rw + j * ld + q), sproj);
      }
      C g;
      if (proj_grad) {
        g = static_cast<C>(to_f64(from_f64<P>(load_f64(gp + q) - sproj)));  // rounded to P once
      } else {
        g = static_cast<C>(load_f64(gp + q));
      }
      if (gscale != nullptr) g = g / scale;
      if (write_grad) gp[q] = from_f64<P>(static_cast<double>(g));
      const C p = static_cast<C>(load_f64(pp + q));
      C d = maximize ? -g : g;
      C u, pnew;
      if (KIND == kSgd) {
        d = d + wd * p;
        if (h.has_mom) {
          const C buf = first ? d : static_cast<C>(load_f64(b1 + q)) * h1 + h2 * d;
          if (PHASE == 0) b1[q] = from_f64<S>(static_cast<double>(buf));
          d = nesterov ? d + h1 * buf : buf;
        }
        u = -lr * d;
        pnew = p + u;
      } else {
        const C pd = decoupled ? p * decay : p;
        const C ud = decoupled ? neg_lr_wd * p : C(0);
        if (!decoupled) d = d + wd * p;
        C m = static_cast<C>(load_f64(b1 + q));
        m = m + (C(1) - h1) * (d - m);
        const C v = static_cast<C>(load_f64(b2 + q)) * h2 + (C(1) - h2) * d * d;
        C vh = v;
        if (ams) {
          const C vm = static_cast<C>(load_f64(b3 + q));
          vh = vm > v ? vm : v;
        }
        if (PHASE == 0) {
          b1[q] = from_f64<S>(static_cast<double>(m));
          b2[q] = from_f64<S>(static_cast<double>(v));
          if (ams) b3[q] = from_f64<S>(static_cast<double>(vh));
        }
        const C denom = sqrt(vh) / bc2_sqrt + eps;
        const C upd = -step_size * (m / denom);
        u = ud + upd;
        pnew = pd + upd;
      }
      if (PHASE == 2) {
        const double ud64 = static_cast<double>(u);
#pragma unroll
        for (int jj = 0; jj < KT; ++jj) {
          if (j0 + jj < k) acc[jj] = fma(load_f64(rw + (j0 + jj) * ld + q), ud64, acc[jj]);
        }
      } else if (proj_upd_write) {
        pp[q] = from_f64<P>(static_cast<double>(p) + static_cast<double>(u) - sproj);
      } else {
        pp[q] = from_f64<P>(static_cast<double>(pnew));
      }
    }
  }
  if (PHASE != 0) {
    block_sum<KT>(acc, red);
    double* out = partials + (row_base + blockIdx.x) * static_cast<int64_t>(k);
    if (threadIdx.x < KT && j0 + static_cast<int>(threadIdx.x) < k) {
      out[j0 + threadIdx.x] = red[threadIdx.x];
    }
  }
  if (counter == nullptr || !last_block_to_arrive(counter)) return;
  if (PHASE != 0) {
    // The last block: columns [j0, j0 + KT) of rows [0, finish_rows), summed in a fixed order
    // (thread i takes rows i, i + kThreads, ... in turn, then block_sum's fixed tree). __ldcg reads
    // through L2, where the other blocks' rows are.
    double tot[KT];
#pragma unroll
    for (int v = 0; v < KT; ++v) tot[v] = 0.0;
    for (int64_t r = threadIdx.x; r < finish_rows; r += kThreads) {
      const double* row = partials + r * static_cast<int64_t>(k);
#pragma unroll
      for (int jj = 0; jj < KT; ++jj) {
        if (j0 + jj < k) tot[jj] += __ldcg(row + j0 + jj);
      }
    }
    block_sum<KT>(tot, red);
    if (threadIdx.x < KT && j0 + static_cast<int>(threadIdx.x) < k) {
      coef_out[j0 + threadIdx.x] = red[threadIdx.x];
    }
  } else if (KIND == kAdam && pending && !skip) {
    // Every block has read the step counts of its chunks: store this step's count (the host checked
    // that no two pieces share a counter).
    for (int i = threadIdx.x; i < tab.count; i += kThreads) {
      if (tab.step[i] != nullptr) *tab.step[i] = *tab.step[i] + 1.0f;
    }
  }
}

struct OptLaunch {
  OptTable tab;
  unsigned grid_x;
  int64_t row_base;
};

// Groups of <= kOptPieces pieces (empty ones included: their Adam step counts move too); max_blocks
// partial rows shared in proportion to chunks, at least one block per launch. Depends only on the
// sizes and max_blocks, so the summation order is reproducible.
std::vector<OptLaunch> plan(const std::vector<int64_t>& ns, int64_t max_blocks) {
  std::vector<OptLaunch> out;
  const int64_t T = static_cast<int64_t>(ns.size());
  if (T == 0) return out;
  const int64_t groups = (T + kOptPieces - 1) / kOptPieces;
  if (max_blocks < groups) {
    throw std::invalid_argument("optim_step_cuda: max_blocks=" + std::to_string(max_blocks) +
                                " is smaller than the number of launches " +
                                std::to_string(groups));
  }
  int64_t total = 0;
  for (int64_t n : ns) total += (n + kChunk - 1) / kChunk;
  const int64_t budget = max_blocks - groups;
  int64_t row = 0;
  out.resize(groups);
  for (int64_t g = 0; g < groups; ++g) {
    OptLaunch& L = out[g];
    L.tab = OptTable{};
    L.tab.chunk = kChunk;
    const int64_t first = g * kOptPieces;
    const int64_t last = std::min(T, first + kOptPieces);
    int64_t c = 0;
    for (int64_t i = first; i < last; ++i) {
      L.tab.chunk_begin[i - first] = c;
      c += (ns[i] + kChunk - 1) / kChunk;
    }
    L.tab.count = static_cast<int>(last - first);
    L.tab.chunk_begin[L.tab.count] = c;
    L.tab.total_chunks = c;
    int64_t blocks =
        total > 0 ? 1 + static_cast<int64_t>(static_cast<double>(budget) * c / total) : 1;
    blocks = std::max<int64_t>(1, std::min<int64_t>(std::min<int64_t>(blocks, c), 0x7fffffff));
    L.grid_x = static_cast<unsigned>(blocks);
    L.row_base = row;
    row += blocks;
  }
  return out;
}

template <typename F>
void dispatch_opt_dtypes(int p_code, int r_code, int s_code, F&& f) {
  if (p_code == kF32 && r_code == kF32 && s_code == kF32) return f(Tag<float>{}, Tag<float>{});
  if (p_code == kF64 && r_code == kF64 && s_code == kF64) return f(Tag<double>{}, Tag<double>{});
  if (p_code == kF16 && r_code == kF32 && s_code == kF32) return f(Tag<__half>{}, Tag<float>{});
  if (p_code == kBF16 && r_code == kF32 && s_code == kF32) {
    return f(Tag<__nv_bfloat16>{}, Tag<float>{});
  }
  throw std::invalid_argument(
      std::string("optim_step_cuda: unsupported dtypes (params ") + dtype_name(p_code) + ", rows " +
      dtype_name(r_code) + ", states " + dtype_name(s_code) +
      "); the cuda backend takes float32/float64 everything, or float16/bfloat16 params with "
      "float32 basis and float32 states");
}

int64_t optim_step_cuda(int kind, int phase, const std::vector<int64_t>& p_ptrs,
                        const std::vector<int64_t>& g_ptrs, const std::vector<int64_t>& s1_ptrs,
                        const std::vector<int64_t>& s2_ptrs, const std::vector<int64_t>& s3_ptrs,
                        const std::vector<int64_t>& step_ptrs, const std::vector<int64_t>& row_ptrs,
                        const std::vector<int64_t>& lds, const std::vector<int64_t>& ns, int64_t k,
                        int64_t coef_ptr, int64_t grad_scale_ptr, int64_t found_inf_ptr,
                        const std::vector<double>& hyper, int flags, int p_dtype, int r_dtype,
                        int s_dtype, uintptr_t stream, int64_t partials_ptr, int64_t max_blocks,
                        int64_t counter_ptr, int64_t coef_out_ptr) {
  const std::string w = "optim_step_cuda";
  const size_t T = ns.size();
  if (kind != kSgd && kind != kAdam) throw std::invalid_argument(w + ": bad kind");
  if (phase < 0 || phase > 2) throw std::invalid_argument(w + ": phase must be 0, 1 or 2");
  if (p_ptrs.size() != T || g_ptrs.size() != T) {
    throw std::invalid_argument(w + ": params/grads/ns lists differ in length");
  }
  const bool adam = kind == kAdam;
  const bool ams = adam && (flags & kAmsgrad);
  if (adam && (s1_ptrs.size() != T || s2_ptrs.size() != T || step_ptrs.size() != T ||
               (ams && s3_ptrs.size() != T) || hyper.size() < 5)) {
    throw std::invalid_argument(w +
                                ": Adam needs exp_avgs, exp_avg_sqs, steps and 5 hyperparameters");
  }
  if (!adam && ((!s1_ptrs.empty() && s1_ptrs.size() != T) || hyper.size() < 4)) {
    throw std::invalid_argument(w + ": SGD needs 0 or T momentum buffers and 4 hyperparameters");
  }
  if (k < 0 || (k > 0 && (row_ptrs.size() != T || lds.size() != T))) {
    throw std::invalid_argument(w + ": k rows need one row pointer and stride per piece");
  }
  for (int64_t n : ns) {
    if (n < 0) throw std::invalid_argument(w + ": negative piece size");
  }
  dispatch_opt_dtypes(p_dtype, r_dtype, s_dtype, [](auto, auto) {});
  if (phase != 0 && k == 0) return 0;
  const bool pending = adam && (flags & kStepsPending);
  if (!adam) flags &= ~kStepsPending;
  std::vector<OptLaunch> launches = plan(ns, max_blocks);
  if (launches.empty()) return 0;
  if (phase != 0 && (partials_ptr == 0 || coef_out_ptr == 0)) {
    throw std::invalid_argument(w + ": the coefficient phases need partials_ptr and coef_out_ptr");
  }
  if ((phase != 0 || pending) && counter_ptr == 0) {
    throw std::invalid_argument(w +
                                ": counter_ptr is null (needed by the coefficient phases and "
                                "by the write phase with pending step counts)");
  }
  for (size_t g = 0; g < launches.size(); ++g) {
    OptTable& tab = launches[g].tab;
    for (int i = 0; i < tab.count; ++i) {
      const size_t t = g * kOptPieces + i;
      tab.p[i] = reinterpret_cast<void*>(static_cast<uintptr_t>(p_ptrs[t]));
      tab.g[i] = reinterpret_cast<void*>(static_cast<uintptr_t>(g_ptrs[t]));
      tab.s1[i] =
          s1_ptrs.empty() ? nullptr : reinterpret_cast<void*>(static_cast<uintptr_t>(s1_ptrs[t]));
      tab.s2[i] =
          s2_ptrs.empty() ? nullptr : reinterpret_cast<void*>(static_cast<uintptr_t>(s2_ptrs[t]));
      tab.s3[i] = ams ? reinterpret_cast<void*>(static_cast<uintptr_t>(s3_ptrs[t])) : nullptr;
      tab.step[i] = adam ? reinterpret_cast<float*>(static_cast<uintptr_t>(step_ptrs[t])) : nullptr;
      tab.rows[i] =
          k > 0 ? reinterpret_cast<const void*>(static_cast<uintptr_t>(row_ptrs[t])) : nullptr;
      tab.ld[i] = k > 0 ? lds[t] : 0;
      tab.n[i] = ns[t];
    }
  }
  Hyper h{};
  h.lr = hyper[0];
  if (adam) {
    h.h1 = hyper[1];
    h.h2 = hyper[2];
    h.h3 = hyper[3];
    h.wd = hyper[4];
  } else {
    h.h1 = hyper[1];
    h.h2 = 1.0 - hyper[2];
    h.wd = hyper[3];
  }
  h.flags = flags;
  h.has_mom = !s1_ptrs.empty();
  h.use_rows = (phase == 0 && k > 0 && coef_ptr != 0) ? 1 : 0;
  const double* coef = reinterpret_cast<const double*>(static_cast<uintptr_t>(coef_ptr));
  const float* gs = reinterpret_cast<const float*>(static_cast<uintptr_t>(grad_scale_ptr));
  const float* fi = reinterpret_cast<const float*>(static_cast<uintptr_t>(found_inf_ptr));
  double* partials = reinterpret_cast<double*>(static_cast<uintptr_t>(partials_ptr));
  unsigned* counter = reinterpret_cast<unsigned*>(static_cast<uintptr_t>(counter_ptr));
  double* coef_out = reinterpret_cast<double*>(static_cast<uintptr_t>(coef_out_ptr));
  int64_t rows_total = 0;  // partial rows of all groups: the finishing launch sums them all
  for (const OptLaunch& L : launches) rows_total += L.grid_x;
  const cudaStream_t s = as_stream(stream);
  const int kk = static_cast<int>(k);
  int64_t n_launches = 0;
  pybind11::gil_scoped_release nogil;
  dispatch_opt_dtypes(p_dtype, r_dtype, s_dtype, [&](auto tp, auto tr) {
    using P = typename decltype(tp)::type;
    using R = typename decltype(tr)::type;
    using S = std::conditional_t<std::is_same<P, double>::value, double, float>;
    auto run_kind = [&](auto kind_c) {
      constexpr int KIND = decltype(kind_c)::value;
      if (phase == 0) {
        // Each launch's last block stores its pieces' step counts (pending only).
        unsigned* wctr = pending ? counter : nullptr;
        for (const OptLaunch& L : launches) {
          optim_step_kernel<P, R, S, KIND, 0, 1><<<L.grid_x, kThreads, 0, s>>>(
              L.tab, h, kk, 0, coef, gs, fi, nullptr, 0, wctr, 0, nullptr);
          UNO_CUDA_CHECK_LAUNCH();
          ++n_launches;
        }
        return;
      }
      auto run_tile = [&](auto phase_c, auto kt_c) {
        constexpr int PH = decltype(phase_c)::value;
        constexpr int KT = decltype(kt_c)::value;
        for (int j0 = 0; j0 < kk; j0 += KT) {
          for (size_t g = 0; g < launches.size(); ++g) {
            const OptLaunch& L = launches[g];
            // The last group's launch finishes the tile: the earlier groups' launches precede it
            // on the stream, so their partial rows are complete when its last block sums them.
            const bool finish = g + 1 == launches.size();
            optim_step_kernel<P, R, S, KIND, PH, KT><<<L.grid_x, kThreads, 0, s>>>(
                L.tab, h, kk, j0, nullptr, gs, fi, partials, L.row_base, finish ? counter : nullptr,
                finish ? rows_total : 0, coef_out);
            UNO_CUDA_CHECK_LAUNCH();
            ++n_launches;
          }
        }
      };
      auto run_phase = [&](auto phase_c) {
        if (kk <= 1) {
          run_tile(phase_c, std::integral_constant<int, 1>{});
        } else if (kk <= 4) {
          run_tile(phase_c, std::integral_constant<int, 4>{});
        } else {
          run_tile(phase_c, std::integral_constant<int, 16>{});
        }
      };
      if (phase == 1) {
        run_phase(std::integral_constant<int, 1>{});
      } else {
        run_phase(std::integral_constant<int, 2>{});
      }
    };
    if (adam) {
      run_kind(std::integral_constant<int, kAdam>{});
    } else {
      run_kind(std::integral_constant<int, kSgd>{});
    }
  });
  return n_launches;
}

void register_optim_step_cuda(pybind11::module_& m) {
  namespace py = pybind11;
  m.attr("optim_pieces_per_launch") = kOptPieces;
  m.def("optim_step_cuda", &optim_step_cuda, py::arg("kind"), py::arg("phase"), py::arg("p_ptrs"),
        py::arg("g_ptrs"), py::arg("s1_ptrs"), py::arg("s2_ptrs"), py::arg("s3_ptrs"),
        py::arg("step_ptrs"), py::arg("row_ptrs"), py::arg("lds"), py::arg("ns"), py::arg("k"),
        py::arg("coef_ptr"), py::arg("grad_scale_ptr"), py::arg("found_inf_ptr"), py::arg("hyper"),
        py::arg("flags"), py::arg("p_dtype"), py::arg("r_dtype"), py::arg("s_dtype"),
        py::arg("stream"), py::arg("partials_ptr"), py::arg("max_blocks"), py::arg("counter_ptr"),
        py::arg("coef_out_ptr"),
        "Fused projected SGD/Adam step on `stream` (python/uno/reference/optim_step.py is the "
        "spec). Phases 1/2 write per-block float64 partial rows of k to partials_ptr (>= "
        "max_blocks rows) and the last block of the finishing launch stores their fixed-order sum, "
        "the (k,) float64 coefficients, at coef_out_ptr; counter_ptr is a uint32 device counter "
        "that must be 0 on entry and is 0 again when the launches complete (also used by phase 0 "
        "when flags has 128, steps pending). Returns the number of kernel launches made.");
}

}  // namespace
}  // namespace cuda
}  // namespace uno

UNO_REGISTER(optim_step, cuda);
