// Shared helpers of the CUDA kernels (csrc/cuda/*.cu): error checking, dtype conversion, the
// multi-tensor piece table passed by value as a kernel argument (NVIDIA apex `multi_tensor_apply`
// style), launch planning, the piece-table launcher and a deterministic block reduction. Dtype
// codes and the dtype policy come from uno/abi.h. Everything lives in namespace
// uno::cuda so that nothing collides with the CPU kernels in csrc/cpu/.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "uno/abi.h"

namespace uno {
namespace cuda {

// ---------------------------------------------------------------------------------------------------
// Error checking: a CUDA error becomes a C++ exception (pybind11 turns it into RuntimeError) that
// names the failing expression, the file and line, and CUDA's own description of the error.
// ---------------------------------------------------------------------------------------------------
[[noreturn]] inline void throw_cuda_error(cudaError_t err, const char* expr, const char* file,
                                          int line) {
  throw std::runtime_error(std::string("CUDA error at ") + file + ":" + std::to_string(line) +
                           ": " + expr + " failed with " + cudaGetErrorName(err) + " (" +
                           cudaGetErrorString(err) + ")");
}

}  // namespace cuda
}  // namespace uno

#define UNO_CUDA_CHECK(expr)                                                   \
  do {                                                                         \
    const cudaError_t uno_cuda_err_ = (expr);                                  \
    if (uno_cuda_err_ != cudaSuccess) {                                        \
      ::uno::cuda::throw_cuda_error(uno_cuda_err_, #expr, __FILE__, __LINE__); \
    }                                                                          \
  } while (0)

// After a <<<...>>> launch: a bad configuration (too many threads, too much shared memory, no
// kernel image for this GPU) is reported here, synchronously and without a host-device
// synchronisation.
#define UNO_CUDA_CHECK_LAUNCH() UNO_CUDA_CHECK(cudaGetLastError())

namespace uno {
namespace cuda {

// ---------------------------------------------------------------------------------------------------
// Constants shared by the kernels.
// ---------------------------------------------------------------------------------------------------
constexpr int kThreads = 256;              // threads per block of every kernel (8 full warps)
constexpr int kWarps = kThreads / 32;      //
constexpr int64_t kChunk = 4 * kThreads;   // columns per block-chunk of the streaming kernels
constexpr int kMaxPieces = 64;             // pieces per launch (piece table capacity)
constexpr size_t kSmemBudget = 48 * 1024;  // dynamic shared memory without an opt-in attribute

// ---------------------------------------------------------------------------------------------------
// Element conversion. Every value is widened to float64 on load (exact for all four dtypes) and a
// result is rounded once, to nearest-even, from float64 to the storage dtype on store.
// ---------------------------------------------------------------------------------------------------
__device__ __forceinline__ double to_f64(float v) { return static_cast<double>(v); }
__device__ __forceinline__ double to_f64(double v) { return v; }
__device__ __forceinline__ double to_f64(__half v) { return static_cast<double>(__half2float(v)); }
__device__ __forceinline__ double to_f64(__nv_bfloat16 v) {
  return static_cast<double>(__bfloat162float(v));
}

template <typename T>
__device__ __forceinline__ T from_f64(double v);
template <>
__device__ __forceinline__ float from_f64<float>(double v) {
  return __double2float_rn(v);
}
template <>
__device__ __forceinline__ double from_f64<double>(double v) {
  return v;
}
template <>
__device__ __forceinline__ __half from_f64<__half>(double v) {
  return __double2half(v);  // one rounding double -> half (no detour through float)
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_f64<__nv_bfloat16>(double v) {
  return __double2bfloat16(v);
}

template <typename T>
__device__ __forceinline__ double load_f64(const T* p) {
  return to_f64(*p);
}
template <typename T>
__device__ __forceinline__ void store_f64(T* p, double v) {
  *p = from_f64<T>(v);
}

// ---------------------------------------------------------------------------------------------------
// The piece table: up to N pieces of one launch, passed by value as a __grid_constant__ kernel
// argument (so descriptors never need a host-to-device copy and a launch stays capturable in a CUDA
// graph). Each piece is cut into chunks of `chunk` columns; chunk_begin is the prefix sum of the
// chunk counts, so the piece of global chunk c is the last t with chunk_begin[t] <= c (a binary
// search over at most N entries held in the constant bank). Blocks take chunks blockIdx.x,
// blockIdx.x + gridDim.x, ...: a fixed block -> chunk mapping, hence a fixed summation order for a
// fixed grid.
// ---------------------------------------------------------------------------------------------------
template <int N>
struct PieceTable {
  int count;                   // pieces in this launch, 1..N; every piece has n[t] > 0
  int64_t chunk;               // columns per chunk
  int64_t total_chunks;        // == chunk_begin[count]
  int64_t chunk_begin[N + 1];  // first global chunk of piece t
  void* a[N];        // inner/project: x piece (nullptr when x is None); combine: out piece
  const void* b[N];  // rows piece: element (j, p) at b[t] + j * ldb[t] + p (elements)
  int64_t lda[N];    // combine: row stride of out[t] (elements); unused otherwise
  int64_t ldb[N];    // row stride of rows[t] (elements)
  int64_t n[N];      // columns (elements per row) of piece t
};

using Table = PieceTable<kMaxPieces>;
// Kernel arguments are limited to 4 KiB on every supported driver: keep the table well below that.
static_assert(sizeof(Table) <= 3600, "piece table too large for a kernel argument");

// Any table with `count` and `chunk_begin` (also the optimizer step's). An empty piece t has
// chunk_begin[t] == chunk_begin[t + 1], so it is never the answer.
template <typename Tab>
__device__ __forceinline__ int find_piece(const Tab& tab, int64_t c) {
  int lo = 0, hi = tab.count - 1;  // invariant: chunk_begin[lo] <= c < chunk_begin[hi + 1]
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (tab.chunk_begin[mid] <= c) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
}

// The columns [p0, p1) of piece t that global chunk c covers.
struct ChunkSpan {
  int t;
  int64_t p0, p1;
};

template <typename Tab>
__device__ __forceinline__ ChunkSpan chunk_span(const Tab& tab, int64_t c) {
  const int t = find_piece(tab, c);
  const int64_t p0 = (c - tab.chunk_begin[t]) * tab.chunk;
  return ChunkSpan{t, p0, min(p0 + tab.chunk, tab.n[t])};
}

// Register loads of the streaming kernels: U columns q = p + u * kThreads (u < U) of a vector, or
// of the first `rows` of KT rows (row j at r + j * ld), widened to float64; zeros past p1 (and past
// `rows`, or everywhere when `on` is false) so that the fixed-size loops after them stay
// branch-free.
template <int U, typename T>
__device__ __forceinline__ void load_cols(const T* x, bool on, int64_t p, int64_t p1,
                                          double (&v)[U]) {
#pragma unroll
  for (int u = 0; u < U; ++u) {
    const int64_t q = p + int64_t{u} * kThreads;
    v[u] = (on && q < p1) ? load_f64(x + q) : 0.0;
  }
}

template <int U, int KT, typename T>
__device__ __forceinline__ void load_rows(const T* r, int64_t ld, int rows, int64_t p, int64_t p1,
                                          double (&v)[U][KT]) {
#pragma unroll
  for (int u = 0; u < U; ++u) {
    const int64_t q = p + int64_t{u} * kThreads;
#pragma unroll
    for (int j = 0; j < KT; ++j) v[u][j] = (q < p1 && j < rows) ? load_f64(r + j * ld + q) : 0.0;
  }
}

// One piece as the host sees it (pointers are device addresses from tensor.data_ptr()).
struct Piece {
  void* a;        // x / out (may be nullptr: x is None)
  const void* b;  // rows
  int64_t lda;    // out row stride (combine)
  int64_t ldb;    // rows row stride
  int64_t n;      // columns
};

struct Launch {
  Table tab;
  unsigned grid_x;   // blocks along x == partial rows written by this launch
  int64_t row_base;  // first partial row of this launch
};

// Split the non-empty pieces into launches of at most kMaxPieces pieces and share max_blocks
// partial rows among them in proportion to their chunk counts (at least one each, never more than
// its chunks). The plan depends only on the sizes and max_blocks, so the summation order is
// reproducible.
inline std::vector<Launch> plan_launches(const std::vector<Piece>& all, int64_t chunk,
                                         int64_t max_blocks) {
  if (chunk <= 0) throw std::invalid_argument("uno.cuda: chunk must be positive");
  std::vector<Piece> pieces;
  pieces.reserve(all.size());
  for (const Piece& p : all) {
    if (p.n > 0) pieces.push_back(p);
  }
  std::vector<Launch> launches;
  if (pieces.empty()) return launches;
  const int64_t groups =
      (static_cast<int64_t>(pieces.size()) + kMaxPieces - 1) / static_cast<int64_t>(kMaxPieces);
  if (max_blocks < groups) {
    throw std::invalid_argument("uno.cuda: max_blocks=" + std::to_string(max_blocks) +
                                " is smaller than the number of launches (" +
                                std::to_string(groups) + " for " + std::to_string(pieces.size()) +
                                " pieces, " + std::to_string(kMaxPieces) + " per launch)");
  }
  std::vector<int64_t> group_chunks(groups, 0);
  int64_t total = 0;
  for (size_t i = 0; i < pieces.size(); ++i) {
    const int64_t c = (pieces[i].n + chunk - 1) / chunk;
    group_chunks[i / kMaxPieces] += c;
    total += c;
  }
  const int64_t budget = max_blocks - groups;  // one block per launch is reserved up front
  launches.resize(groups);
  int64_t row = 0;
  for (int64_t g = 0; g < groups; ++g) {
    Launch& L = launches[g];
    Table& tab = L.tab;
    tab = Table{};
    tab.chunk = chunk;
    const size_t first = static_cast<size_t>(g) * kMaxPieces;
    const size_t last = std::min(pieces.size(), first + kMaxPieces);
    int64_t c = 0;
    for (size_t i = first; i < last; ++i) {
      const int t = static_cast<int>(i - first);
      const Piece& p = pieces[i];
      tab.chunk_begin[t] = c;
      tab.a[t] = p.a;
      tab.b[t] = p.b;
      tab.lda[t] = p.lda;
      tab.ldb[t] = p.ldb;
      tab.n[t] = p.n;
      c += (p.n + chunk - 1) / chunk;
    }
    tab.count = static_cast<int>(last - first);
    tab.chunk_begin[tab.count] = c;
    tab.total_chunks = c;
    const double share =
        static_cast<double>(budget) * static_cast<double>(c) / static_cast<double>(total);
    int64_t blocks = 1 + static_cast<int64_t>(share);  // floor: the shares never exceed the budget
    blocks = std::min<int64_t>(blocks, c);
    blocks = std::min<int64_t>(blocks, int64_t{0x7fffffff});
    L.grid_x = static_cast<unsigned>(blocks);
    L.row_base = row;
    row += blocks;
  }
  return launches;
}

inline int64_t rows_written(const std::vector<Launch>& launches) {
  int64_t r = 0;
  for (const Launch& L : launches) r += L.grid_x;
  return r;
}

// ---------------------------------------------------------------------------------------------------
// The piece-table launcher shared by inner, project and combine: plan_table turns the ops layer's
// per-piece lists into planned launches, for_each_launch issues and checks them.
// ---------------------------------------------------------------------------------------------------
inline void* as_ptr(int64_t p) { return reinterpret_cast<void*>(static_cast<uintptr_t>(p)); }

// a_ptrs: x (inner, project; empty when x is None) or out (combine) pieces; a_lds: out row strides
// (combine; empty otherwise); b_ptrs, b_lds: the (k, n_t) row blocks; ns: columns per piece.
inline std::vector<Launch> plan_table(const char* fn, const std::vector<int64_t>& a_ptrs,
                                      const std::vector<int64_t>& a_lds,
                                      const std::vector<int64_t>& b_ptrs,
                                      const std::vector<int64_t>& b_lds,
                                      const std::vector<int64_t>& ns, int64_t chunk,
                                      int64_t max_blocks) {
  const size_t T = b_ptrs.size();
  if ((!a_ptrs.empty() && a_ptrs.size() != T) || (!a_lds.empty() && a_lds.size() != T)) {
    throw std::invalid_argument(std::string(fn) + ": per-piece lists differ in length (" +
                                std::to_string(a_ptrs.size()) + " and " +
                                std::to_string(a_lds.size()) + " entries for " + std::to_string(T) +
                                " row blocks)");
  }
  std::vector<Piece> pieces(T);
  for (size_t t = 0; t < T; ++t) {
    pieces[t].a = a_ptrs.empty() ? nullptr : as_ptr(a_ptrs[t]);
    pieces[t].b = as_ptr(b_ptrs[t]);
    pieces[t].lda = a_lds.empty() ? 0 : a_lds[t];
    pieces[t].ldb = b_lds[t];
    pieces[t].n = ns[t];
  }
  return plan_launches(pieces, chunk, max_blocks);
}

// Calls launch(L) (one <<<L.grid_x, ...>>> kernel launch over L.tab) for every planned launch and
// checks each for a launch error.
template <typename F>
void for_each_launch(const std::vector<Launch>& launches, F&& launch) {
  for (const Launch& L : launches) {
    launch(L);
    UNO_CUDA_CHECK_LAUNCH();
  }
}

// ---------------------------------------------------------------------------------------------------
// Deterministic block reduction of V per-thread values: a fixed shuffle tree inside each warp, then
// the warp results are added in warp order by thread v. On return smem[v] (v < V) holds the block
// sums. smem must hold kWarps * V doubles; all kThreads threads must call it.
// ---------------------------------------------------------------------------------------------------
template <int V>
__device__ __forceinline__ void block_sum(double (&vals)[V], double* smem) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
#pragma unroll
  for (int v = 0; v < V; ++v) {
    double s = vals[v];
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) s += __shfl_down_sync(0xffffffffu, s, off);
    if (lane == 0) smem[warp * V + v] = s;
  }
  __syncthreads();
  for (int v = threadIdx.x; v < V; v += kThreads) {
    double s = smem[v];
    for (int w = 1; w < kWarps; ++w) s += smem[w * V + v];
    smem[v] = s;  // only thread v touches column v: no race
  }
  __syncthreads();
}

// ---------------------------------------------------------------------------------------------------
// Host-side dispatch helpers.
// ---------------------------------------------------------------------------------------------------
template <typename T>
struct Tag {
  using type = T;
};

// Calls f(Tag<T>{}) for the storage type of `code`.
template <typename F>
void dispatch_dtype(int code, const char* what, F&& f) {
  switch (code) {
    case kF32:
      f(Tag<float>{});
      return;
    case kF64:
      f(Tag<double>{});
      return;
    case kF16:
      f(Tag<__half>{});
      return;
    case kBF16:
      f(Tag<__nv_bfloat16>{});
      return;
    default:
      throw std::invalid_argument(std::string("uno.cuda: unknown dtype code ") +
                                  std::to_string(code) + " for " + what +
                                  " (expected 0=float32, 1=float64, 2=float16, 3=bfloat16)");
  }
}

// Calls f(Tag<TX>{}, Tag<TR>{}) for an allowed (x, rows) dtype pair: equal, or x half/bfloat16 with
// float32 rows.
template <typename F>
void dispatch_pair(int x_dtype, int row_dtype, F&& f) {
  if (!pair_ok(x_dtype, row_dtype)) {
    throw std::invalid_argument(
        std::string("uno.cuda: unsupported dtype pair x=") + dtype_name(x_dtype) +
        ", rows=" + dtype_name(row_dtype) +
        " (expected equal dtypes, or float16/bfloat16 x with float32 rows)");
  }
  dispatch_dtype(x_dtype, "x", [&](auto tx) {
    using TX = typename decltype(tx)::type;
    if (x_dtype == row_dtype) {
      f(tx, tx);
    } else if constexpr (std::is_same<TX, __half>::value ||
                         std::is_same<TX, __nv_bfloat16>::value) {
      f(tx, Tag<float>{});
    }
  });
}

// Calls f(std::integral_constant<int, KT>{}) with KT the smallest power of two >= min(k, MaxKT)
// (MaxKT itself a power of two <= 32): the register tile of rows a thread holds.
template <int MaxKT, typename F>
void dispatch_tile(int k, F&& f) {
  static_assert(MaxKT >= 1 && MaxKT <= 32 && (MaxKT & (MaxKT - 1)) == 0, "MaxKT: power of 2 <= 32");
  const int want = std::min(k, MaxKT);
  if (want <= 1) {
    f(std::integral_constant<int, 1>{});
  } else if (want <= 2) {
    f(std::integral_constant<int, (MaxKT < 2 ? MaxKT : 2)>{});
  } else if (want <= 4) {
    f(std::integral_constant<int, (MaxKT < 4 ? MaxKT : 4)>{});
  } else if (want <= 8) {
    f(std::integral_constant<int, (MaxKT < 8 ? MaxKT : 8)>{});
  } else if (want <= 16) {
    f(std::integral_constant<int, (MaxKT < 16 ? MaxKT : 16)>{});
  } else {
    f(std::integral_constant<int, MaxKT>{});
  }
}

inline cudaStream_t as_stream(uintptr_t s) { return reinterpret_cast<cudaStream_t>(s); }

inline void check_common(size_t n_pieces, size_t n_rows, size_t n_lds, size_t n_ns, int64_t k,
                         const char* fn) {
  if (n_rows != n_pieces || n_lds != n_pieces || n_ns != n_pieces) {
    throw std::invalid_argument(std::string(fn) + ": per-piece lists differ in length (rows " +
                                std::to_string(n_rows) + ", lds " + std::to_string(n_lds) +
                                ", ns " + std::to_string(n_ns) + ", expected " +
                                std::to_string(n_pieces) + ")");
  }
  if (k < 1 || k > (int64_t{1} << 20)) {
    throw std::invalid_argument(std::string(fn) + ": k must be in [1, 2^20], got " +
                                std::to_string(k));
  }
}

}  // namespace cuda
}  // namespace uno

namespace uno {
namespace cuda {

// Implemented in csrc/cuda/inner.cu, also used by project.cu (its k > 32 path measures the updated
// x with it): launches the inner-product kernel over `launches` (x present in every piece), writing
// columns [0, k] of partial rows [row_base, row_base + grid_x) of the W-column float64 `partials`.
void launch_dot(const std::vector<Launch>& launches, int k, int x_dtype, int row_dtype,
                double* partials, int64_t W, cudaStream_t stream);

}  // namespace cuda
}  // namespace uno
