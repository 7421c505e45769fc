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

// UNO_REGISTER(inner_cpu, fn): call fn(m) when the _C module is created.
#define UNO_REGISTER(name, fn) static ::uno::Registrar uno_registrar_##name(#name, fn)
