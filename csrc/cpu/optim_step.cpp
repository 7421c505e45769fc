// CPU kernel of the fused projected optimizer step (python/uno/reference/optim_step.py is the
// spec).
//
// One call = one phase over the T pieces of one parameter group:
//   phase 0 (write):       the SGD/Adam step; with coefficients c and k rows, g' = g - sum_j c_j
//   q_j
//                          (project="grad") or p' = p + u - sum_j c_j q_j (project="update"),
//                          formed in float64 per block and never materialised.
//   phase 1 (grad coef):   out[j] = <q_j, g>  (the coefficient pass of project="grad").
//   phase 2 (update coef): out[j] = <q_j, u>, u the update this step would make; nothing is
//   written.
// Element-wise optimizer maths runs in float64 for float64 parameters and float32 otherwise (as
// torch's optimizers do); reductions accumulate in float64 with a fixed order per thread count.
// Note: with GCC's default -fmath-errno the Adam loop (std::sqrt) does not vectorise; building this
// file with -fno-math-errno (a per-file CMake option) does. A `#pragma GCC optimize` does not
// achieve it.
#include "uno/cpu_file.h"

namespace uno {
namespace cpu {
using namespace ::uno::step;  // kinds, phases and flags (uno/abi.h)

namespace UNO_ISA_NS {  // compiled once per ISA level (uno/cpu_kernels.h)
namespace {

using Args = OptimArgs;

// Loop-invariant constants of the element maths (compute type C), passed by value.
template <typename C>
struct Consts {
  C sgn, lr, mom, damp1, sgd_wd, beta1c, beta2, beta2c, eps, adam_wd, decay, neg_lr_wd;
  C step_size, bc2_sqrt;
  bool nesterov, first, decoupled;
  Consts with_piece(C ss, C bc) const {
    Consts c = *this;
    c.step_size = ss;
    c.bc2_sqrt = bc;
    return c;
  }
};

template <typename C>
struct Out {
  C u, pnew, n1, n2, n3;  // update, p + u as torch rounds it, new states
};

// torch.optim.SGD / Adam maths for one element (EXTRA: SGD momentum buffers / Adam amsgrad).
template <int KIND, bool EXTRA, typename C>
inline Out<C> elem_math(const Consts<C> k, const C p, const C g, const C v1, const C v2,
                        const C v3) {
  Out<C> o{};
  C d = k.sgn * g;
  if constexpr (KIND == kSgd) {
    d = d + k.sgd_wd * p;
    if constexpr (EXTRA) {
      const C buf = k.first ? d : v1 * k.mom + k.damp1 * d;
      o.n1 = buf;
      d = k.nesterov ? d + k.mom * buf : buf;
    }
    o.u = -k.lr * d;
    o.pnew = p + o.u;
    (void)v2;
    (void)v3;
  } else {
    const C pd = k.decoupled ? p * k.decay : p;
    const C ud = k.decoupled ? k.neg_lr_wd * p : C(0);
    d = k.decoupled ? d : d + k.adam_wd * p;
    const C m = v1 + k.beta1c * (d - v1);
    const C v = v2 * k.beta2 + k.beta2c * d * d;
    C vh = v;
    if constexpr (EXTRA) vh = v3 > v ? v3 : v;
    o.n1 = m;
    o.n2 = v;
    o.n3 = vh;
    const C denom = std::sqrt(vh) / k.bc2_sqrt + k.eps;
    const C upd = -k.step_size * (m / denom);
    o.u = ud + upd;
    o.pnew = pd + upd;
  }
  return o;
}

// Element i of the parameter and its states, in the compute type C (zeros for absent states).
#define UNO_OPTIM_LOADS                                                                  \
  const C p = static_cast<C>(Elem<P>::load(pb[i]));                                      \
  const C v1 = (KIND == kAdam || has_mom) ? static_cast<C>(Elem<S>::load(b1[i])) : C(0); \
  const C v2 = KIND == kAdam ? static_cast<C>(Elem<S>::load(b2[i])) : C(0);              \
  const C v3 = AMS ? static_cast<C>(Elem<S>::load(b3[i])) : C(0);

// The new states o.n1..n3 of element i back to their storage.
#define UNO_OPTIM_STORE_STATES                                                               \
  if constexpr (KIND == kAdam || has_mom) b1[i] = Elem<S>::store(static_cast<double>(o.n1)); \
  if constexpr (KIND == kAdam) b2[i] = Elem<S>::store(static_cast<double>(o.n2));            \
  if constexpr (AMS) b3[i] = Elem<S>::store(static_cast<double>(o.n3));

// The element loops of one block of one piece (the hot part): the gradient the optimizer sees, then
// the optimizer maths and the stores (or, ucoef, the updates into ub). The Adam maths (sqrt, div)
// is compute-bound at SSE2 width: the AVX2/AVX-512 copies are the x86-64-v3/v4 compiles of this
// file (runtime dispatch, uno/cpu_kernels.h).
#define UNO_OPTIM_BLOCK_BODY                                                             \
  using C = std::conditional_t<std::is_same_v<P, double>, double, float>;                \
  constexpr bool has_mom = KIND == kSgd && EXTRA;                                        \
  constexpr bool AMS = KIND == kAdam && EXTRA;                                           \
  if (proj_grad) {                                                                       \
    _Pragma("omp simd") for (int64_t i = 0; i < n; ++i) {                                \
      const double gd = static_cast<double>(Elem<P>::load(gb[i])) - sb[i];               \
      gc[i] = static_cast<C>(Elem<P>::load(Elem<P>::store(gd)));                         \
    }                                                                                    \
  } else {                                                                               \
    _Pragma("omp simd") for (int64_t i = 0; i < n; ++i) gc[i] =                          \
        static_cast<C>(Elem<P>::load(gb[i]));                                            \
  }                                                                                      \
  if (has_scale) {                                                                       \
    _Pragma("omp simd") for (int64_t i = 0; i < n; ++i) gc[i] = gc[i] / scale;           \
  }                                                                                      \
  if (write_grad) {                                                                      \
    for (int64_t i = 0; i < n; ++i) gb[i] = Elem<P>::store(static_cast<double>(gc[i]));  \
  }                                                                                      \
  if (ucoef) {                                                                           \
    _Pragma("omp simd") for (int64_t i = 0; i < n; ++i) {                                \
      UNO_OPTIM_LOADS                                                                    \
      ub[i] = static_cast<double>(elem_math<KIND, EXTRA>(kc, p, gc[i], v1, v2, v3).u);   \
    }                                                                                    \
    return;                                                                              \
  }                                                                                      \
  if (proj_upd) {                                                                        \
    _Pragma("omp simd") for (int64_t i = 0; i < n; ++i) {                                \
      UNO_OPTIM_LOADS                                                                    \
      const Out<C> o = elem_math<KIND, EXTRA>(kc, p, gc[i], v1, v2, v3);                 \
      pb[i] = Elem<P>::store(static_cast<double>(p) + static_cast<double>(o.u) - sb[i]); \
      UNO_OPTIM_STORE_STATES                                                             \
    }                                                                                    \
  } else {                                                                               \
    _Pragma("omp simd") for (int64_t i = 0; i < n; ++i) {                                \
      UNO_OPTIM_LOADS                                                                    \
      const Out<C> o = elem_math<KIND, EXTRA>(kc, p, gc[i], v1, v2, v3);                 \
      pb[i] = Elem<P>::store(static_cast<double>(o.pnew));                               \
      UNO_OPTIM_STORE_STATES                                                             \
    }                                                                                    \
  }

#define UNO_OPTIM_BLOCK_ARGS                                                               \
  int64_t n, P *__restrict pb, P *__restrict gb, S *__restrict b1, S *__restrict b2,       \
      S *__restrict b3, const double *__restrict sb, double *__restrict ub,                \
      std::conditional_t<std::is_same_v<P, double>, double, float>*__restrict gc,          \
      const Consts<std::conditional_t<std::is_same_v<P, double>, double, float>> kc,       \
      bool proj_grad, bool has_scale,                                                      \
      std::conditional_t<std::is_same_v<P, double>, double, float> scale, bool write_grad, \
      bool ucoef, bool proj_upd

template <typename P, typename S, int KIND, bool EXTRA>
void block_base(UNO_OPTIM_BLOCK_ARGS) {
  UNO_OPTIM_BLOCK_BODY
}

// Elements per prefetch group of the fused write loop (one 64-byte line of float32 states).
constexpr int kPrefetchGroup = 16;

// The write phase of project="grad" without grad_scale or write_grad (the usual step), in one loop
// per block: g' = g - s (s = sum_j c_j q_j; for k = 1 formed inline as c0 * q, no s buffer) feeds
// the optimizer maths directly, instead of a pass that stores g' into gc and one that reads it
// back. The same operations in the same order as block_base (no FMA contraction:
// -ffp-contract=off), so the results are bit-identical.
template <typename P, typename S, int KIND, bool EXTRA, typename RV>
void block_proj_grad(
    int64_t n, P* __restrict pb, const P* __restrict gb, S* __restrict b1, S* __restrict b2,
    S* __restrict b3, const double* __restrict sb, const RV* __restrict q1, double c0,
    const Consts<std::conditional_t<std::is_same_v<P, double>, double, float>> kc) {
  using C = std::conditional_t<std::is_same_v<P, double>, double, float>;
  constexpr bool has_mom = KIND == kSgd && EXTRA;
  constexpr bool AMS = KIND == kAdam && EXTRA;
  auto step = [&](int64_t i, double sv) {
    const double gd = static_cast<double>(Elem<P>::load(gb[i])) - sv;
    const C gcv = static_cast<C>(Elem<P>::load(Elem<P>::store(gd)));
    UNO_OPTIM_LOADS
    const Out<C> o = elem_math<KIND, EXTRA>(kc, p, gcv, v1, v2, v3);
    pb[i] = Elem<P>::store(static_cast<double>(o.pnew));
    UNO_OPTIM_STORE_STATES
  };
  // Groups of kPrefetchGroup elements, each first prefetching its streams kPrefetchAhead bytes
  // ahead (uno/simd.h): the loop's divisions and square roots fill the out-of-order window, so
  // the hardware prefetchers alone keep too few of the read streams' misses in flight (at P = 1e7,
  // k = 1, one thread: the write phase 1.15-1.22x faster with these prefetches). `extra` is the
  // row stream of k = 1 (nullptr for the block buffer sb, which is in cache).
  auto groups = [&](auto sv, const RV* extra) {
    int64_t i0 = 0;
    for (; i0 + kPrefetchGroup <= n; i0 += kPrefetchGroup) {
      prefetch_ahead<kPrefetchGroup>(gb + i0);
      prefetch_ahead<kPrefetchGroup>(pb + i0);
      if constexpr (KIND == kAdam || has_mom) prefetch_ahead<kPrefetchGroup>(b1 + i0);
      if constexpr (KIND == kAdam) prefetch_ahead<kPrefetchGroup>(b2 + i0);
      if constexpr (AMS) prefetch_ahead<kPrefetchGroup>(b3 + i0);
      if (extra != nullptr) prefetch_ahead<kPrefetchGroup>(extra + i0);
#pragma omp simd
      for (int64_t i = i0; i < i0 + kPrefetchGroup; ++i) step(i, sv(i));
    }
#pragma omp simd
    for (int64_t i = i0; i < n; ++i) step(i, sv(i));
  };
  if (q1 != nullptr) {
    groups([&](int64_t i) { return c0 * static_cast<double>(q1[i]); }, q1);
  } else {
    groups([&](int64_t i) { return sb[i]; }, nullptr);
  }
}

// Per-piece Adam constants (from the piece's step count).
struct AdamPiece {
  double step_size, bc2_sqrt;
};

// True when every one of the n values is finite.
inline bool all_finite(const double* v, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    if (!std::isfinite(v[j])) return false;
  }
  return true;
}

// P: parameter/grad storage, R: row storage, S: state storage. C: compute type.
template <typename P, typename R, typename S, int KIND, bool HAS_STATE3>
void step_kernel(const Args& a, double* out, int num_threads) {
  using C = std::conditional_t<std::is_same_v<P, double>, double, float>;
  using RV = typename Elem<R>::V;
  using PV = typename Elem<P>::V;
  const int64_t k = a.k;
  const int phase = a.phase;
  // A non-finite coefficient (a nan/inf gradient element) is not projected out: the write phase
  // then runs the stock step, so only the non-finite elements become non-finite (the reference's
  // rule).
  const bool use_rows = k > 0 && (phase != kWrite || (a.coef != nullptr && all_finite(a.coef, k)));
  const bool proj_update = (a.flags & kProjectUpdate) != 0;
  const bool proj_grad = phase == kWrite && use_rows && !proj_update;
  const bool proj_upd_write = phase == kWrite && use_rows && proj_update;
  const bool write_grad = phase == kWrite && (a.flags & kWriteGrad) != 0;
  const C sgn = (a.flags & kMaximize) ? C(-1) : C(1);
  const bool has_scale = a.has_scale;
  const C scale = static_cast<C>(a.scale);
  const PieceIndex pieces(a.ns);
  const int64_t B = block_size(std::max<int64_t>(k, 1) + 4, 8);
  const Plan plan = plan_work(pieces.total() * (k + 4), num_threads);
  const int nchunks = plan.chunks;
  const int64_t W = std::max<int64_t>(k, 1);
  const int64_t WP = partial_stride(W);  // one row of sums per chunk, on its own cache lines
  std::vector<double> partial(static_cast<size_t>(nchunks * WP), 0.0);

  // Hyperparameters (compute type).
  const C lr = static_cast<C>(a.hyper[0]);
  // SGD
  const C mom = static_cast<C>(a.hyper[1]);
  const C damp1 = static_cast<C>(1.0 - a.hyper[2]);
  const C sgd_wd = static_cast<C>(a.hyper[3]);
  const bool nesterov = (a.flags & kNesterov) != 0;
  const bool first = (a.flags & kFirst) != 0;
  constexpr bool has_mom = KIND == kSgd && HAS_STATE3;  // SGD: HAS_STATE3 = momentum buffers
  constexpr bool AMS = KIND == kAdam && HAS_STATE3;     // Adam: HAS_STATE3 = amsgrad
  // Adam
  const C beta1c = static_cast<C>(1.0 - a.hyper[1]);
  const C beta2 = static_cast<C>(a.hyper[2]);
  const C beta2c = static_cast<C>(1.0 - a.hyper[2]);
  const C eps = static_cast<C>(a.hyper[3]);
  const C adam_wd = static_cast<C>(a.hyper[4]);
  const bool decoupled = (a.flags & kDecoupled) != 0;
  const C decay = static_cast<C>(1.0 - a.hyper[0] * a.hyper[4]);
  const C neg_lr_wd = static_cast<C>(-(a.hyper[0] * a.hyper[4]));
  Consts<C> kc0{};
  kc0.sgn = sgn;
  kc0.lr = lr;
  kc0.mom = mom;
  kc0.damp1 = damp1;
  kc0.sgd_wd = sgd_wd;
  kc0.beta1c = beta1c;
  kc0.beta2 = beta2;
  kc0.beta2c = beta2c;
  kc0.eps = eps;
  kc0.adam_wd = adam_wd;
  kc0.decay = decay;
  kc0.neg_lr_wd = neg_lr_wd;
  kc0.step_size = C(0);
  kc0.bc2_sqrt = C(1);
  kc0.nesterov = nesterov;
  kc0.first = first;
  kc0.decoupled = decoupled;
  std::vector<AdamPiece> ap(a.ns.size());
  if (KIND == kAdam) {
    for (size_t t = 0; t < a.ns.size(); ++t) {
      const double st = a.step[t];
      ap[t].step_size = a.hyper[0] / (1.0 - std::pow(a.hyper[1], st));
      ap[t].bc2_sqrt = std::sqrt(1.0 - std::pow(a.hyper[2], st));
    }
  }

  parallel_for(pieces.total(), plan, [&](int c, int64_t begin, int64_t end) {
    double* acc = partial.data() + c * WP;
    std::vector<double> s(B, 0.0);   // sum_j c_j q_j over the block (write phase)
    std::vector<double> ub(B, 0.0);  // the block's updates (phase 2)
    std::vector<C> gc(B);            // the gradient the optimizer sees (projected, unscaled)
    std::vector<PV> gbuf(std::is_same_v<P, PV> ? 0 : B);
    std::vector<RV> rbuf(std::is_same_v<R, RV> ? 0 : B * std::max<int64_t>(k, 1));
    std::vector<const RV*> rp(std::max<int64_t>(k, 1));
    pieces.for_each(begin, end, [&](size_t t, int64_t lo, int64_t hi) {
      P* pp = reinterpret_cast<P*>(a.p[t]);
      P* gp = reinterpret_cast<P*>(a.g[t]);
      S* m1 = has_mom || KIND == kAdam ? reinterpret_cast<S*>(a.s1[t]) : nullptr;
      S* m2 = KIND == kAdam ? reinterpret_cast<S*>(a.s2[t]) : nullptr;
      S* m3 = AMS ? reinterpret_cast<S*>(a.s3[t]) : nullptr;
      const R* rows = use_rows ? reinterpret_cast<const R*>(a.rows[t]) : nullptr;
      const C step_size = KIND == kAdam ? static_cast<C>(ap[t].step_size) : C(0);
      const C bc2_sqrt = KIND == kAdam ? static_cast<C>(ap[t].bc2_sqrt) : C(1);
      for (int64_t b0 = lo; b0 < hi; b0 += B) {
        const int64_t n = std::min(B, hi - b0);
        if (use_rows) {
          for (int64_t j = 0; j < k; ++j) {
            rp[j] = load_block(rows + j * a.lds[t] + b0, n, rbuf.data() + j * B);
          }
        }
        P* __restrict pb = pp + b0;
        P* __restrict gb = gp + b0;
        if (phase == kGradCoef) {
          const PV* gv = load_block(static_cast<const P*>(gb), n, gbuf.data());
          dots(rp.data(), k, gv, n, acc);
          continue;
        }
        const Consts<C> kc = kc0.with_piece(step_size, bc2_sqrt);
        S* __restrict b1 = m1 ? m1 + b0 : nullptr;
        S* __restrict b2 = m2 ? m2 + b0 : nullptr;
        S* __restrict b3 = m3 ? m3 + b0 : nullptr;
        if (proj_grad && !has_scale && !write_grad) {  // the usual step: one fused loop
          const RV* q1 = k == 1 ? rp[0] : nullptr;
          if (k != 1) lincomb(rp.data(), a.coef, k, n, s.data());
          block_proj_grad<P, S, KIND, HAS_STATE3>(n, pb, gb, b1, b2, b3, s.data(), q1, a.coef[0],
                                                  kc);
          continue;
        }
        if (proj_grad || proj_upd_write) lincomb(rp.data(), a.coef, k, n, s.data());
        const double* __restrict sb = s.data();
        double* __restrict ubb = ub.data();
        C* __restrict gcb = gc.data();
        const bool ucoef = phase == kUpdateCoef;
        block_base<P, S, KIND, HAS_STATE3>(n, pb, gb, b1, b2, b3, sb, ubb, gcb, kc, proj_grad,
                                           has_scale, scale, write_grad, ucoef, proj_upd_write);
        if (ucoef) dots(rp.data(), k, static_cast<const double*>(ubb), n, acc);
      }
    });
  });
  if (phase != kWrite) {
    for (int64_t w = 0; w < k; ++w) {
      double sum = 0.0;
      for (int c = 0; c < nchunks; ++c) sum += partial[c * WP + w];
      out[w] = sum;
    }
  }
}

// Calls f(P{}, R{}, S{}) for an allowed (param, rows, state) dtype triple: everything equal, or
// float16/bfloat16 parameters with float32 rows and/or float32 states.
template <typename F>
void dispatch_triple(int p_code, int r_code, int s_code, F&& f) {
  const char* what = "optim_step_cpu";
  check_dtype_code(p_code, what);
  check_dtype_code(r_code, what);
  check_dtype_code(s_code, what);
  if (!pair_ok(p_code, r_code) || !pair_ok(p_code, s_code)) {
    throw std::invalid_argument(std::string(what) + ": unsupported dtypes (params " +
                                dtype_name(p_code) + ", rows " + dtype_name(r_code) + ", states " +
                                dtype_name(s_code) +
                                "); expected equal dtypes, or float16/bfloat16 params with float32 "
                                "rows and/or states");
  }
  auto with_p = [&](auto p) {
    using P = decltype(p);
    auto with_r = [&](auto r) {
      if (s_code == p_code) return f(p, r, P{});
      return f(p, r, float{});
    };
    if (r_code == p_code) return with_r(P{});
    return with_r(float{});
  };
  switch (p_code) {
    case kF32:
      return f(float{}, float{}, float{});
    case kF64:
      return f(double{}, double{}, double{});
    case kF16:
      return with_p(half_t{});
    default:
      return with_p(bf16_t{});
  }
}

}  // namespace

void run_optim_step(const OptimArgs& a, int p_dtype, int r_dtype, int s_dtype, double* out,
                    int num_threads) {
  const bool amsgrad = a.kind == kAdam && (a.flags & kAmsgrad) != 0;
  dispatch_triple(p_dtype, r_dtype, s_dtype, [&](auto p, auto r, auto s) {
    using P = decltype(p);
    using R = decltype(r);
    using S = decltype(s);
    if (a.kind == kSgd && a.s1.empty()) {
      step_kernel<P, R, S, kSgd, false>(a, out, num_threads);
    } else if (a.kind == kSgd) {
      step_kernel<P, R, S, kSgd, true>(a, out, num_threads);
    } else if (amsgrad) {
      step_kernel<P, R, S, kAdam, true>(a, out, num_threads);
    } else {
      step_kernel<P, R, S, kAdam, false>(a, out, num_threads);
    }
  });
}

}  // namespace UNO_ISA_NS

#ifdef UNO_CPU_BINDINGS  // the pybind11 entry point: the baseline compile only
namespace py = pybind11;
namespace {

void optim_step_cpu(int kind, int phase, const std::vector<int64_t>& p_ptrs,
                    const std::vector<int64_t>& g_ptrs, const std::vector<int64_t>& s1_ptrs,
                    const std::vector<int64_t>& s2_ptrs, const std::vector<int64_t>& s3_ptrs,
                    const std::vector<int64_t>& step_ptrs, const std::vector<int64_t>& row_ptrs,
                    const std::vector<int64_t>& lds, const std::vector<int64_t>& ns, int64_t k,
                    int64_t coef_ptr, int64_t grad_scale_ptr, int64_t found_inf_ptr,
                    const std::vector<double>& hyper, int flags, int p_dtype, int r_dtype,
                    int s_dtype, int64_t out_ptr, int num_threads, bool steps_pending) {
  const std::string w = "optim_step_cpu";
  if (kind != kSgd && kind != kAdam)
    throw std::invalid_argument(w + ": kind must be 0 (SGD) or 1 (Adam)");
  if (phase < kWrite || phase > kUpdateCoef)
    throw std::invalid_argument(w + ": phase must be 0, 1 or 2");
  if (flags & kStepsPending) {
    throw std::invalid_argument(w + ": FLAG_STEPS_PENDING (" + std::to_string(kStepsPending) +
                                ") is a cuda-backend flag; the cpu backend reads steps as already "
                                "incremented");
  }
  const size_t T = ns.size();
  check_vector(w.c_str(), "params", p_ptrs, ns);
  check_vector(w.c_str(), "grads", g_ptrs, ns);
  const bool amsgrad = kind == kAdam && (flags & kAmsgrad) != 0;
  if (kind == kAdam) {
    check_vector(w.c_str(), "exp_avgs", s1_ptrs, ns);
    check_vector(w.c_str(), "exp_avg_sqs", s2_ptrs, ns);
    if (amsgrad) check_vector(w.c_str(), "max_exp_avg_sqs", s3_ptrs, ns);
    if (step_ptrs.size() != T) throw std::invalid_argument(w + ": need one step tensor per piece");
    if (hyper.size() < 5) throw std::invalid_argument(w + ": Adam needs 5 hyperparameters");
  } else {
    if (!s1_ptrs.empty()) check_vector(w.c_str(), "momentum_buffers", s1_ptrs, ns);
    if (hyper.size() < 4) throw std::invalid_argument(w + ": SGD needs 4 hyperparameters");
  }
  if (k < 0) throw std::invalid_argument(w + ": k must be >= 0");
  if (k > 0) check_pieces(w.c_str(), row_ptrs, lds, ns, k);
  if (phase != kWrite && out_ptr == 0) throw std::invalid_argument(w + ": out_ptr is null");
  check_threads(w.c_str(), num_threads);
  UNO_ISA_NS::dispatch_triple(p_dtype, r_dtype, s_dtype, [](auto, auto, auto) {});
  double* out = reinterpret_cast<double*>(out_ptr);
  if (phase != kWrite) std::fill(out, out + k, 0.0);
  if (found_inf_ptr != 0 && *reinterpret_cast<const float*>(found_inf_ptr) != 0.0f) return;
  if (phase == kGradCoef && k == 0) return;

  OptimArgs a;
  a.kind = kind;
  a.phase = phase;
  a.flags = flags;
  a.k = k;
  a.p = p_ptrs;
  a.g = g_ptrs;
  a.s1 = s1_ptrs;
  a.s2 = s2_ptrs;
  a.s3 = s3_ptrs;
  a.rows = row_ptrs;
  a.lds = lds;
  a.ns = ns;
  a.coef = reinterpret_cast<const double*>(coef_ptr);
  for (int i = 0; i < 5; ++i) a.hyper[i] = i < static_cast<int>(hyper.size()) ? hyper[i] : 0.0;
  a.has_scale = grad_scale_ptr != 0;
  a.scale = a.has_scale ? *reinterpret_cast<const float*>(grad_scale_ptr) : 1.0f;
  // steps_pending: the counts hold the previous step; this step runs with count + 1, which the
  // write phase stores (float32, as torch._foreach_add_(steps, 1) would) once the kernel is done.
  // The caller passes distinct counters (each is read once and stored once).
  std::vector<float> next;
  if (kind == kAdam) {
    a.step.resize(T);
    next.resize(T);
    for (size_t t = 0; t < T; ++t) {
      if (step_ptrs[t] == 0) throw std::invalid_argument(w + ": null step pointer");
      const float s = *reinterpret_cast<const float*>(step_ptrs[t]);
      next[t] = steps_pending ? s + 1.0f : s;
      a.step[t] = static_cast<double>(next[t]);
    }
  }
  const Kernels& isa = active();
  {
    py::gil_scoped_release release;
    isa.optim_step(a, p_dtype, r_dtype, s_dtype, out, num_threads);
  }
  if (steps_pending && phase == kWrite) {
    for (size_t t = 0; t < next.size(); ++t) *reinterpret_cast<float*>(step_ptrs[t]) = next[t];
  }
}

void register_optim_step_cpu(py::module_& m) {
  m.def("optim_step_cpu", &optim_step_cpu, py::arg("kind"), py::arg("phase"), py::arg("p_ptrs"),
        py::arg("g_ptrs"), py::arg("s1_ptrs"), py::arg("s2_ptrs"), py::arg("s3_ptrs"),
        py::arg("step_ptrs"), py::arg("row_ptrs"), py::arg("lds"), py::arg("ns"), py::arg("k"),
        py::arg("coef_ptr"), py::arg("grad_scale_ptr"), py::arg("found_inf_ptr"), py::arg("hyper"),
        py::arg("flags"), py::arg("p_dtype"), py::arg("r_dtype"), py::arg("s_dtype"),
        py::arg("out_ptr"), py::arg("num_threads"), py::arg("steps_pending") = false,
        "Fused projected SGD/Adam step on CPU (python/uno/reference/optim_step.py is the spec): "
        "phase 0 writes the step, phase 1 writes <q_j, g> and phase 2 <q_j, u> (k float64 values) "
        "to out_ptr. steps_pending (Adam): the step counts hold the previous step; every phase "
        "uses count + 1 and phase 0 stores it (distinct counters only).");
}

}  // namespace
#endif  // UNO_CPU_BINDINGS
}  // namespace cpu
}  // namespace uno

#ifdef UNO_CPU_BINDINGS
UNO_REGISTER(optim_step, cpu);
#endif
