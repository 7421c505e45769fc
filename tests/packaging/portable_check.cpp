// A kernel check without Python, for a CPU this machine can only emulate (test_aarch64.py builds it
// with aarch64-linux-gnu-g++ and runs it under qemu-aarch64): the portable level's project (k = 2),
// a projected Adam step and a symmetric ghost Gram, checked against plain float64 loops. Prints
// "ok" and exits 0, or names the first failed check and exits 1.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "uno/abi.h"
#include "uno/cpu_kernels.h"

namespace k = uno::cpu::UNO_ISA_NS;
using uno::cpu::I64s;

namespace {

int64_t addr(const void* p) { return reinterpret_cast<int64_t>(p); }

bool close(double a, double b, double tol) {
  return std::fabs(a - b) <= tol * (1.0 + std::fabs(b));
}

// Deterministic values in [-1, 1).
double val(int i) { return std::sin(0.37 * i + 0.11) * 0.999; }

bool check_project() {
  const int n = 1037, kk = 2;
  std::vector<double> q(kk * n), x(n), want(n);
  for (int i = 0; i < kk * n; ++i) q[i] = val(i);
  for (int i = 0; i < n; ++i) x[i] = val(5000 + i);
  const double y[2] = {0.25, -0.5};
  for (int i = 0; i < n; ++i) want[i] = x[i] - y[0] * q[i] - y[1] * q[n + i];
  double out[3];
  k::run_project(I64s{addr(x.data())}, I64s{addr(q.data())}, I64s{n}, I64s{n}, kk, y, 1, 1, out, 1);
  double dq0 = 0, dq1 = 0, xx = 0;
  for (int i = 0; i < n; ++i) {
    if (!close(x[i], want[i], 1e-14)) return false;
    dq0 += q[i] * x[i];
    dq1 += q[n + i] * x[i];
    xx += x[i] * x[i];
  }
  return close(out[0], dq0, 1e-12) && close(out[1], dq1, 1e-12) && close(out[2], xx, 1e-12);
}

bool check_adam() {
  const int n = 777;
  std::vector<float> p(n), g(n), m(n), v(n);
  std::vector<float> q(n);
  double qq = 0;
  for (int i = 0; i < n; ++i) qq += val(9000 + i) * val(9000 + i);
  for (int i = 0; i < n; ++i) {
    q[i] = static_cast<float>(val(9000 + i) / std::sqrt(qq));
    p[i] = static_cast<float>(val(i));
    g[i] = static_cast<float>(val(2000 + i));
    m[i] = static_cast<float>(0.1 * val(3000 + i));
    v[i] = static_cast<float>(0.1 * std::fabs(val(4000 + i)));
  }
  const std::vector<float> p0 = p, g0 = g, m0 = m, v0 = v;
  const float step = 3.0f;
  const double lr = 1e-2, b1 = 0.9, b2 = 0.999, eps = 1e-8;
  uno::cpu::OptimArgs a{};
  a.kind = uno::step::kAdam;
  a.flags = 0;
  a.k = 1;
  a.p = {addr(p.data())};
  a.g = {addr(g.data())};
  a.s1 = {addr(m.data())};
  a.s2 = {addr(v.data())};
  a.rows = {addr(q.data())};
  a.lds = {n};
  a.ns = {n};
  a.step = {step};
  a.hyper[0] = lr, a.hyper[1] = b1, a.hyper[2] = b2, a.hyper[3] = eps, a.hyper[4] = 0.0;
  a.has_scale = false;
  a.scale = 1.0f;
  double coef = 0;
  a.phase = uno::step::kGradCoef;
  a.coef = nullptr;
  k::run_optim_step(a, 0, 0, 0, &coef, 1);
  double c = 0;
  for (int i = 0; i < n; ++i) c += double(q[i]) * double(g0[i]);
  if (!close(coef, c, 1e-9)) return false;
  a.phase = uno::step::kWrite;
  a.coef = &coef;
  k::run_optim_step(a, 0, 0, 0, nullptr, 1);
  for (int i = 0; i < n; ++i) {
    const double gp = double(g0[i]) - coef * double(q[i]);
    const double m1 = m0[i] + (1 - b1) * (gp - m0[i]);
    const double v1 = v0[i] * b2 + (1 - b2) * gp * gp;
    const double denom = std::sqrt(v1) / std::sqrt(1 - std::pow(b2, step)) + eps;
    const double p1 = p0[i] - lr / (1 - std::pow(b1, step)) * m1 / denom;
    if (!close(m[i], m1, 1e-5) || !close(v[i], v1, 1e-5) || !close(p[i], p1, 1e-5)) return false;
  }
  return true;
}

bool check_ghost() {
  const int B = 5, T = 3, d = 7, pp = 4;
  std::vector<double> a(B * T * d), g(B * T * pp), out(B * B);
  for (size_t i = 0; i < a.size(); ++i) a[i] = val(100 + int(i));
  for (size_t i = 0; i < g.size(); ++i) g[i] = val(700 + int(i));
  const uno::cpu::View3 va{addr(a.data()), T * d, d, 1}, vg{addr(g.data()), T * pp, pp, 1};
  k::run_ghost_gram(va, vg, va, vg, B, T, B, T, d, pp, 1, false, true, out.data(), 1);
  for (int i = 0; i < B; ++i) {
    for (int j = 0; j < B; ++j) {
      double s = 0;  // <G_i^T A_i, G_j^T A_j>_F from the per-sample gradients
      for (int r = 0; r < pp; ++r) {
        for (int c = 0; c < d; ++c) {
          double wi = 0, wj = 0;
          for (int t = 0; t < T; ++t) {
            wi += g[(i * T + t) * pp + r] * a[(i * T + t) * d + c];
            wj += g[(j * T + t) * pp + r] * a[(j * T + t) * d + c];
          }
          s += wi * wj;
        }
      }
      if (!close(out[i * B + j], s, 1e-12)) return false;
    }
  }
  return true;
}

}  // namespace

int main() {
  if (!check_project()) return std::puts("project failed"), 1;
  if (!check_adam()) return std::puts("adam failed"), 1;
  if (!check_ghost()) return std::puts("ghost_gram failed"), 1;
  std::puts("ok");
  return 0;
}
