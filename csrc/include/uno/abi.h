// The constants shared by the kernels and Python: the C++ side of python/uno/_abi.py. Dtype codes,
// the dtype policy (allowed (x, rows) pairs) and the fused optimizer step's kinds, phases and flag
// bits are written here once for every CPU and CUDA kernel; bindings.cpp exports them as _C.abi so
// that a test holds them against the Python module.
#pragma once

#include <stdexcept>
#include <string>

namespace uno {

// The element dtype codes passed through _C (docs/kernels.md).
enum DType : int { kF32 = 0, kF64 = 1, kF16 = 2, kBF16 = 3 };

inline const char* dtype_name(int code) {
  switch (code) {
    case kF32:
      return "float32";
    case kF64:
      return "float64";
    case kF16:
      return "float16";
    case kBF16:
      return "bfloat16";
    default:
      return "unknown";
  }
}

inline void check_dtype_code(int code, const char* what) {
  if (code < kF32 || code > kBF16) {
    throw std::invalid_argument(std::string(what) + ": unknown dtype code " + std::to_string(code) +
                                " (expected 0=float32, 1=float64, 2=float16, 3=bfloat16)");
  }
}

// The dtype policy: x (a vector, a parameter) with rows (or optimizer states) of equal dtype, or a
// float16/bfloat16 x with float32 rows.
constexpr bool pair_ok(int x_code, int row_code) {
  return x_code == row_code || (row_code == kF32 && (x_code == kF16 || x_code == kBF16));
}

// The fused optimizer step (python/uno/reference/optim_step.py is the spec).
namespace step {
constexpr int kSgd = 0, kAdam = 1;
constexpr int kWrite = 0, kGradCoef = 1, kUpdateCoef = 2;
constexpr int kMaximize = 1, kNesterov = 2, kFirst = 4, kWriteGrad = 8, kProjectUpdate = 16,
              kAmsgrad = 32, kDecoupled = 64;
// cuda only: the Adam step counts hold the previous step's value; the kernels use count + 1 and
// the write launch stores it.
constexpr int kStepsPending = 128;
}  // namespace step

}  // namespace uno
