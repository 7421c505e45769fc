// csrc/cpu/combine.cpp's kernel without Python (docs/kernels.md, "combine at k = 64: the floor"):
// out = m @ rows for k = r float32 rows of P columns in one piece, 64-byte aligned as torch's
// tensors are, at 1 or more threads (uno's own threads: no OpenMP runtime is loaded here), timed
// after a 64 MiB copy as the roofline's rounds do, against fma_peak run between the calls. HUGE=1
// puts the rows in transparent huge pages (madvise); WARM=N times N back-to-back calls per sample
// instead, with no copy between them, so that rows that fit stay in cache (the kernel's compute
// rate: docs/kernels.md "On a Zen 5 core" ran `WARM=1000 /tmp/combine_sa 16 2000 1 5`). Not part
// of the build; from the source root,
// one command line (the include paths: pybind11 and Python headers, which uno/cpu_file.h needs):
//
//   c++ -O3 -std=gnu++17 -fopenmp-simd -fno-math-errno -ffp-contract=off -march=native
//     -mprefer-vector-width=512 -DUNO_ISA=native -DUNO_LEVEL_native=1 -Icsrc/include
//     $(python -m pybind11 --includes) bench/cpp/combine_standalone.cpp -o /tmp/combine_sa -ldl
//     -lpthread && /tmp/combine_sa 64 1000000 2 && HUGE=1 /tmp/combine_sa 64 1000000 2
//
// Arguments: k (64), P (1e6), threads (1), calls (15). Prints the median call, GFMA/s, the median
// peak and the ratio. Compare runs in alternating processes: single runs move with the machine.
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "../../csrc/cpu/combine.cpp"

namespace {

float* rows_alloc(size_t n, bool huge) {
  const size_t bytes = (n * sizeof(float) + (1 << 21) - 1) & ~size_t((1 << 21) - 1);
  float* p = static_cast<float*>(std::aligned_alloc(1 << 21, bytes));
  if (p == nullptr) std::abort();
  if (huge) madvise(p, bytes, MADV_HUGEPAGE);
  return p;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  using uno::cpu::isa_native::run_combine;
  using uno::cpu::isa_native::run_fma_peak;
  const int64_t k = argc > 1 ? std::atol(argv[1]) : 64, P = argc > 2 ? std::atol(argv[2]) : 1000000;
  const int threads = argc > 3 ? std::atoi(argv[3]) : 1, calls = argc > 4 ? std::atoi(argv[4]) : 15;
  if (k < 5 || P < 1 || threads < 1 || calls < 1) {
    std::fprintf(stderr, "usage: %s [k >= 5] [P >= 1] [threads >= 1] [calls >= 1]\n", argv[0]);
    return 2;
  }
  const bool huge = std::getenv("HUGE") != nullptr;
  const size_t n = static_cast<size_t>(k * P);
  float* in = rows_alloc(n, huge);
  float* out = rows_alloc(n, huge);
  for (size_t i = 0; i < n; ++i) in[i] = static_cast<float>((i * 2654435761u) % 1000) * 1e-3f;
  std::fill(out, out + n, 0.f);
  std::vector<double> m(static_cast<size_t>(k * k));
  for (size_t i = 0; i < m.size(); ++i) m[i] = static_cast<double>((i * 40503u) % 100) * 1e-2;
  std::vector<float> a(16 << 20, 1.f), b(16 << 20);  // the copy before each call
  const uno::cpu::I64s op{reinterpret_cast<int64_t>(out)}, rp{reinterpret_cast<int64_t>(in)};
  const uno::cpu::I64s lds{P}, ns{P};
  std::vector<double> t_call, peak;
  const char* warm_env = std::getenv("WARM");
  const int warm = warm_env != nullptr ? std::max(1, std::atoi(warm_env)) : 0;
  for (int c = 0; c < calls; ++c) {
    if (warm == 0) std::copy(a.begin(), a.end(), b.begin());
    const auto t0 = std::chrono::steady_clock::now();
    for (int w = 0; w < std::max(1, warm); ++w) {
      run_combine(op, lds, rp, lds, ns, k, k, m.data(), uno::kF32, threads);
    }
    t_call.push_back(seconds_since(t0) / std::max(1, warm));
    double best = 1e9, fmas = 0.0;
    for (int s = 0; s < 6; ++s) {  // the fastest of 6 short runs, as uno bench roofline's probe
      const auto t1 = std::chrono::steady_clock::now();
      fmas = run_fma_peak(1 << 19, threads);
      best = std::min(best, seconds_since(t1));
    }
    peak.push_back(fmas / best);
  }
  std::sort(t_call.begin(), t_call.end());
  std::sort(peak.begin(), peak.end());
  const double t = t_call[calls / 2], pk = peak[calls / 2], rate = double(k) * k * P / t;
  std::printf(
      "k=%ld P=%ld threads=%d %s pages%s: %.3f ms, %.1f GFMA/s, peak %.1f -> %.1f %% (out %g)\n",
      static_cast<long>(k), static_cast<long>(P), threads, huge ? "huge" : "4 KiB",
      warm ? ", warm" : "", t * 1e3, rate / 1e9, pk / 1e9, 100 * rate / pk,
      static_cast<double>(out[static_cast<size_t>((k / 2) * P + P / 3)]));
  return 0;
}
