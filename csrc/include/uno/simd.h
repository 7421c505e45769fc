// Vectors of doubles for the register-blocked CPU kernels (combine's micro-kernel, inner's Gram
// tiles): GCC/Clang vector extensions, as wide as the ISA level's preferred vectors (512 bits at
// x86-64-v4, 256 at v3, 128 below), so each level's compile gets its own width.
#pragma once

#include <cstdint>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

#include "uno/isa.h"

namespace uno {
// Per ISA level (uno/isa.h): each level's copy of these inline helpers has its own symbols.
inline namespace UNO_ISA_NS {

#if defined(__AVX512F__)
#define UNO_VEC_BYTES 64
#elif defined(__AVX__)
#define UNO_VEC_BYTES 32
#else
#define UNO_VEC_BYTES 16
#endif
typedef double VecD __attribute__((vector_size(UNO_VEC_BYTES)));
// The same vector at any double's address (unaligned, may alias doubles): loads and stores without
// a round trip through a stack array.
typedef double VecDu __attribute__((vector_size(UNO_VEC_BYTES), aligned(8), may_alias));
// Half as many floats (one VecD after conversion), at any float's address.
typedef float VecFh __attribute__((vector_size(UNO_VEC_BYTES / 2), aligned(4), may_alias));
typedef float VecFhv __attribute__((vector_size(UNO_VEC_BYTES / 2)));
constexpr int kVecD = UNO_VEC_BYTES / 8;  // doubles per vector
// The widest vectors have more registers: 32 at AVX-512, 16 below.
constexpr bool kManyRegs = UNO_VEC_BYTES == 64;
#undef UNO_VEC_BYTES

// kVecD values at p as doubles (converted from float). The float conversion is spelled with
// intrinsics: GCC lowers __builtin_convertvector of 8 floats to 8 doubles as two 4-wide halves.
inline VecD load_vec(const double* p) { return *reinterpret_cast<const VecDu*>(p); }
inline VecD load_vec(const float* p) {
#if defined(__AVX512F__)
  // The all-lanes masked form (the same vcvtps2pd): _mm512_cvtps_pd merges into an "undefined"
  // register, which GCC 12 reports as maybe-uninitialized.
  return reinterpret_cast<VecD>(
      _mm512_mask_cvtps_pd(_mm512_setzero_pd(), static_cast<__mmask8>(0xff), _mm256_loadu_ps(p)));
#elif defined(__AVX__)
  return reinterpret_cast<VecD>(_mm256_cvtps_pd(_mm_loadu_ps(p)));
#elif defined(__SSE2__)
  const __m128 two = _mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double*>(p)));
  return reinterpret_cast<VecD>(_mm_cvtps_pd(two));
#else
  return __builtin_convertvector(static_cast<VecFhv>(*reinterpret_cast<const VecFh*>(p)), VecD);
#endif
}

// a * b + c, fused (one rounding) where the level has FMA (x86-64-v3 and v4: the same bits at
// both), else a rounded product and a rounded add (x86-64-v2). Written out explicitly: the build's
// -ffp-contract=off keeps the compiler from fusing anything behind the code's back.
// c in every lane (a broadcast; `VecD{} + c` would cost an add).
inline VecD splat(double c) {
#if defined(__AVX512F__)
  return reinterpret_cast<VecD>(_mm512_set1_pd(c));
#elif defined(__AVX__)
  return reinterpret_cast<VecD>(_mm256_set1_pd(c));
#elif defined(__SSE2__)
  return reinterpret_cast<VecD>(_mm_set1_pd(c));
#else
  VecD v;
  for (int l = 0; l < kVecD; ++l) v[l] = c;
  return v;
#endif
}

inline VecD fmadd(VecD a, VecD b, VecD c) {
#if defined(__AVX512F__)
  return reinterpret_cast<VecD>(_mm512_fmadd_pd(
      reinterpret_cast<__m512d>(a), reinterpret_cast<__m512d>(b), reinterpret_cast<__m512d>(c)));
#elif defined(__FMA__)
  return reinterpret_cast<VecD>(_mm256_fmadd_pd(
      reinterpret_cast<__m256d>(a), reinterpret_cast<__m256d>(b), reinterpret_cast<__m256d>(c)));
#else
  return a * b + c;
#endif
}

