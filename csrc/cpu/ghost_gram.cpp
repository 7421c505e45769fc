// CPU kernel of the ghost Gram product (python/uno/reference/ghost_gram.py is the spec).
//
// For one factored layer with inputs A (B1, T1, d) and output gradients G (B1, T1, p) (and a second
// batch A2 (B2, T2, d), G2 (B2, T2, p) for a cross Gram) it writes the float64 matrix
//   out[i, j] = sum_{s < T1, t < T2} <A[i, s], A2[j, t]> * <G[i, s], G2[j, t]>,
// i.e. <A_i A2_j^T, G_i G2_j^T>_F = <G_i^T A_i, G2_j^T A2_j>_F, without forming the per-sample
// gradients or the (B T) x (B T) product. `diag` writes only out[i] = out[i, i] (squared per-sample
// norms).
//
// Precision: float64 inputs: everything in float64. float32/float16/bfloat16 inputs: the two inner
// products over d and p in float32 (like an fp32 GEMM), their product and every sum over (s, t) in
// float64. Work is split by pairs (i, j); each pair is summed by one thread in a fixed order, so
// the result does not depend on the thread count. A symmetric Gram computes i <= j and mirrors it
// (exactly symmetric).
#include "uno/cpu_file.h"

namespace uno {
namespace cpu {
namespace UNO_ISA_NS {  // compiled once per ISA level (uno/cpu_kernels.h)
namespace {

// The four inner products <x, y_q> (q < 4) over n elements, and the single one; compute type C.
#define UNO_GHOST_DOTS                                                                     \
  template <typename C>                                                                    \
  inline void dot4(const C* __restrict x, const C* __restrict y, int64_t ld, int64_t n,    \
                   C* __restrict r) {                                                      \
    const C* __restrict y0 = y;                                                            \
    const C* __restrict y1 = y + ld;                                                       \
    const C* __restrict y2 = y + 2 * ld;                                                   \
    const C* __restrict y3 = y + 3 * ld;                                                   \
    C s0 = 0, s1 = 0, s2 = 0, s3 = 0;                                                      \
    _Pragma("omp simd reduction(+ : s0, s1, s2, s3)") for (int64_t k = 0; k < n; ++k) {    \
      const C v = x[k];                                                                    \
      s0 += v * y0[k];                                                                     \
      s1 += v * y1[k];                                                                     \
      s2 += v * y2[k];                                                                     \
      s3 += v * y3[k];                                                                     \
    }                                                                                      \
    r[0] = s0;                                                                             \
    r[1] = s1;                                                                             \
    r[2] = s2;                                                                             \
    r[3] = s3;                                                                             \
  }                                                                                        \
  template <typename C>                                                                    \
  inline C dot1(const C* __restrict x, const C* __restrict y, int64_t n) {                 \
    C s = 0;                                                                               \
    _Pragma("omp simd reduction(+ : s)") for (int64_t k = 0; k < n; ++k) s += x[k] * y[k]; \
    return s;                                                                              \
  }

// sum_{s, t} <Ai[s], Aj[t]> <Gi[s], Gj[t]> for one pair, rows contiguous (K-major), fixed order.
#define UNO_GHOST_PAIR_BODY                                              \
  double acc = 0.0;                                                      \
  for (int64_t s = 0; s < T1; ++s) {                                     \
    const C* as = Ai + s * d;                                            \
    const C* gs = Gi + s * p;                                            \
    double row = 0.0;                                                    \
    int64_t t = 0;                                                       \
    for (; t + 4 <= T2; t += 4) {                                        \
      C sa[4], sg[4];                                                    \
      dot4<C>(as, Aj + t * d, d, d, sa);                                 \
      dot4<C>(gs, Gj + t * p, p, p, sg);                                 \
      row += (static_cast<double>(sa[0]) * static_cast<double>(sg[0]) +  \
              static_cast<double>(sa[1]) * static_cast<double>(sg[1])) + \
             (static_cast<double>(sa[2]) * static_cast<double>(sg[2]) +  \
              static_cast<double>(sa[3]) * static_cast<double>(sg[3]));  \
    }                                                                    \
    for (; t < T2; ++t) {                                                \
      row += static_cast<double>(dot1<C>(as, Aj + t * d, d)) *           \
             static_cast<double>(dot1<C>(gs, Gj + t * p, p));            \
    }                                                                    \
    acc += row;                                                          \
  }                                                                      \
  return acc;

#define UNO_GHOST_PAIR_ARGS                                                                       \
  const C *__restrict Ai, const C *__restrict Aj, const C *__restrict Gi, const C *__restrict Gj, \
      int64_t T1, int64_t T2, int64_t d, int64_t p

// T = 1: v[r] = <a, A2[r]> <g, G2[r]> for the four adjacent rows r < 4 (row strides d and p).
#define UNO_GHOST_PAIR4                                                                         \
  template <typename C>                                                                         \
  void pair4(const C* __restrict a, const C* __restrict A2, const C* __restrict g,              \
             const C* __restrict G2, int64_t d, int64_t p, double* v) {                         \
    C sa[4], sg[4];                                                                             \
    dot4<C>(a, A2, d, d, sa);                                                                   \
    dot4<C>(g, G2, p, p, sg);                                                                   \
    for (int r = 0; r < 4; ++r) v[r] = static_cast<double>(sa[r]) * static_cast<double>(sg[r]); \
  }

namespace base {
UNO_GHOST_DOTS
template <typename C>
double pair(UNO_GHOST_PAIR_ARGS){UNO_GHOST_PAIR_BODY} UNO_GHOST_PAIR4
}  // namespace base

// One body per compile; the AVX2/AVX-512 copies are the x86-64-v3/v4 compiles of this file.
template <typename C>
double pair_sum(UNO_GHOST_PAIR_ARGS) {
  return base::pair<C>(Ai, Aj, Gi, Gj, T1, T2, d, p);
}

template <typename C>
void pair_sum4(const C* a, const C* A2, const C* g, const C* G2, int64_t d, int64_t p, double* v) {
  base::pair4<C>(a, A2, g, G2, d, p, v);
}

// The operand as a contiguous (B, T, K) array of the compute type: the input itself when it already
// is one, else a packed copy in `buf` (converted from 16-bit storage, or gathered from strided
// views such as the transposed unfold of a convolution).
template <typename S, typename C>
const C* packed(const View3& v, int64_t B, int64_t T, int64_t K, std::vector<C>* buf,
                int num_threads) {
  const S* src = reinterpret_cast<const S*>(v.ptr);
  if constexpr (std::is_same_v<S, C>) {
    if ((v.sk == 1 || K <= 1) && (v.st == K || T <= 1) && (v.sb == T * K || B <= 1)) return src;
  }
  buf->resize(static_cast<size_t>(B * T * K));
  C* dst = buf->data();
  // A copy is memory-bound: threads only for large operands (>= 1M elements each).
  const int nchunks =
      static_cast<int>(std::min<int64_t>({std::max<int64_t>(1, B * T * K / (int64_t{1} << 20)),
                                          std::max(num_threads, 1), kMaxThreads}));
  parallel_for(B * T, nchunks, [&](int, int64_t lo, int64_t hi) {
    for (int64_t r = lo; r < hi; ++r) {
      const int64_t b = r / T, t = r % T;
      const S* row = src + b * v.sb + t * v.st;
      C* out = dst + r * K;
      if (v.sk == 1) {
        for (int64_t k = 0; k < K; ++k) out[k] = static_cast<C>(Elem<S>::load(row[k]));
      } else {
        for (int64_t k = 0; k < K; ++k) out[k] = static_cast<C>(Elem<S>::load(row[k * v.sk]));
      }
    }
  });
  return dst;
}

template <typename S>
void ghost_kernel(const View3& a, const View3& g, const View3& a2, const View3& g2, int64_t B1,
                  int64_t T1, int64_t B2, int64_t T2, int64_t d, int64_t p, bool diag,
                  bool symmetric, double* out, int num_threads) {
  using C = std::conditional_t<std::is_same_v<S, double>, double, float>;
  std::vector<C> ba, bg, ba2, bg2;
  const C* A = packed<S, C>(a, B1, T1, d, &ba, num_threads);
  const C* G = packed<S, C>(g, B1, T1, p, &bg, num_threads);
  const C* A2 = symmetric ? A : packed<S, C>(a2, B2, T2, d, &ba2, num_threads);
  const C* G2 = symmetric ? G : packed<S, C>(g2, B2, T2, p, &bg2, num_threads);
  // The pairs to compute, in row-major order (i <= j when symmetric; i == j for the diagonal).
  std::vector<std::pair<int32_t, int32_t>> pairs;
  if (diag) {
    for (int64_t i = 0; i < B1; ++i) pairs.emplace_back(i, i);
  } else {
    for (int64_t i = 0; i < B1; ++i) {
      for (int64_t j = symmetric ? i : 0; j < B2; ++j) pairs.emplace_back(i, j);
    }
  }
  const int64_t n = static_cast<int64_t>(pairs.size());
  // Threads only for real work: a thread per ~16M multiply-adds (about a millisecond). Starting
  // threads for less costs more than it saves, all the more next to torch's spinning OpenMP workers
  // on a busy machine.
  constexpr int64_t kFlopsPerThread = int64_t{1} << 24;
  const int64_t flops = n * T1 * T2 * (d + p);
  const int nchunks = static_cast<int>(
      std::min<int64_t>({std::max<int64_t>(1, flops / kFlopsPerThread), std::max(num_threads, 1),
                         kMaxThreads, std::max<int64_t>(1, n)}));
  std::vector<int64_t> bounds(nchunks + 1);
  for (int c = 0; c <= nchunks; ++c) bounds[c] = n * c / nchunks;
  // One chunk per thread; chunk c (the index parallel_for passes) sums pairs [bounds[c],
  // bounds[c+1]).
  parallel_for(nchunks * kChunkGrain, nchunks, [&](int c, int64_t, int64_t) {
    {
      int64_t q = bounds[c];
      while (q < bounds[c + 1]) {
        const int64_t i = pairs[q].first, j = pairs[q].second;
        // T1 == T2 == 1 (a Linear layer on (B, d) inputs): four pairs (i, j..j+3) share the row of
        // sample i, and rows j..j+3 are adjacent, so one pass forms four inner products.
        if (T1 == 1 && T2 == 1 && !diag && q + 4 <= bounds[c + 1] && pairs[q + 3].first == i &&
            pairs[q + 3].second == j + 3) {
          double v[4];
          pair_sum4<C>(A + i * d, A2 + j * d, G + i * p, G2 + j * p, d, p, v);
          for (int r = 0; r < 4; ++r) {
            out[i * B2 + j + r] = v[r];
            if (symmetric) out[(j + r) * B2 + i] = v[r];
          }
          q += 4;
          continue;
        }
        const double v = pair_sum<C>(A + i * T1 * d, A2 + j * T2 * d, G + i * T1 * p,
                                     G2 + j * T2 * p, T1, T2, d, p);
        if (diag) {
          out[i] = v;
        } else {
          out[i * B2 + j] = v;
          if (symmetric) out[j * B2 + i] = v;
        }
        ++q;
      }
    }
  });
}

}  // namespace

void run_ghost_gram(const View3& a, const View3& g, const View3& a2, const View3& g2, int64_t b1,
                    int64_t t1, int64_t b2, int64_t t2, int64_t d, int64_t p, int dtype, bool diag,
                    bool symmetric, double* out, int num_threads) {
  dispatch_one(dtype, "ghost_gram_cpu", [&](auto s) {
    ghost_kernel<decltype(s)>(a, g, a2, g2, b1, t1, b2, t2, d, p, diag, symmetric, out,
                              num_threads);
  });
}

}  // namespace UNO_ISA_NS

#ifdef UNO_CPU_BINDINGS  // the pybind11 entry point: the baseline compile only
namespace py = pybind11;
namespace {

View3 view(int64_t ptr, const std::vector<int64_t>& strides, const char* name) {
  if (strides.size() != 3) {
    throw std::invalid_argument(std::string("ghost_gram_cpu: ") + name + " needs 3 strides, got " +
                                std::to_string(strides.size()));
  }
  return View3{ptr, strides[0], strides[1], strides[2]};
}

void ghost_gram_cpu(int64_t a_ptr, const std::vector<int64_t>& a_strides, int64_t g_ptr,
                    const std::vector<int64_t>& g_strides, int64_t a2_ptr,
                    const std::vector<int64_t>& a2_strides, int64_t g2_ptr,
                    const std::vector<int64_t>& g2_strides, int64_t b1, int64_t t1, int64_t b2,
                    int64_t t2, int64_t d, int64_t p, int dtype, bool diag, bool symmetric,
                    int64_t out_ptr, int num_threads) {
  const std::string w = "ghost_gram_cpu";
  check_dtype_code(dtype, w.c_str());
  check_threads(w.c_str(), num_threads);
  if (b1 < 0 || t1 < 0 || b2 < 0 || t2 < 0 || d < 0 || p < 0) {
    throw std::invalid_argument(w + ": negative size");
  }
  if (b1 > INT32_MAX || b2 > INT32_MAX) throw std::invalid_argument(w + ": batch too large");
  if (symmetric && (b2 != b1 || t2 != t1)) {
    throw std::invalid_argument(w + ": symmetric needs b2 == b1 and t2 == t1");
  }
  if (diag && !symmetric) throw std::invalid_argument(w + ": diag needs symmetric");
  const View3 a = view(a_ptr, a_strides, "a"), g = view(g_ptr, g_strides, "g");
  const View3 a2 = view(a2_ptr, a2_strides, "a2"), g2 = view(g2_ptr, g2_strides, "g2");
  const int64_t nout = diag ? b1 : b1 * b2;
  if (nout > 0 && out_ptr == 0) throw std::invalid_argument(w + ": out_ptr is null");
  if (nout == 0) return;
  double* out = reinterpret_cast<double*>(out_ptr);
  if (t1 == 0 || t2 == 0 || d == 0 || p == 0) {
    std::fill(out, out + nout, 0.0);
    return;
  }
  if (a_ptr == 0 || g_ptr == 0 || (!symmetric && (a2_ptr == 0 || g2_ptr == 0))) {
    throw std::invalid_argument(w + ": null input pointer");
  }
  const Kernels& isa = active();
  py::gil_scoped_release release;
  isa.ghost_gram(a, g, a2, g2, b1, t1, b2, t2, d, p, dtype, diag, symmetric, out, num_threads);
}

void register_ghost_gram_cpu(py::module_& m) {
  m.def("ghost_gram_cpu", &ghost_gram_cpu, py::arg("a_ptr"), py::arg("a_strides"), py::arg("g_ptr"),
        py::arg("g_strides"), py::arg("a2_ptr"), py::arg("a2_strides"), py::arg("g2_ptr"),
        py::arg("g2_strides"), py::arg("b1"), py::arg("t1"), py::arg("b2"), py::arg("t2"),
        py::arg("d"), py::arg("p"), py::arg("dtype"), py::arg("diag"), py::arg("symmetric"),
        py::arg("out_ptr"), py::arg("num_threads"),
        "Ghost Gram of one factored layer on CPU (python/uno/reference/ghost_gram.py is the spec): "
        "writes float64 out[i, j] = <A_i A2_j^T, G_i G2_j^T>_F ((b1, b2) row-major), or out[i] = "
        "out[i, i] when diag. symmetric: the second batch is the first (a2/g2 ignored).");
}

}  // namespace
#endif  // UNO_CPU_BINDINGS
}  // namespace cpu
}  // namespace uno

#ifdef UNO_CPU_BINDINGS
UNO_REGISTER(ghost_gram, cpu);
#endif
