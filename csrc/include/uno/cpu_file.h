// The prelude every csrc/cpu/<op>.cpp kernel file shares: the pybind11 headers and the registry
// for the baseline compile (the one with UNO_CPU_BINDINGS, which defines the entry points), the
// standard headers the kernels use, and the kernel helpers (dispatch table, dtypes, parallel_for,
// SIMD tiles). One header, so that the files' own text starts at their kernels.
#pragma once

#ifdef UNO_CPU_BINDINGS
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "uno/registry.h"
#endif

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "uno/cpu_kernels.h"
#include "uno/dtype.h"
#include "uno/parallel.h"
#include "uno/simd.h"
#include "uno/sweep.h"
