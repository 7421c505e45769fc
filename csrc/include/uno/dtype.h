// Element dtypes of the CPU kernels: portable float16/bfloat16 <-> float conversions (written by
// hand, round to nearest even, no compiler extensions) and the dispatch over the allowed (x dtype,
// row dtype) pairs. The codes and the policy itself are uno/abi.h.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "uno/abi.h"
#include "uno/isa.h"
#include "uno/prefetch.h"
#include "uno/simd.h"

namespace uno {
// Per ISA level (uno/isa.h): each level's copy of these inline helpers has its own symbols.
inline namespace UNO_ISA_NS {

// 16-bit storage types: plain bit patterns, converted explicitly.
struct half_t {
  uint16_t bits;
};
struct bf16_t {
  uint16_t bits;
};

inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
inline float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// IEEE binary16 -> float (exact). Branch-free so that loops over it vectorise.
inline float half_to_float(uint16_t h) {
  const uint32_t em = static_cast<uint32_t>(h & 0x7fffu)
                      << 13;  // exponent+mantissa at float position
  const uint32_t exp = em & (0x7c00u << 13);
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  // Normal numbers: rebias the exponent by 127-15; Inf/NaN: rebias to 255.
  const uint32_t normal =
      em + ((127u - 15u) << 23) + (exp == (0x7c00u << 13) ? (128u - 16u) << 23 : 0u);
  // Zero and subnormals: (1.m * 2^-14) - 2^-14 = 0.m * 2^-14, exact in float.
  const float sub = bits_float(em + (113u << 23)) - bits_float(113u << 23);
  const uint32_t mag = exp == 0 ? float_bits(sub) : normal;
  return bits_float(mag | sign);
}

// float -> IEEE binary16, round to nearest even; overflow gives +-Inf, NaN stays a (quiet) NaN.
inline uint16_t float_to_half(float f) {
  uint32_t u = float_bits(f);
  const uint32_t sign = u & 0x80000000u;
  u ^= sign;
  uint32_t o;
  if (u >= ((127u + 16u) << 23)) {  // |f| >= 65536 (after rounding always Inf), Inf or NaN
    o = u > (255u << 23) ? 0x7e00u : 0x7c00u;
  } else if (u <
             (113u << 23)) {  // result is subnormal or zero: let the FPU round (to nearest even)
    const uint32_t magic = ((127u - 15u) + (23u - 10u) + 1u) << 23;
    o = float_bits(bits_float(u) + bits_float(magic)) - magic;
  } else {  // normal: rebias and round the 13 dropped bits to nearest even (may carry into Inf)
    const uint32_t odd = (u >> 13) & 1u;
    u += ((15u - 127u) << 23) + 0xfffu + odd;
    o = u >> 13;
  }
  return static_cast<uint16_t>(o | (sign >> 16));
}

// bfloat16 <-> float: the upper 16 bits of a float.
inline float bf16_to_float(uint16_t b) { return bits_float(static_cast<uint32_t>(b) << 16); }

inline uint16_t float_to_bf16(float f) {
  const uint32_t u = float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u)
    return static_cast<uint16_t>((u >> 16) | 0x40u);  // quiet NaN
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// Elem<T>: how an element type is loaded and stored. `V` is the type the kernels compute from: the
// element itself for float/double, float for the 16-bit types (float holds them exactly).
template <typename T>
struct Elem;
template <>
struct Elem<float> {
  using V = float;
  static constexpr int code = kF32;
  static float load(float v) { return v; }
  static float store(double v) { return static_cast<float>(v); }
};
template <>
struct Elem<double> {
  using V = double;
  static constexpr int code = kF64;
  static double load(double v) { return v; }
  static double store(double v) { return v; }
};
// A double is rounded to float first and then to 16 bits, which is what torch's copy_ from float64
// does.
template <>
struct Elem<half_t> {
  using V = float;
  static constexpr int code = kF16;
  static float load(half_t v) { return half_to_float(v.bits); }
  static half_t store(double v) { return half_t{float_to_half(static_cast<float>(v))}; }
};
template <>
struct Elem<bf16_t> {
  using V = float;
  static constexpr int code = kBF16;
  static float load(bf16_t v) { return bf16_to_float(v.bits); }
  static bf16_t store(double v) { return bf16_t{float_to_bf16(static_cast<float>(v))}; }
};

// Converts n elements at src to Elem<T>::V into buf (which must hold n values) and returns buf.
template <typename T>
inline const typename Elem<T>::V* copy_block(const T* src, int64_t n, typename Elem<T>::V* buf) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) buf[i] = Elem<T>::load(src[i]);
  return buf;
}

