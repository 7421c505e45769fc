// The CPU kernels of one ISA level as a table of plain functions, and the table chosen at import.
//
// csrc/cpu/<op>.cpp is compiled once per built level (csrc/include/uno/isa.h): each compile defines
// uno::cpu::isa_<level>::run_<op> (the dtype dispatch and the kernel, arguments already checked)
// and csrc/cpu/isa_table.cpp collects them into isa_<level>::kernels. Only the baseline compile
// (the one with UNO_CPU_BINDINGS) defines the pybind11 entry points: they check the arguments,
// release the GIL and call active().run_<op>, so no pybind11 or argument-checking code is ever
// compiled for a level above the baseline.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "uno/isa.h"

namespace uno {
namespace cpu {

using I64s = std::vector<int64_t>;

// A (B, T, K) operand of ghost_gram: element (b, t, k) at ptr[b * sb + t * st + k * sk].
struct View3 {
  int64_t ptr;
  int64_t sb, st, sk;
};

// The arguments of one optim_step call (csrc/cpu/optim_step.cpp), after the checks.
struct OptimArgs {
  int kind, phase, flags;
  int64_t k;
  std::vector<int64_t> p, g, s1, s2, s3, rows, lds, ns;
  std::vector<double> step;  // Adam: per-piece step count
  const double* coef;        // k values or nullptr
  double hyper[5];
  bool has_scale;
  float scale;
};

using InnerFn = void (*)(const I64s& x_ptrs, const I64s& row_ptrs, const I64s& lds, const I64s& ns,
                         int64_t k, bool with_gram, int x_dtype, int row_dtype, double* out,
                         int num_threads);
using ProjectFn = void (*)(const I64s& x_ptrs, const I64s& row_ptrs, const I64s& lds,
                           const I64s& ns, int64_t k, const double* y, int x_dtype, int row_dtype,
                           double* out, int num_threads);
using CombineFn = void (*)(const I64s& out_ptrs, const I64s& out_lds, const I64s& row_ptrs,
                           const I64s& lds, const I64s& ns, int64_t k, int64_t r, const double* m,
                           int dtype, int num_threads);
using OptimStepFn = void (*)(const OptimArgs& a, int p_dtype, int r_dtype, int s_dtype, double* out,
                             int num_threads);
using GhostGramFn = void (*)(const View3& a, const View3& g, const View3& a2, const View3& g2,
                             int64_t b1, int64_t t1, int64_t b2, int64_t t2, int64_t d, int64_t p,
                             int dtype, bool diag, bool symmetric, double* out, int num_threads);

using FmaPeakFn = double (*)(int64_t iters, int num_threads);
using ThreadPoolFn = const char* (*)();

struct Kernels {
  InnerFn inner;
  ProjectFn project;
  CombineFn combine;
  OptimStepFn optim_step;
  GhostGramFn ghost_gram;
  FmaPeakFn fma_peak;  // a benchmark's reference (csrc/cpu/combine.cpp), not a primitive
  // "openmp" or "std" (uno/parallel.h); the first call finds the pool and registers the fork
  // handler, so _C calls it at import, before any fork
  ThreadPoolFn thread_pool;
};

// This compile's level: the functions csrc/cpu/<op>.cpp defines and the table of them.
namespace UNO_ISA_NS {
void run_inner(const I64s& x_ptrs, const I64s& row_ptrs, const I64s& lds, const I64s& ns, int64_t k,
               bool with_gram, int x_dtype, int row_dtype, double* out, int num_threads);
void run_project(const I64s& x_ptrs, const I64s& row_ptrs, const I64s& lds, const I64s& ns,
                 int64_t k, const double* y, int x_dtype, int row_dtype, double* out,
                 int num_threads);
void run_combine(const I64s& out_ptrs, const I64s& out_lds, const I64s& row_ptrs, const I64s& lds,
                 const I64s& ns, int64_t k, int64_t r, const double* m, int dtype, int num_threads);
void run_optim_step(const OptimArgs& a, int p_dtype, int r_dtype, int s_dtype, double* out,
                    int num_threads);
void run_ghost_gram(const View3& a, const View3& g, const View3& a2, const View3& g2, int64_t b1,
                    int64_t t1, int64_t b2, int64_t t2, int64_t d, int64_t p, int dtype, bool diag,
                    bool symmetric, double* out, int num_threads);
double run_fma_peak(int64_t iters, int num_threads);
extern const Kernels kernels;
}  // namespace UNO_ISA_NS

// The table chosen once when _C is imported (the best built level this CPU supports, or the level
// UNO_CPU_ISA names). Throws std::runtime_error with the reason when UNO_CPU_ISA could not be
// honoured (an unknown, unbuilt or unsupported level), so no kernel runs at an unintended level.
const Kernels& active();

}  // namespace cpu
}  // namespace uno
