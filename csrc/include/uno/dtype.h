// Element dtypes of the CPU kernels: portable float16/bfloat16 <-> float conversions (written by
// hand, round to nearest even, no compiler extensions) and the dispatch over the allowed (x dtype,
// row dtype) pairs. The codes and the policy itself are uno/abi.h.
#pragma once

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "uno/abi.h"
#include "uno/isa.h"

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

// Independent float64 partial sums of the single-row reductions below. With one accumulator a dot
// product is bound by the add latency (one vector of doubles per ~4 cycles, under half of what
// memory delivers); kLanes = 16 keeps four AVX2 (two AVX-512) accumulators in flight. Element i
// goes to lane i % kLanes and the lanes are added in a fixed tree, so the result does not depend on
// the vector width the compiler picks.
constexpr int kLanes = 16;

inline double sum_lanes(const double* s) {
  double t[kLanes / 2];
  for (int l = 0; l < kLanes / 2; ++l) t[l] = s[l] + s[l + kLanes / 2];
  for (int w = kLanes / 4; w >= 1; w /= 2) {
    for (int l = 0; l < w; ++l) t[l] += t[l + w];
  }
  return t[0];
}

// Calls body(i, l) for every i < n with lane l = i % kLanes: full groups of kLanes as one
// vectorised loop, then the tail. The bodies below add into per-lane partial sums, then use
// sum_lanes.
template <typename Body>
inline void for_lanes(int64_t n, Body&& body) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
#pragma omp simd
    for (int l = 0; l < kLanes; ++l) body(i + l, l);
  }
  for (int l = 0; i < n; ++i, ++l) body(i, l);
}

// sum_i a[i] * b[i], products and sum in float64 (kLanes partial sums: a fixed order).
template <typename A, typename B>
inline double dot(const A* __restrict a, const B* __restrict b, int64_t n) {
  double s[kLanes] = {};
  for_lanes(
      n, [&](int64_t i, int l) { s[l] += static_cast<double>(a[i]) * static_cast<double>(b[i]); });
  return sum_lanes(s);
}

// *sab += <a, b> and *sbb += <b, b> in one sweep over a and b (same lane order as dot).
template <typename A, typename B>
inline void dot_norm(const A* __restrict a, const B* __restrict b, int64_t n, double* sab,
                     double* sbb) {
  double u[kLanes] = {}, v[kLanes] = {};
  for_lanes(n, [&](int64_t i, int l) {
    const double bv = static_cast<double>(b[i]);
    u[l] += static_cast<double>(a[i]) * bv;
    v[l] += bv * bv;
  });
  *sab += sum_lanes(u);
  *sbb += sum_lanes(v);
}

// acc[j] += <rp[j], v> for j < k (rp: k pointers to n values). Rows go four at a time so that every
// load of v serves four products; each sum has a fixed order, so results are reproducible.
template <typename A, typename B>
inline void dots(const A* const* rp, int64_t k, const B* __restrict v, int64_t n, double* acc) {
  int64_t j = 0;
  for (; j + 4 <= k; j += 4) {
    const A* __restrict a0 = rp[j];
    const A* __restrict a1 = rp[j + 1];
    const A* __restrict a2 = rp[j + 2];
    const A* __restrict a3 = rp[j + 3];
    double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
    for (int64_t p = 0; p < n; ++p) {
      const double vp = static_cast<double>(v[p]);
      s0 += static_cast<double>(a0[p]) * vp;
      s1 += static_cast<double>(a1[p]) * vp;
      s2 += static_cast<double>(a2[p]) * vp;
      s3 += static_cast<double>(a3[p]) * vp;
    }
    acc[j] += s0;
    acc[j + 1] += s1;
    acc[j + 2] += s2;
    acc[j + 3] += s3;
  }
  for (; j < k; ++j) acc[j] += dot(rp[j], v, n);
}

// s[p] = sum_j c[j] * rp[j][p] for p < n, in float64 (rp: k pointers to n values, c: k
// coefficients). Rows go four at a time to cut the passes over s.
template <typename A>
inline void lincomb(const A* const* rp, const double* c, int64_t k, int64_t n,
                    double* __restrict s) {
  if (k == 1) {  // one pass instead of zeroing and accumulating
    const A* __restrict a0 = rp[0];
    const double c0 = c[0];
#pragma omp simd
    for (int64_t p = 0; p < n; ++p) s[p] = c0 * static_cast<double>(a0[p]);
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
#pragma omp simd
    for (int64_t p = 0; p < n; ++p) {
      s[p] += c0 * static_cast<double>(a0[p]) + c1 * static_cast<double>(a1[p]) +
              c2 * static_cast<double>(a2[p]) + c3 * static_cast<double>(a3[p]);
    }
  }
  for (; j < k; ++j) {
    const A* __restrict a0 = rp[j];
    const double c0 = c[j];
#pragma omp simd
    for (int64_t p = 0; p < n; ++p) s[p] += c0 * static_cast<double>(a0[p]);
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
