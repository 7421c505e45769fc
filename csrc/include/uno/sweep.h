// One-sweep register kernels for k <= 4 rows of float or double (no conversion): the first pass of
// `inner` (<row_j, x> and |x|^2) and the fused pass of `project` (x <- x - sum_j y_j row_j, then
// the same sums of the stored x), every row and x loaded once into registers per vector of
// columns. Before, a block went through separate sweeps (the linear combination into a buffer,
// the update, the row dots, |x|^2), each with its accumulators bound by the add latency.
#pragma once

#include <array>
#include <cstdint>
#include <utility>

#include "uno/dtype.h"
#include "uno/isa.h"
#include "uno/simd.h"

namespace uno {
// Per ISA level (uno/isa.h): each level's copy of these inline helpers has its own symbols.
inline namespace UNO_ISA_NS {

// Vector accumulators per sum: kAcc for one row (two sums), two for more rows (k + 1 sums, so
// 2 (k + 1) independent chains: enough to hide the latency without running out of registers).
template <int K>
constexpr int kSweepAcc = K == 1 ? kAcc : 2;

template <int NA>
inline double sum_accs(const VecD* a) {
  if constexpr (NA == 4) return sum_acc(a);
  if constexpr (NA == 2) return sum_vec(a[0] + a[1]);
  return sum_vec(a[0]);
}

// For K rows rp[0..K) and n values of x: with Update, x <- x - sum_j y[j] rp[j] first (float64,
// products and sums in the order j = 0 .. K-1, not fused, rounded once to T: the bits of the
// scalar code at every level); then acc[j] += <rp[j], x> (j < K) and acc[K] += |x|^2 of the
// (stored) x. Lanes: kSweepAcc<K> vectors per sum, added in a fixed tree, the tail in order after
// it (deterministic; the width, hence the last bits, follow the level).
template <typename T, int K, bool Update>
inline void sweep_rows(const T* const* rp, const double* y, T* __restrict x, int64_t n,
                       double* acc) {
  constexpr int NA = kSweepAcc<K>;
  constexpr int kStep = NA * kVecD;
  const T* __restrict a[K];
  VecD c[K];
  for (int j = 0; j < K; ++j) {
    a[j] = rp[j];
    c[j] = Update ? splat(y[j]) : VecD{};
  }
  VecD u[K + 1][NA] = {};
  int64_t i = 0;
  for (; i + kStep <= n; i += kStep) {
    prefetch_ahead<kStep>(x + i);
#pragma GCC unroll 4
    for (int j = 0; j < K; ++j) prefetch_ahead<kStep>(a[j] + i);
#pragma GCC unroll 4
    for (int q = 0; q < NA; ++q) {
      const int64_t p = i + q * kVecD;
      VecD r[K];
#pragma GCC unroll 4
      for (int j = 0; j < K; ++j) r[j] = load_vec(a[j] + p);
      VecD xv = load_vec(x + p);
      if constexpr (Update) {
        VecD s = c[0] * r[0];
#pragma GCC unroll 4
        for (int j = 1; j < K; ++j) s = s + c[j] * r[j];
        xv = store_round(x + p, xv - s);
      }
#pragma GCC unroll 4
      for (int j = 0; j < K; ++j) u[j][q] = fmadd(r[j], xv, u[j][q]);
      u[K][q] = fmadd(xv, xv, u[K][q]);
    }
  }
  double t[K + 1];
  for (int w = 0; w <= K; ++w) t[w] = sum_accs<NA>(u[w]);
  for (; i < n; ++i) {
    double xv = static_cast<double>(x[i]);
    if constexpr (Update) {
      double s = y[0] * static_cast<double>(a[0][i]);
      for (int j = 1; j < K; ++j) s += y[j] * static_cast<double>(a[j][i]);
      const T st = static_cast<T>(xv - s);
      x[i] = st;
      xv = static_cast<double>(st);
    }
    for (int j = 0; j < K; ++j) t[j] += static_cast<double>(a[j][i]) * xv;
    t[K] += xv * xv;
  }
  for (int w = 0; w <= K; ++w) acc[w] += t[w];
}

template <typename T>
using SweepFn = void (*)(const T* const*, const double*, T*, int64_t, double*);

template <typename T, bool Update, int... K>
constexpr std::array<SweepFn<T>, sizeof...(K)> sweep_table(std::integer_sequence<int, K...>) {
  return {&sweep_rows<T, K + 1, Update>...};
}

// sweep_rows for a k known only at run time: true when k <= 4 (it ran), false otherwise.
template <typename T, bool Update>
inline bool sweep_small(const T* const* rp, int64_t k, const double* y, T* x, int64_t n,
                        double* acc) {
  static constexpr auto fns = sweep_table<T, Update>(std::make_integer_sequence<int, 4>{});
  if (k < 1 || k > 4) return false;
  fns[k - 1](rp, y, x, n, acc);
  return true;
}

}  // namespace UNO_ISA_NS
}  // namespace uno