// The n elements at src as Elem<T>::V: src itself when T needs no conversion, else copy_block's
// buf.
template <typename T>
inline const typename Elem<T>::V* load_block(const T* src, int64_t n, typename Elem<T>::V* buf) {
  if constexpr (std::is_same_v<T, typename Elem<T>::V>) {
    return src;
  } else {
    return copy_block(src, n, buf);
  }
}

// The single-row float64 reductions (dot; sweep_rows of uno/sweep.h for one row) keep kAcc
// independent vector accumulators per sum, in registers: with one accumulator the loop is bound by
// the add latency (one vector per ~4 cycles), and a lane array that the compiler keeps on the stack
// puts a store and a reload into every chain. Element i goes to lane i % kLanes (kLanes = kAcc
// vectors of kVecD doubles: 32 at x86-64-v4, 16 at v3, 8 at v2), the lanes are added in a fixed
// tree and the tail (n % kLanes elements) in order after it: deterministic for a given thread
// count (fixed chunks), and since the lane count follows the level, so do the last bits
// (like `dots`). Products of two floats are exact in float64, so the fused multiply-add of the
// float32 reductions gives the bits of a product and an add; for float64 it rounds once.
constexpr int kAcc = 4;
constexpr int kLanes = kAcc * kVecD;

// The kAcc accumulators added in a fixed tree.
inline double sum_acc(const VecD* a) { return sum_vec((a[0] + a[2]) + (a[1] + a[3])); }

// The reductions below take a prefetch policy (uno/prefetch.h): Ahead by default (every stream
// prefetched a little ahead), NextBlock in the blocked kernels (the next block, paced by the work:
// one unit per row-column). The policy changes no result.

// sum_i a[i] * b[i], products and sum in float64 (A, B: float or double; kLanes partial sums).
template <typename A, typename B, typename PF = Ahead>
inline double dot(const A* __restrict a, const B* __restrict b, int64_t n, PF&& pf = PF{}) {
  VecD s[kAcc] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    pf.template stream<kLanes>(a + i);
    pf.template stream<kLanes>(b + i);
    pf.advance(kLanes);
#pragma GCC unroll 4
    for (int q = 0; q < kAcc; ++q) {
      s[q] = fmadd(load_vec(a + i + q * kVecD), load_vec(b + i + q * kVecD), s[q]);
    }
  }
  double t = sum_acc(s);
  for (; i < n; ++i) t += static_cast<double>(a[i]) * static_cast<double>(b[i]);
  return t;
}

// acc[j] += <rp[j], v> for j < k (rp: k pointers to n values). Rows go four at a time so that every
// load of v serves four products, with two vector accumulators per row (eight independent sums in
// registers); each sum adds its two accumulators' lanes in a fixed tree, then its tail in order:
// reproducible, with the level's vector width in the last bits.
template <typename A, typename B, typename PF = Ahead>
inline void dots(const A* const* rp, int64_t k, const B* __restrict v, int64_t n, double* acc,
                 PF&& pf = PF{}) {
  constexpr int kStep = 2 * kVecD;
  int64_t j = 0;
  for (; j + 4 <= k; j += 4) {
    const A* __restrict a[4] = {rp[j], rp[j + 1], rp[j + 2], rp[j + 3]};
    VecD s0[4] = {}, s1[4] = {};
    int64_t p = 0;
    for (; p + kStep <= n; p += kStep) {
      pf.template stream<kStep>(v + p);
      pf.advance(4 * kStep);
      const VecD v0 = load_vec(v + p), v1 = load_vec(v + p + kVecD);
#pragma GCC unroll 4
      for (int r = 0; r < 4; ++r) {
        pf.template stream<kStep>(a[r] + p);
        s0[r] = fmadd(load_vec(a[r] + p), v0, s0[r]);
        s1[r] = fmadd(load_vec(a[r] + p + kVecD), v1, s1[r]);
      }
    }
    for (int r = 0; r < 4; ++r) {
      double t = sum_vec(s0[r] + s1[r]);
      for (int64_t q = p; q < n; ++q) t += static_cast<double>(a[r][q]) * static_cast<double>(v[q]);
      acc[j + r] += t;
    }
  }
  for (; j < k; ++j) acc[j] += dot(rp[j], v, n, pf);
}

