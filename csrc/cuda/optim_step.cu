// CUDA fused projected optimizer step (spec: python/uno/reference/optim_step.py; CPU twin:
// csrc/cpu/optim_step.cpp). One launch per group of <= kOptPieces pieces per phase:
//   phase 0 (write):       SGD/Adam step; with coefficients, g' = g - sum_j c_j q_j
//   (project="grad")
//                          or p' = p + u - sum_j c_j q_j (project="update"), formed in float64.
//   phase 1 (grad coef):   per-block float64 partial sums of <q_j, g>.
//   phase 2 (update coef): per-block float64 partial sums of <q_j, u> (u recomputed, nothing
//   written).
// found_inf, grad_scale and the Adam step counts are read on the device: no host synchronisation,
// and the piece table travels as a __grid_constant__ kernel argument, so a step is capturable in a
// graph. The coefficient phases hold a register tile of KT <= 16 rows; larger k runs ceil(k / 16)
// launches over column groups of the partial-sum rows (each re-reads g). Deterministic for a fixed
// grid.
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

constexpr int kOptPieces =
    32;  // pieces per launch (the table stays under the 4 KiB argument limit)
constexpr int kSgdKind = 0, kAdamKind = 1;
constexpr int kMaximizeF = 1, kNesterovF = 2, kFirstF = 4, kWriteGradF = 8, kProjectUpdateF = 16,
              kAmsgradF = 32, kDecoupledF = 64;

struct OptTable {
  int count;             // pieces in this launch (all non-empty)
  int64_t chunk;         // columns per chunk
  int64_t total_chunks;  // == chunk_begin[count]
  int64_t chunk_begin[kOptPieces + 1];
  void* p[kOptPieces];            // parameter piece (n[t],)
  void* g[kOptPieces];            // gradient piece
  void* s1[kOptPieces];           // momentum buffer / exp_avg (or nullptr)
  void* s2[kOptPieces];           // exp_avg_sq (or nullptr)
  void* s3[kOptPieces];           // max_exp_avg_sq (or nullptr)
  const float* step[kOptPieces];  // Adam step count (or nullptr)
  const void* rows[kOptPieces];   // (k, n[t]) rows with row stride ld[t] (or nullptr)
  int64_t ld[kOptPieces];
  int64_t n[kOptPieces];
};
static_assert(sizeof(OptTable) <= 3600, "optim piece table too large for a kernel argument");

struct Hyper {
  double lr, h1, h2, h3, wd;  // SGD: lr, momentum, 1 - dampening, -, wd; Adam: lr, b1, b2, eps, wd
  int flags;
  int has_mom;   // SGD: momentum buffers present
  int use_rows;  // write phase: subtract sum_j coef_j q_j (grad or update)
};