// Rounds v to float, stores the kVecD floats at p and returns what was stored, as doubles (the
// value a later reduction must measure). Round to nearest like static_cast<float>: the stored bits
// are those of the scalar code at every level.
inline VecD store_round(float* p, VecD v) {
#if defined(__AVX512F__)
  const __m256 f = _mm512_mask_cvtpd_ps(_mm256_setzero_ps(), static_cast<__mmask8>(0xff),
                                        reinterpret_cast<__m512d>(v));  // see load_vec
  _mm256_storeu_ps(p, f);
  return reinterpret_cast<VecD>(
      _mm512_mask_cvtps_pd(_mm512_setzero_pd(), static_cast<__mmask8>(0xff), f));  // see load_vec
#elif defined(__AVX__)
  const __m128 f = _mm256_cvtpd_ps(reinterpret_cast<__m256d>(v));
  _mm_storeu_ps(p, f);
  return reinterpret_cast<VecD>(_mm256_cvtps_pd(f));
#elif defined(__SSE2__)
  const __m128 f = _mm_cvtpd_ps(reinterpret_cast<__m128d>(v));
  _mm_store_sd(reinterpret_cast<double*>(p), _mm_castps_pd(f));
  return reinterpret_cast<VecD>(_mm_cvtps_pd(f));
#else
  const VecFhv f = __builtin_convertvector(v, VecFhv);
  *reinterpret_cast<VecFh*>(p) = f;
  return __builtin_convertvector(f, VecD);
#endif
}
inline VecD store_round(double* p, VecD v) {
  *reinterpret_cast<VecDu*>(p) = v;
  return v;
}

// v rounded to T stored at p with a non-temporal store (no read for ownership, not kept in cache):
// for a buffer written once and not read again soon. p aligned to the store's width (64 bytes for
// double at x86-64-v4; 32 for float at v4 and double at v3); a plain store where the level has no
// such store. The stored bits are store_round's.
inline void stream_vec(double* p, VecD v) {
#if defined(__AVX512F__)
  _mm512_stream_pd(p, reinterpret_cast<__m512d>(v));
#elif defined(__AVX__)
  _mm256_stream_pd(p, reinterpret_cast<__m256d>(v));
#else
  store_round(p, v);
#endif
}
inline void stream_vec(float* p, VecD v) {
#if defined(__AVX512F__)
  _mm256_stream_ps(p, _mm512_mask_cvtpd_ps(_mm256_setzero_ps(), static_cast<__mmask8>(0xff),
                                           reinterpret_cast<__m512d>(v)));  // see load_vec
#elif defined(__AVX__)
  _mm_stream_ps(p, _mm256_cvtpd_ps(reinterpret_cast<__m256d>(v)));
#else
  store_round(p, v);
#endif
}

// Software prefetch for the streaming reductions (dtype.h, sweep.h): one core alone keeps too few
// cache-line misses in flight to reach the memory bandwidth (a standalone loop, x86-64-v4, one
// thread: 85 -> 100 % of a same-thread copy at 1 KiB ahead). Touches every line of the Elems
// elements starting kPrefetchAhead bytes after p; a hint, never faults.
constexpr int kPrefetchAhead = 1024;
template <int Elems, typename T>
inline void prefetch_ahead(const T* p) {
  constexpr int kBytes = Elems * static_cast<int>(sizeof(T));
#pragma GCC unroll 8
  for (int o = 0; o < kBytes; o += 64) {
    __builtin_prefetch(reinterpret_cast<const char*>(p) + kPrefetchAhead + o);
  }
}

// The lanes of v added in a fixed tree (pairs of halves), whatever the width.
inline double sum_vec(VecD v) {
  double t[kVecD];
  *reinterpret_cast<VecDu*>(t) = v;
  for (int w = kVecD / 2; w >= 1; w /= 2) {
    for (int l = 0; l < w; ++l) t[l] += t[l + w];
  }
  return t[0];
}

}  // namespace UNO_ISA_NS
}  // namespace uno
