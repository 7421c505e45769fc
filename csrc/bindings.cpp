// The _C extension module: build facts plus every kernel that registered itself with UNO_REGISTER.
// No torch header is included anywhere in csrc/: kernels receive raw pointers, sizes, strides,
// dtype codes and (CUDA) a stream handle from the Python ops layer.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "uno/abi.h"
#include "uno/registry.h"

#ifndef UNO_VERSION
#define UNO_VERSION "0+unknown"
#endif

namespace {

// _C.abi: the values of uno/abi.h, which python/uno/_abi.py must repeat (tests/test_abi.py).
void export_abi(pybind11::module_& m) {
  namespace py = pybind11;
  using namespace uno;
  py::module_ abi = m.def_submodule("abi", "the constants of csrc/include/uno/abi.h");
  py::dict codes;
  py::list pairs;
  for (int x = kF32; x <= kBF16; ++x) {
    codes[dtype_name(x)] = x;
    for (int r = kF32; r <= kBF16; ++r) {
      if (pair_ok(x, r)) pairs.append(py::make_tuple(x, r));
    }
  }
  abi.attr("DTYPE_CODES") = codes;
  abi.attr("PAIRS") = pairs;
  // clang-format off
  const std::pair<const char*, int> values[] = {
      {"KIND_SGD", step::kSgd}, {"KIND_ADAM", step::kAdam},
      {"PHASE_WRITE", step::kWrite}, {"PHASE_GRAD_COEF", step::kGradCoef},
      {"PHASE_UPDATE_COEF", step::kUpdateCoef},
      {"FLAG_MAXIMIZE", step::kMaximize}, {"FLAG_NESTEROV", step::kNesterov},
      {"FLAG_FIRST", step::kFirst}, {"FLAG_WRITE_GRAD", step::kWriteGrad},
      {"FLAG_PROJECT_UPDATE", step::kProjectUpdate}, {"FLAG_AMSGRAD", step::kAmsgrad},
      {"FLAG_DECOUPLED", step::kDecoupled}, {"FLAG_STEPS_PENDING", step::kStepsPending}};
  // clang-format on
  for (const auto& [name, value] : values) abi.attr(name) = value;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "uno compiled kernels (CPU always; CUDA when built with nvcc). Does not link libtorch.";
  m.attr("__version__") = UNO_VERSION;
#ifdef UNO_WITH_CUDA
  m.attr("with_cuda") = true;
  m.attr("cuda_archs") = std::string(UNO_CUDA_ARCHS);
#else
  m.attr("with_cuda") = false;
  m.attr("cuda_archs") = std::string();
#endif
  export_abi(m);
  m.def("hardware_concurrency",
        [] { return static_cast<int>(std::thread::hardware_concurrency()); });
  std::vector<std::string> names;
  for (auto& [name, fn] : uno::registry()) {
    fn(m);
    names.emplace_back(name);
  }
  m.attr("registered") = names;
}
