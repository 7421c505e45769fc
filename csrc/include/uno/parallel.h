// A tiny parallel-for for the memory-bound CPU kernels: on the OpenMP pool torch loaded when there
// is one (gomp_parallel below), else on uno's own std::thread helpers.
//
// The range [0, n) is cut into `nchunks` contiguous chunks by a fixed rule that depends only on n
// and nchunks, and chunk c always runs as one sequential task. A kernel that keeps one partial
// result per chunk and adds the partials in chunk order is therefore deterministic for a given
// thread count.
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#if __has_include(<dlfcn.h>) && __has_include(<pthread.h>)
#include <dlfcn.h>
#include <pthread.h>
#define UNO_HAVE_DLFCN 1
#endif

#include "uno/isa.h"

namespace uno {
// Per ISA level (uno/isa.h): each level's copy of these inline helpers has its own symbols.
inline namespace UNO_ISA_NS {

// Below this much work (elements times passes over them) a single thread is faster than starting
// more (a thread start costs tens of microseconds, far more on a loaded machine).
constexpr int64_t kMinWorkPerThread = 131072;
// Chunk boundaries fall on multiples of this many elements (whole cache lines for aligned pieces).
constexpr int64_t kChunkGrain = 64;
constexpr int kMaxThreads = 256;

// How many threads to use for `work` units of work when the caller allows num_threads.
inline int plan_chunks(int64_t work, int num_threads) {
  const int64_t by_work = std::max<int64_t>(1, work / kMinWorkPerThread);
  return static_cast<int>(std::min<int64_t>({by_work, std::max(num_threads, 1), kMaxThreads}));
}

// Chunks per thread when more than one thread runs. With one chunk per thread a helper thread that
// the OS starts late (its core still held by torch's spinning OpenMP workers right after a torch
// op, or by another process) leaves the calling thread to run the whole range alone: half speed at
// two threads. With several chunks each, the late helper still claims its share of what is left.
constexpr int kChunksPerThread = 4;

// A fixed split of a kernel's range: `chunks` chunks (each one partial result, added in chunk
// order) run by `threads` threads. It depends only on the work and num_threads, so results are
// deterministic for a given thread count.
struct Plan {
  int chunks, threads;
};
inline Plan plan_work(int64_t work, int num_threads) {
  const int threads = plan_chunks(work, num_threads);
  return Plan{threads == 1 ? 1 : threads * kChunksPerThread, threads};
}

// Partial sums of different chunks on different cache lines: a row of W doubles per chunk takes
// partial_stride(W) slots (a multiple of 8 doubles, 64 bytes), so two threads adding into their
// chunks' rows never write the same line.
inline int64_t partial_stride(int64_t W) { return (W + 7) / 8 * 8; }

// Elements per cache block: the kernels process all k rows of a block of columns before moving on,
// so a block of k rows (rows * bytes_per_elem bytes per column) should stay within the L1/L2
// caches.
inline int64_t block_size(int64_t rows, int64_t bytes_per_elem, int64_t cache_bytes = 64 * 1024) {
  const int64_t cols = cache_bytes / std::max<int64_t>(1, rows * bytes_per_elem);
  return std::min<int64_t>(2048, std::max<int64_t>(64, cols / 64 * 64));
}

// [begin, end) of chunk c out of nchunks over [0, n).
inline void chunk_range(int64_t n, int nchunks, int c, int64_t* begin, int64_t* end) {
  const int64_t units = (n + kChunkGrain - 1) / kChunkGrain;
  const int64_t q = units / nchunks, rem = units % nchunks;
  const int64_t u0 = q * c + std::min<int64_t>(c, rem);
  const int64_t u1 = u0 + q + (c < rem ? 1 : 0);
  *begin = std::min(n, u0 * kChunkGrain);
  *end = std::min(n, u1 * kChunkGrain);
}

// libgomp's team entry point, GOMP_parallel(fn, data, num_threads, flags): the thread pool of the
// OpenMP runtime torch already loaded (torch's Linux CPU builds use libgomp; Intel's libiomp5
// exports the same entry). uno does not link an OpenMP runtime; it borrows that pool when one is in
// the process. Why: right after a multi-threaded torch op (every backward pass), libgomp's workers
// spin on their cores for milliseconds waiting for the next parallel region, so a helper
// std::thread started then shares its core with a spinning worker and starts late: `combine` k = 16
// at 2 threads took 8.1 ms after a 2-thread `copy_` and 6.0 ms after nothing (the same 6.3 ms with
// OMP_WAIT_POLICY=PASSIVE). In the pool, those spinning workers are the ones that take the chunks.
// UNO_CPU_THREADS=std (read once) keeps uno's own std::thread helpers; so does a process without an
// OpenMP runtime loaded (uno imports torch first, so that is a build without OpenMP), and so does a
// child forked after the pool was used: libgomp's pool does not survive fork() (its workers are
// gone in the child, and a team waits for them forever: a DataLoader worker or a forked
// multiprocessing child hung), so a fork handler turns the pool off in the child.
using GompParallelFn = void (*)(void (*)(void*), void*, unsigned, unsigned);
inline std::atomic<bool>& forked_child() {
  static std::atomic<bool> flag{false};
  return flag;
}
inline GompParallelFn gomp_parallel() {
  static const GompParallelFn fn = []() -> GompParallelFn {
    const char* choice = std::getenv("UNO_CPU_THREADS");
    if (choice != nullptr && std::strcmp(choice, "std") == 0) return nullptr;
#ifdef UNO_HAVE_DLFCN
    void* sym = dlsym(RTLD_DEFAULT, "GOMP_parallel");
    if (sym == nullptr) {  // loaded, but not into the global namespace
      for (const char* lib : {"libgomp.so.1", "libiomp5.so"}) {
        if (void* h = dlopen(lib, RTLD_NOW | RTLD_NOLOAD)) {  // never loads one: only finds it
          sym = dlsym(h, "GOMP_parallel");
          if (sym != nullptr) break;
        }
      }
    }
    if (sym != nullptr && pthread_atfork(nullptr, nullptr, [] { forked_child().store(true); }) != 0)
      return nullptr;  // no fork handler: a forked child could hang, so never use the pool
    return reinterpret_cast<GompParallelFn>(sym);
#else
    return nullptr;
#endif
  }();
  return forked_child().load(std::memory_order_relaxed) ? nullptr : fn;
}

// Which pool parallel_for runs on: "openmp" (the process's OpenMP runtime) or "std" (own threads).
inline const char* thread_pool_name() { return gomp_parallel() != nullptr ? "openmp" : "std"; }

// Runs fn(c, begin, end) for every chunk c in [0, nchunks) and returns when all have run; the first
// exception by chunk order is rethrown. Chunks are claimed from a shared counter by the calling
// thread and by nthreads - 1 helper threads (default: one thread per chunk), so a helper that the
// OS starts late costs only its share: the calling thread takes the chunks left and waits only for
// chunks a helper actually claimed. The helpers are the OpenMP team's other threads (gomp_parallel:
// already started, and the very workers that spin right after a torch op) or, without a pool,
// detached std::threads, where one that starts after the last chunk was claimed exits without
// touching fn (a std::thread helper started right after a torch op shared its core with a spinning
// OpenMP worker: the cost gomp_parallel removes). Which thread runs a chunk never changes its
// result: per-chunk partial results stay deterministic.
template <typename F>
void parallel_for(int64_t n, int nchunks, int nthreads, F&& fn) {
  nchunks = std::max(nchunks, 1);
  nthreads = std::min(std::max(nthreads, 1), nchunks);
  if (nchunks == 1) {
    int64_t b, e;
    chunk_range(n, 1, 0, &b, &e);
    fn(0, b, e);
    return;
  }
  struct Shared {
    std::atomic<int> next{0};
    std::atomic<int> done{0};
    std::vector<std::exception_ptr> errors;
    std::mutex m;
    std::condition_variable cv;
  };
  auto st = std::make_shared<Shared>();
  st->errors.resize(nchunks);
  auto* f = &fn;  // valid while a chunk is unclaimed or running (the caller waits for those)
  auto work = [st, f, n, nchunks]() {
    for (;;) {
      const int c = st->next.fetch_add(1);
      if (c >= nchunks) return;
      try {
        int64_t b, e;
        chunk_range(n, nchunks, c, &b, &e);
        (*f)(c, b, e);
      } catch (...) {
        st->errors[c] = std::current_exception();
      }
      if (st->done.fetch_add(1) + 1 == nchunks) {
        std::lock_guard<std::mutex> lock(st->m);
        st->cv.notify_all();
      }
    }
  };
  if (const GompParallelFn team = gomp_parallel()) {
    // Every thread of the team runs `work` (the calling thread is one of them) and the call returns
    // when all have: no wait below. A team smaller than asked (a nested region, a thread limit)
    // only means fewer claimers.
    team([](void* w) { (*static_cast<decltype(work)*>(w))(); }, &work,
         static_cast<unsigned>(nthreads), 0);
    for (auto& e : st->errors) {
      if (e) std::rethrow_exception(e);
    }
    return;
  }
  for (int c = 1; c < nthreads; ++c) {
    try {
      std::thread(work).detach();
    } catch (...) {  // std::system_error: no more threads; the calling thread takes the chunks
      break;
    }
  }
  work();
  {
    std::unique_lock<std::mutex> lock(st->m);
    st->cv.wait(lock, [&] { return st->done.load() == nchunks; });
  }
  for (auto& e : st->errors) {
    if (e) std::rethrow_exception(e);
  }
}

template <typename F>
void parallel_for(int64_t n, int nchunks, F&& fn) {
  parallel_for(n, nchunks, nchunks, std::forward<F>(fn));
}

// parallel_for over the chunks of a Plan.
template <typename F>
void parallel_for(int64_t n, const Plan& plan, F&& fn) {
  parallel_for(n, plan.chunks, plan.threads, std::forward<F>(fn));
}

// The T pieces of a vector laid end to end: a global element index space [0, total) over them.
struct PieceIndex {
  std::vector<int64_t> start;  // [T + 1] prefix sums of the piece sizes
  explicit PieceIndex(const std::vector<int64_t>& ns) : start(ns.size() + 1, 0) {
    for (size_t t = 0; t < ns.size(); ++t) start[t + 1] = start[t] + ns[t];
  }
  int64_t total() const { return start.back(); }
  // Calls fn(t, lo, hi) for the part [lo, hi) (local to piece t) of every piece overlapping the
  // global range [begin, end), in piece order; empty pieces are skipped.
  template <typename F>
  void for_each(int64_t begin, int64_t end, F&& fn) const {
    if (begin >= end) return;
    size_t t = std::upper_bound(start.begin(), start.end(), begin) - start.begin() - 1;
    for (; t + 1 < start.size() && start[t] < end; ++t) {
      const int64_t lo = std::max(begin, start[t]) - start[t];
      const int64_t hi = std::min(end, start[t + 1]) - start[t];
      if (hi > lo) fn(t, lo, hi);
    }
  }
};

// Where row j of piece t of a row set starts. Two layouts (docs/kernels.md, "row tables"):
// - strided: ptrs has T entries, row j of piece t at element j * lds[t] after ptrs[t] (the
//   pieces of a uno.Basis, or of a user's (k, *shape) tensor);
// - table: ptrs has T * k entries, row j of piece t at ptrs[t * k + j] (k separate vectors, whose
//   pieces live apart in memory: never stacked or copied); lds is then not read.
// With k == 1 both layouts are the same list.
struct RowSet {
  const std::vector<int64_t>& ptrs;
  const std::vector<int64_t>& lds;
  int64_t k;
  bool table() const { return k > 1 && ptrs.size() != lds.size(); }
  template <typename T>
  T* row(size_t t, int64_t j) const {
    if (table()) return reinterpret_cast<T*>(ptrs[t * static_cast<size_t>(k) + j]);
    return reinterpret_cast<T*>(ptrs[t]) + j * lds[t];
  }
};

// Checks of the per-piece lists every CPU entry point receives (throws std::invalid_argument, which
// pybind11 turns into ValueError): equal lengths (or, with table_ok, T * k pointers: a row table),
// k >= 1, sizes >= 0, non-null pointers for non-empty pieces, and row strides ld >= n when there is
// more than one strided row.
inline void check_pieces(const char* what, const std::vector<int64_t>& ptrs,
                         const std::vector<int64_t>& lds, const std::vector<int64_t>& ns, int64_t k,
                         bool table_ok = false) {
  const std::string w(what);
  if (k < 1) throw std::invalid_argument(w + ": k must be >= 1, got " + std::to_string(k));
  const size_t T = ns.size();
  const bool table = table_ok && k > 1 && ptrs.size() == T * static_cast<size_t>(k) && T > 0;
  if (lds.size() != T || (ptrs.size() != T && !table)) {
    throw std::invalid_argument(
        w + ": per-piece lists differ in length (" + std::to_string(ptrs.size()) + " pointers, " +
        std::to_string(lds.size()) + " strides, " + std::to_string(T) + " sizes" +
        (table_ok ? "; a row table has sizes * k pointers)" : ")"));
  }
  const size_t per = table ? static_cast<size_t>(k) : 1;
  for (size_t t = 0; t < T; ++t) {
    const std::string at = w + ": piece " + std::to_string(t);
    if (ns[t] < 0) throw std::invalid_argument(at + " has negative size " + std::to_string(ns[t]));
    for (size_t j = 0; j < per; ++j) {
      if (ns[t] > 0 && ptrs[t * per + j] == 0) {
        throw std::invalid_argument(at + (table ? " row " + std::to_string(j) : std::string()) +
                                    " has a null data pointer");
      }
    }
    if (!table && k > 1 && ns[t] > 0 && lds[t] < ns[t]) {
      throw std::invalid_argument(at + " has row stride " + std::to_string(lds[t]) +
                                  " smaller than its size " + std::to_string(ns[t]));
    }
  }
}

// Checks the T pointers of a vector argument (x) against the T piece sizes ns.
inline void check_vector(const char* what, const char* name, const std::vector<int64_t>& ptrs,
                         const std::vector<int64_t>& ns) {
  const std::string w = std::string(what) + ": " + name;
  if (ptrs.size() != ns.size()) {
    throw std::invalid_argument(w + " has " + std::to_string(ptrs.size()) +
                                " pieces but rows have " + std::to_string(ns.size()));
  }
  for (size_t t = 0; t < ns.size(); ++t) {
    if (ns[t] > 0 && ptrs[t] == 0) {
      throw std::invalid_argument(w + " piece " + std::to_string(t) + " has a null data pointer");
    }
  }
}

inline void check_threads(const char* what, int num_threads) {
  if (num_threads < 1) {
    throw std::invalid_argument(std::string(what) + ": num_threads must be >= 1, got " +
                                std::to_string(num_threads));
  }
}

}  // namespace UNO_ISA_NS
}  // namespace uno
