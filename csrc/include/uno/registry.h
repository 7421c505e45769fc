// Self-registration of kernel bindings: each csrc/{cpu,cuda}/<op>.{cpp,cu} file adds a function
// that defines its pybind11 functions, so adding a kernel never edits bindings.cpp.
#pragma once

#include <pybind11/pybind11.h>

#include <utility>
#include <vector>

namespace uno {

using RegisterFn = void (*)(pybind11::module_&);

// Function-local static: safe against static-initialisation order across translation units.
inline std::vector<std::pair<const char*, RegisterFn>>& registry() {
  static std::vector<std::pair<const char*, RegisterFn>> fns;
  return fns;
}

struct Registrar {
  Registrar(const char* name, RegisterFn fn) { registry().emplace_back(name, fn); }
};

}  // namespace uno

// One naming scheme for every kernel file: csrc/<backend>/<op>.{cpp,cu} defines
// uno::<backend>::register_<op>_<backend>(m), which defines _C.<op>_<backend>, and ends with
// UNO_REGISTER(<op>, <backend>) so that it is called when the _C module is created.
#define UNO_REGISTER(op, backend)                         \
  static ::uno::Registrar uno_registrar_##op##_##backend( \
      #op "_" #backend, ::uno::backend::register_##op##_##backend)