// Columns per step of lincomb's loops (one advance of the prefetch policy per step).
constexpr int64_t kCombStep = 64;

// s[p] = sum_j c[j] * rp[j][p] for p < n, in float64 (rp: k pointers to n values, c: k
// coefficients). Rows go four at a time to cut the passes over s. Ahead prefetches nothing here
// (the rows of its callers' blocks are in cache or streamed by the hardware).
template <typename A, typename PF = Ahead>
inline void lincomb(const A* const* rp, const double* c, int64_t k, int64_t n, double* __restrict s,
                    PF&& pf = PF{}) {
  if (k == 1) {  // one pass instead of zeroing and accumulating
    const A* __restrict a0 = rp[0];
    const double c0 = c[0];
    for (int64_t p0 = 0; p0 < n; p0 += kCombStep) {
      const int64_t e = std::min(n, p0 + kCombStep);
      pf.advance(e - p0);
#pragma omp simd
      for (int64_t p = p0; p < e; ++p) s[p] = c0 * static_cast<double>(a0[p]);
    }
    return;
  }
#pragma omp simd
  for (int64_t p = 0; p < n; ++p) s[p] = 0.0;
  int64_t j = 0;
  for (; j + 4 <= k; j += 4) {
    const A* __restrict a0 = rp[j];
    const A* __restrict a1 = rp[j + 1];
    const A* __restrict a2 = rp[j + 2];
    const A* __restrict a3 = rp[j + 3];
    const double c0 = c[j], c1 = c[j + 1], c2 = c[j + 2], c3 = c[j + 3];
    for (int64_t p0 = 0; p0 < n; p0 += kCombStep) {
      const int64_t e = std::min(n, p0 + kCombStep);
      pf.advance(4 * (e - p0));
#pragma omp simd
      for (int64_t p = p0; p < e; ++p) {
        s[p] += c0 * static_cast<double>(a0[p]) + c1 * static_cast<double>(a1[p]) +
                c2 * static_cast<double>(a2[p]) + c3 * static_cast<double>(a3[p]);
      }
    }
  }
  for (; j < k; ++j) {
    const A* __restrict a0 = rp[j];
    const double c0 = c[j];
    for (int64_t p0 = 0; p0 < n; p0 += kCombStep) {
      const int64_t e = std::min(n, p0 + kCombStep);
      pf.advance(e - p0);
#pragma omp simd
      for (int64_t p = p0; p < e; ++p) s[p] += c0 * static_cast<double>(a0[p]);
    }
  }
}

// Calls f(T{}) for a single dtype code.
template <typename F>
void dispatch_one(int code, const char* what, F&& f) {
  check_dtype_code(code, what);
  switch (code) {
    case kF32:
      return f(float{});
    case kF64:
      return f(double{});
    case kF16:
      return f(half_t{});
    default:
      return f(bf16_t{});
  }
}

// Calls f(X{}, R{}) with value-initialised tags of the element types of an allowed (x, rows) pair:
// equal dtypes, or x float16/bfloat16 with float32 rows. Throws std::invalid_argument otherwise.
template <typename F>
void dispatch_pair(int x_code, int row_code, const char* what, F&& f) {
  check_dtype_code(x_code, what);
  check_dtype_code(row_code, what);
  if (!pair_ok(x_code, row_code)) {
    throw std::invalid_argument(
        std::string(what) + ": unsupported dtype pair (x " + dtype_name(x_code) + ", rows " +
        dtype_name(row_code) + "); expected equal dtypes, or float16/bfloat16 x with float32 rows");
  }
  if (x_code == row_code) return dispatch_one(x_code, what, [&](auto t) { f(t, t); });
  return dispatch_one(x_code, what, [&](auto x) {
    if constexpr (std::is_same_v<decltype(x), half_t> || std::is_same_v<decltype(x), bf16_t>) {
      f(x, float{});
    }
  });
}

}  // namespace UNO_ISA_NS
}  // namespace uno
