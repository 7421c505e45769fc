// The floor of `combine` at k = 64 on a CPU (docs/kernels.md, "combine at k = 64: the floor"): the
// register tile of csrc/cpu/combine.cpp (8 output rows x 16 columns, float64, x86-64-v4) run from
// L1 alone, and with memory traffic every 8 steps of it (1024 multiply-adds) of each kind the
// kernel issues at that rate at k = r = 64 in float32 (per panel of 16 columns: 64 input lines
// prefetched and packed, 64 output lines streamed, against 65536 multiply-adds): a packed panel row
// read from L2, a prefetch into L2 of a line of one of 64 rows 4 MB apart, a non-temporal store of
// a line of one of 64 such rows; then all three, as the kernel does. HUGE=1 puts the rows in
// transparent huge pages (madvise). Not part of the build; compile and run by hand:
//
//   c++ -O3 -march=native -mprefer-vector-width=512 -ffp-contract=fast -o /tmp/tile_mix
//     bench/cpp/tile_memory_mix.cpp && /tmp/tile_mix && HUGE=1 /tmp/tile_mix    (one command line)
//
// Prints GFMA/s per mode; compare them with each other (and with uno._C.fma_peak_cpu(1 << 19, 1)
// timed in Python), in one run.
#include <immintrin.h>
#include <sys/mman.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace {

typedef double VecD __attribute__((vector_size(64)));
typedef double VecDu __attribute__((vector_size(64), aligned(8), may_alias));

constexpr size_t kRows = 64, kRowStride = 1000000;  // floats: the rows of a (64, 1e6) tensor
constexpr size_t kL2Floats = 1 << 18;               // 1 MiB: a block's rows, prefetched into L2
float* l2_src;
double* pack_dst;
float* rows_in;
float* rows_out;
size_t n_pack = 0, n_pf = 0, n_nt = 0;

// The address of the n-th line of a row-strided stream: 4 consecutive lines of a row (a 64-column
// block of floats), then the next row, as the kernel's prefetches and packing walk them.
inline float* line_of(float* base, size_t n) {
  const size_t row = (n >> 2) % kRows, line = (n / (4 * kRows)) * 4 + (n & 3);
  return base + row * kRowStride + (line * 16) % (kRowStride - 16);
}

enum Mode { kNone = 0, kPack = 1, kPrefetch = 2, kStream = 4 };

template <int M>
inline void slot() {
  if (M & kPack) {  // one panel row: 16 floats from L2 -> 16 doubles
    const float* src = l2_src + (n_pack * 16) % kL2Floats;
    double* d = pack_dst + (n_pack % 256) * 16;
    const __mmask8 all = 0xff;  // the masked forms: GCC 12 warns on the plain ones' undefined
    _mm512_storeu_pd(d, _mm512_mask_cvtps_pd(_mm512_setzero_pd(), all, _mm256_loadu_ps(src)));
    _mm512_storeu_pd(d + 8,
                     _mm512_mask_cvtps_pd(_mm512_setzero_pd(), all, _mm256_loadu_ps(src + 8)));
    ++n_pack;
  }
  if (M & kPrefetch) __builtin_prefetch(line_of(rows_in, n_pf++), 0, 1);  // prefetcht2
  if (M & kStream) _mm512_stream_ps(line_of(rows_out, n_nt++), _mm512_set1_ps(1.f));
}

// The tile of csrc/cpu/combine.cpp (tile<8>: m[ii * ldm + j] broadcast, two panel vectors per
// step j), with slot<M>() every 8 steps.
template <int M>
__attribute__((noinline)) void tile(const double* __restrict panel, int64_t k,
                                    const double* __restrict m, double* __restrict res) {
  VecD acc0[8], acc1[8];
#pragma GCC unroll 16
  for (int ii = 0; ii < 8; ++ii) acc0[ii] = acc1[ii] = VecD{};
  for (int64_t j0 = 0; j0 < k; j0 += 8) {
    slot<M>();
    for (int64_t j = j0; j < j0 + 8; ++j) {
      const VecD a0 = *reinterpret_cast<const VecDu*>(panel + j * 16);
      const VecD a1 = *reinterpret_cast<const VecDu*>(panel + j * 16 + 8);
#pragma GCC unroll 16
      for (int ii = 0; ii < 8; ++ii) {
        const double cs = m[ii * k + j];
        const VecD c = {cs, cs, cs, cs, cs, cs, cs, cs};
        acc0[ii] = c * a0 + acc0[ii];
        acc1[ii] = c * a1 + acc1[ii];
      }
    }
  }
#pragma GCC unroll 16
  for (int ii = 0; ii < 8; ++ii) {
    *reinterpret_cast<VecDu*>(res + ii * 16) = acc0[ii];
    *reinterpret_cast<VecDu*>(res + ii * 16 + 8) = acc1[ii];
  }
}

template <int M>
void run(const char* name) {
  alignas(64) static double panel[4 * 64 * 16], m[8 * 64], res[128];
  for (double& x : panel) x = 1e-3;
  for (double& x : m) x = 1e-3;
  constexpr int64_t kReps = 1000000, k = 64;
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t r = 0; r < kReps; ++r) tile<M>(panel + (r & 3) * k * 16, k, m, res);
  _mm_sfence();
  const double t = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("%-34s %6.1f GFMA/s  (res %g)\n", name, kReps * k * 128.0 / t / 1e9, res[0]);
}

float* rows_alloc(bool huge) {
  const size_t bytes =
      (kRows * kRowStride * sizeof(float) + (1 << 21) - 1) & ~size_t((1 << 21) - 1);
  float* p = static_cast<float*>(std::aligned_alloc(1 << 21, bytes));
  if (p == nullptr) std::abort();
  if (huge) madvise(p, bytes, MADV_HUGEPAGE);
  std::memset(p, 0, bytes);
  return p;
}

}  // namespace

int main() {
  const bool huge = std::getenv("HUGE") != nullptr;
  l2_src = static_cast<float*>(std::aligned_alloc(64, kL2Floats * sizeof(float)));
  pack_dst = static_cast<double*>(std::aligned_alloc(64, 256 * 16 * sizeof(double)));
  std::memset(l2_src, 0, kL2Floats * sizeof(float));
  rows_in = rows_alloc(huge);
  rows_out = rows_alloc(huge);
  std::printf("rows in %s pages; each kind of traffic once per 1024 multiply-adds\n",
              huge ? "huge" : "4 KiB");
  for (int round = 0; round < 2; ++round) {
    run<kNone>("tile alone");
    run<kPack>("+ pack a panel row from L2");
    run<kPrefetch>("+ prefetch a row line into L2");
    run<kStream>("+ stream a row line out");
    run<kPack | kPrefetch | kStream>("+ all three (the kernel)");
  }
  return 0;
}