__device__ __forceinline__ int find_opt_piece(const OptTable& tab, int64_t c) {
  int lo = 0, hi = tab.count - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (tab.chunk_begin[mid] <= c) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
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
                      double* __restrict__ partials,        // (>= row_base + gridDim.x, k) float64
                      int64_t row_base) {
  using C = std::conditional_t<std::is_same<P, double>::value, double, float>;
  __shared__ double red[kWarps * KT];
  double acc[KT];
#pragma unroll
  for (int v = 0; v < KT; ++v) acc[v] = 0.0;
  const bool skip = found_inf != nullptr && *found_inf != 0.0f;
  const int flags = h.flags;
  const bool maximize = flags & kMaximizeF, nesterov = flags & kNesterovF, first = flags & kFirstF;
  const bool write_grad = (flags & kWriteGradF) && PHASE == 0;
  const bool proj_update = flags & kProjectUpdateF;
  const bool ams = flags & kAmsgradF, decoupled = flags & kDecoupledF;
  const bool proj_grad = PHASE == 0 && h.use_rows && !proj_update;
  const bool proj_upd_write = PHASE == 0 && h.use_rows && proj_update;
  const C scale = gscale != nullptr ? static_cast<C>(*gscale) : C(1);
  const C lr = static_cast<C>(h.lr), h1 = static_cast<C>(h.h1), h2 = static_cast<C>(h.h2);
  const C eps = static_cast<C>(h.h3), wd = static_cast<C>(h.wd);
  const C decay = static_cast<C>(1.0 - h.lr * h.wd), neg_lr_wd = static_cast<C>(-(h.lr * h.wd));

  for (int64_t c = skip ? tab.total_chunks : blockIdx.x; c < tab.total_chunks; c += gridDim.x) {
    const int t = find_opt_piece(tab, c);
    const int64_t p0 = (c - tab.chunk_begin[t]) * tab.chunk;
    const int64_t p1 = min(p0 + tab.chunk, tab.n[t]);
    P* __restrict__ pp = static_cast<P*>(tab.p[t]);
    P* __restrict__ gp = static_cast<P*>(tab.g[t]);
    S* __restrict__ b1 = static_cast<S*>(tab.s1[t]);
    S* __restrict__ b2 = static_cast<S*>(tab.s2[t]);
    S* __restrict__ b3 = static_cast<S*>(tab.s3[t]);
    const R* __restrict__ rw = static_cast<const R*>(tab.rows[t]);
    const int64_t ld = tab.ld[t];
    C step_size = C(0), bc2_sqrt = C(1);
    if (KIND == kAdamKind) {
      const double st = static_cast<double>(*tab.step[t]);
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
      if (KIND == kSgdKind) {
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
}

struct OptLaunch {
  OptTable tab;
  unsigned grid_x;
  int64_t row_base;
};

// Groups of <= kOptPieces non-empty pieces; max_blocks partial rows shared in proportion to chunks.
std::vector<OptLaunch> plan(const std::vector<int64_t>& idx, const std::vector<int64_t>& ns,
                            int64_t max_blocks) {
  std::vector<OptLaunch> out;
  if (idx.empty()) return out;
  const int64_t groups = (static_cast<int64_t>(idx.size()) + kOptPieces - 1) / kOptPieces;
  if (max_blocks < groups) {
    throw std::invalid_argument("optim_step_cuda: max_blocks=" + std::to_string(max_blocks) +
                                " is smaller than the number of launches " +
                                std::to_string(groups));
  }
  int64_t total = 0;
  for (int64_t i : idx) total += (ns[i] + kChunk - 1) / kChunk;
  const int64_t budget = max_blocks - groups;
  int64_t row = 0;
  out.resize(groups);
  for (int64_t g = 0; g < groups; ++g) {
    OptLaunch& L = out[g];
    L.tab = OptTable{};
    L.tab.chunk = kChunk;
    const size_t first = static_cast<size_t>(g) * kOptPieces;
    const size_t last = std::min(idx.size(), first + kOptPieces);
    int64_t c = 0;
    for (size_t i = first; i < last; ++i) {
      L.tab.chunk_begin[i - first] = c;
      c += (ns[idx[i]] + kChunk - 1) / kChunk;
    }
    L.tab.count = static_cast<int>(last - first);
    L.tab.chunk_begin[L.tab.count] = c;
    L.tab.total_chunks = c;
    int64_t blocks = 1 + static_cast<int64_t>(static_cast<double>(budget) * c / total);
    blocks = std::min<int64_t>(std::min<int64_t>(blocks, c), 0x7fffffff);
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
                        int s_dtype, uintptr_t stream, int64_t partials_ptr, int64_t max_blocks) {
  const std::string w = "optim_step_cuda";
  const size_t T = ns.size();
  if (kind != kSgdKind && kind != kAdamKind) throw std::invalid_argument(w + ": bad kind");
  if (phase < 0 || phase > 2) throw std::invalid_argument(w + ": phase must be 0, 1 or 2");
  if (p_ptrs.size() != T || g_ptrs.size() != T) {
    throw std::invalid_argument(w + ": params/grads/ns lists differ in length");
  }
  const bool adam = kind == kAdamKind;
  const bool ams = adam && (flags & kAmsgradF);
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
  dispatch_opt_dtypes(p_dtype, r_dtype, s_dtype, [](auto, auto) {});
  if (phase != 0 && k == 0) return 0;
  std::vector<int64_t> idx;
  for (size_t t = 0; t < T; ++t) {
    if (ns[t] > 0) idx.push_back(static_cast<int64_t>(t));
  }
  std::vector<OptLaunch> launches = plan(idx, ns, max_blocks);
  if (launches.empty()) return 0;
  if (phase != 0 && partials_ptr == 0) throw std::invalid_argument(w + ": partials_ptr is null");
  for (size_t g = 0; g < launches.size(); ++g) {
    OptTable& tab = launches[g].tab;
    for (int i = 0; i < tab.count; ++i) {
      const int64_t t = idx[g * kOptPieces + i];
      tab.p[i] = reinterpret_cast<void*>(static_cast<uintptr_t>(p_ptrs[t]));
      tab.g[i] = reinterpret_cast<void*>(static_cast<uintptr_t>(g_ptrs[t]));
      tab.s1[i] =
          s1_ptrs.empty() ? nullptr : reinterpret_cast<void*>(static_cast<uintptr_t>(s1_ptrs[t]));
      tab.s2[i] =
          s2_ptrs.empty() ? nullptr : reinterpret_cast<void*>(static_cast<uintptr_t>(s2_ptrs[t]));
      tab.s3[i] = ams ? reinterpret_cast<void*>(static_cast<uintptr_t>(s3_ptrs[t])) : nullptr;
      tab.step[i] =
          adam ? reinterpret_cast<const float*>(static_cast<uintptr_t>(step_ptrs[t])) : nullptr;
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
  const cudaStream_t s = as_stream(stream);
  const int kk = static_cast<int>(k);
  pybind11::gil_scoped_release nogil;
  dispatch_opt_dtypes(p_dtype, r_dtype, s_dtype, [&](auto tp, auto tr) {
    using P = typename decltype(tp)::type;
    using R = typename decltype(tr)::type;
    using S = std::conditional_t<std::is_same<P, double>::value, double, float>;
    auto run_kind = [&](auto kind_c) {
      constexpr int KIND = decltype(kind_c)::value;
      if (phase == 0) {
        for (const OptLaunch& L : launches) {
          optim_step_kernel<P, R, S, KIND, 0, 1>
              <<<L.grid_x, kThreads, 0, s>>>(L.tab, h, kk, 0, coef, gs, fi, partials, L.row_base);
          UNO_CUDA_CHECK_LAUNCH();
        }
        return;
      }
      auto run_tile = [&](auto phase_c, auto kt_c) {
        constexpr int PH = decltype(phase_c)::value;
        constexpr int KT = decltype(kt_c)::value;
        for (int j0 = 0; j0 < kk; j0 += KT) {
          for (const OptLaunch& L : launches) {
            optim_step_kernel<P, R, S, KIND, PH, KT><<<L.grid_x, kThreads, 0, s>>>(
                L.tab, h, kk, j0, coef, gs, fi, partials, L.row_base);
            UNO_CUDA_CHECK_LAUNCH();
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
      run_kind(std::integral_constant<int, kAdamKind>{});
    } else {
      run_kind(std::integral_constant<int, kSgdKind>{});
    }
  });
  int64_t used = 0;
  for (const OptLaunch& L : launches) used += L.grid_x;
  return phase == 0 ? 0 : used;
}

void register_optim_step_cuda(pybind11::module_& m) {
  namespace py = pybind11;
  m.attr("optim_pieces_per_launch") = kOptPieces;
  m.def(
      "optim_step_cuda", &optim_step_cuda, py::arg("kind"), py::arg("phase"), py::arg("p_ptrs"),
      py::arg("g_ptrs"), py::arg("s1_ptrs"), py::arg("s2_ptrs"), py::arg("s3_ptrs"),
      py::arg("step_ptrs"), py::arg("row_ptrs"), py::arg("lds"), py::arg("ns"), py::arg("k"),
      py::arg("coef_ptr"), py::arg("grad_scale_ptr"), py::arg("found_inf_ptr"), py::arg("hyper"),
      py::arg("flags"), py::arg("p_dtype"), py::arg("r_dtype"), py::arg("s_dtype"),
      py::arg("stream"), py::arg("partials_ptr"), py::arg("max_blocks"),
      "Fused projected SGD/Adam step on `stream` (python/uno/reference/optim_step.py is the spec). "
      "Phases 1/2 write per-block float64 partial sums (rows of k) to partials_ptr and return the "
      "number of rows written; phase 0 returns 0.");
}

}  // namespace
}  // namespace cuda
}  // namespace uno

UNO_REGISTER(optim_step_cuda, ::uno::cuda::register_optim_step_cuda);
