// Runtime ISA dispatch of the CPU kernels. Compiled once per built level like every csrc/cpu file:
// each compile defines that level's table, isa_<level>::kernels. The baseline compile
// (UNO_CPU_BINDINGS) also chooses the table once, when _C is imported, and exports the choice:
// _C.cpu_isa (the level that runs), _C.cpu_isa_built, _C.cpu_isa_supported, _C.cpu_isa_forced and
// _C.cpu_isa_error.
//
// Choice: UNO_CPU_ISA unset or empty -> the highest built level whose features this CPU (and OS)
// supports; UNO_CPU_ISA=<level> -> that level, which must be built and supported. A level that
// cannot be honoured is not an import error (the CUDA kernels and the Python fallbacks stay
// usable): the reason goes to _C.cpu_isa_error and every CPU kernel call raises it.
#ifdef UNO_CPU_BINDINGS
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdlib>
#include <stdexcept>

#include "uno/registry.h"
#endif

#include <string>
#include <vector>

#include "uno/cpu_kernels.h"
#include "uno/parallel.h"

namespace uno {
namespace cpu {

namespace UNO_ISA_NS {
extern const Kernels kernels = {&run_inner,      &run_project,  &run_combine,     &run_optim_step,
                                &run_ghost_gram, &run_fma_peak, &thread_pool_name};
}  // namespace UNO_ISA_NS

#ifdef UNO_CPU_BINDINGS
// The other built levels' tables (CMake defines UNO_LEVEL_<id> for each built level).
#ifdef UNO_LEVEL_x86_64_v3
namespace isa_x86_64_v3 {
extern const Kernels kernels;
}
#endif
#ifdef UNO_LEVEL_x86_64_v4
namespace isa_x86_64_v4 {
extern const Kernels kernels;
}
#endif

namespace {

struct Level {
  const char* name;      // as UNO_CPU_ISA spells it and _C.cpu_isa reports it
  const char* alias;     // a short spelling UNO_CPU_ISA also accepts ("" for none)
  const Kernels* table;  // the level's kernels
  bool (*supported)();   // does this CPU (and its OS) support the level's instructions?
};

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
// The feature sets of the x86-64 psABI levels that the compiler's -march=x86-64-v<N> may use.
// __builtin_cpu_supports also checks that the OS saves the AVX/AVX-512 registers (XCR0).
[[maybe_unused]] bool cpu_v2() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("popcnt") && __builtin_cpu_supports("ssse3") &&
         __builtin_cpu_supports("sse4.1") && __builtin_cpu_supports("sse4.2");
}
[[maybe_unused]] bool cpu_v3() {
  return cpu_v2() && __builtin_cpu_supports("avx") && __builtin_cpu_supports("avx2") &&
         __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi") &&
         __builtin_cpu_supports("bmi2") && __builtin_cpu_supports("f16c") &&
         __builtin_cpu_supports("lzcnt") && __builtin_cpu_supports("movbe");
}
[[maybe_unused]] bool cpu_v4() {
  return cpu_v3() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512dq") &&
         __builtin_cpu_supports("avx512vl");
}
#endif
[[maybe_unused]] bool always() { return true; }

// Built levels, lowest first; the first is this file's own (the baseline).
const std::vector<Level>& levels() {
  static const std::vector<Level> all = {
#if defined(UNO_LEVEL_x86_64_v2)
    {"x86-64-v2", "v2", &UNO_ISA_NS::kernels, &cpu_v2},
#elif defined(UNO_LEVEL_native)
    {"native", "", &UNO_ISA_NS::kernels, &always},  // -march=native: the building machine's CPU
#else
    // the compiler's default target (e.g. aarch64, whose baseline has NEON)
    {"portable", "", &UNO_ISA_NS::kernels, &always},
#endif
#ifdef UNO_LEVEL_x86_64_v3
    {"x86-64-v3", "v3", &isa_x86_64_v3::kernels, &cpu_v3},
#endif
#ifdef UNO_LEVEL_x86_64_v4
    {"x86-64-v4", "v4", &isa_x86_64_v4::kernels, &cpu_v4},
#endif
  };
  return all;
}

struct Choice {
  const Kernels* table = nullptr;
  std::string name, error;
  bool forced = false;
};

std::string names_of(const std::vector<const Level*>& ls) {
  std::string s;
  for (const Level* l : ls) s += (s.empty() ? "" : ", ") + std::string(l->name);
  return s.empty() ? "none" : s;
}

Choice choose() {
  Choice c;
  std::vector<const Level*> built, ok;
  for (const Level& l : levels()) {
    built.push_back(&l);
    if (l.supported()) ok.push_back(&l);
  }
  const char* env = std::getenv("UNO_CPU_ISA");
  if (env == nullptr || *env == '\0') {
    if (ok.empty()) {
      c.error = "this CPU lacks the instructions of the lowest built level, " +
                std::string(built.front()->name) + " (built: " + names_of(built) + ")";
      return c;
    }
    c.table = ok.back()->table;
    c.name = ok.back()->name;
    return c;
  }
  c.forced = true;
  const std::string want(env);
  for (const Level* l : built) {
    if (want != l->name && want != l->alias) continue;
    if (!l->supported()) {
      c.error = "UNO_CPU_ISA=" + want + ": this CPU does not support " + l->name +
                " (supported here: " + names_of(ok) + ")";
      return c;
    }
    c.table = l->table;
    c.name = l->name;
    return c;
  }
  c.error = "UNO_CPU_ISA=" + want + " is not a level of this build (built: " + names_of(built) +
            "; supported by this CPU: " + names_of(ok) + "); unset it to pick the best level";
  return c;
}

const Choice& choice() {
  static const Choice c = choose();  // once per process: at import (register_isa_cpu)
  return c;
}

void register_isa_cpu(pybind11::module_& m) {
  const Choice& c = choice();
  std::vector<std::string> built, ok;
  for (const Level& l : levels()) {
    built.emplace_back(l.name);
    if (l.supported()) ok.emplace_back(l.name);
  }
  m.attr("cpu_isa") = c.name;
  m.attr("cpu_isa_built") = built;
  m.attr("cpu_isa_supported") = ok;
  m.attr("cpu_isa_forced") = c.forced;
  m.attr("cpu_isa_error") = c.error;
  // The active level's pool, found now: its fork handler must be registered before any fork (a
  // child forked from a parent whose torch had used the pool must not ask libgomp for a team).
  if (c.table != nullptr) c.table->thread_pool();
  m.def(
      "cpu_thread_pool",
      [] {
        const Choice& ch = choice();
        return std::string(ch.table != nullptr ? ch.table->thread_pool() : thread_pool_name());
      },
      "The threads the CPU kernels run on: 'openmp' (the pool of the OpenMP runtime torch loaded, "
      "borrowed through GOMP_parallel) or 'std' (uno's own threads: UNO_CPU_THREADS=std, or no "
      "OpenMP runtime in the process). Either gives the same bits (uno/parallel.h).");
}

}  // namespace

const Kernels& active() {
  const Choice& c = choice();
  if (c.table == nullptr) throw std::runtime_error("uno CPU kernels: " + c.error);
  return *c.table;
}
#endif  // UNO_CPU_BINDINGS

}  // namespace cpu
}  // namespace uno

#ifdef UNO_CPU_BINDINGS
UNO_REGISTER(isa, cpu);
#endif
