// The CPU ISA level a translation unit is compiled for (runtime dispatch, docs/kernels.md "CPU ISA
// levels"). CMake compiles every csrc/cpu/*.cpp once per level with -DUNO_ISA=<level id> and that
// level's -march; UNO_ISA_NS names the level's namespace (uno::isa_x86_64_v3, ...). The CPU headers
// (dtype.h, parallel.h) put their inline helpers in it as an inline namespace, so the helpers of
// two levels never share a mangled name and the linker cannot merge an AVX-512 copy of, say, `dot`
// into the baseline code.
#pragma once

#ifndef UNO_ISA
#define UNO_ISA portable  // a file compiled outside the CMake build (one level, no dispatch)
#endif
#define UNO_ISA_CAT2_(a, b) a##b
#define UNO_ISA_CAT_(a, b) UNO_ISA_CAT2_(a, b)
#define UNO_ISA_NS UNO_ISA_CAT_(isa_, UNO_ISA)
