// The _C extension module: build facts plus every kernel that registered itself with UNO_REGISTER.
// No torch header is included anywhere in csrc/: kernels receive raw pointers, sizes, strides,
// dtype codes and (CUDA) a stream handle from the Python ops layer.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <thread>
#include <vector>

#include "uno/registry.h"

#ifndef UNO_VERSION
#define UNO_VERSION "0+unknown"
#endif

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
  m.def("hardware_concurrency",
        [] { return static_cast<int>(std::thread::hardware_concurrency()); });
  std::vector<std::string> names;
  for (auto& [name, fn] : uno::registry()) {
    fn(m);
    names.emplace_back(name);
  }
  m.attr("registered") = names;
}
