// Linked only with UNO_STATIC_RUNTIME (CMakeLists.txt). libstdc++.a of a GCC built on glibc >= 2.36
// calls arc4random from std::random_device, which uno never uses, but the object comes along with
// the COW-string code every std::exception needs; taken from libc, that one reference would raise
// the library's glibc floor from 2.34 to 2.36 (excluding e.g. Ubuntu 22.04). This hidden definition
// satisfies it inside the library, from getrandom(2) (glibc 2.25), with arc4random's contract: a
// uniformly random 32-bit value, never failing.
#include <sys/random.h>

#include <cerrno>
#include <cstdint>

extern "C" __attribute__((visibility("hidden"))) uint32_t arc4random(void) {
  uint32_t v = 0;
  while (getrandom(&v, sizeof v, 0) != static_cast<ssize_t>(sizeof v)) {
    // EINTR before the pool is ready, or (on kernels before 3.17) no getrandom at all
    if (errno != EINTR) break;
  }
  return v;
}
