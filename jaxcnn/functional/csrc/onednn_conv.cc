// oneDNN's convolutions as one XLA FFI handler, for jaxcnn/functional/_onednn.py.
//
// A convolution relates three arrays, channels-last and row-major as jaxcnn stores them:
//   x (N, *spatial, C), w (*window, C / groups, O), y (N, *out_spatial, O).
// The handler computes one of them from the other two, passed in the order x, w, y:
//   computes "y": y from (x, w), oneDNN's forward convolution;
//   computes "x": x from (w, y), its backward-data primitive (the input gradient of cotangent y);
//   computes "w": w from (x, y), its backward-weights primitive (the kernel gradient).
// All three arrays are float32, or all bfloat16 (oneDNN sums the products in float32 and rounds the result).
// The kernel goes through the layout oneDNN picks for the shape (format_tag::any; with jaxcnn's it falls
// back to slower code), reordered on every call since its values change from one call to the next. The
// activations stay in jaxcnn's layout (NWC, NHWC or NDHWC: oneDNN reads them in place; reordering them
// into oneDNN's blocked layouts and back did not pay where it was tried). Primitives are built once per shape and
// arguments and cached; a call owns its scratch memory, so several threads may run one primitive at once.

#include <omp.h>

#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using dnnl::memory;
using Dims = memory::dims;

const dnnl::engine& cpu_engine() {
  static const dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

Dims row_major_strides(const Dims& shape) {
  Dims strides(shape.size(), 1);
  for (int i = static_cast<int>(shape.size()) - 2; i >= 0; --i) strides[i] = strides[i + 1] * shape[i + 1];
  return strides;
}

// x or y, (N, *spatial, C) in memory, as oneDNN's logical (N, C, *spatial).
memory::desc activation_desc(const Dims& shape, memory::data_type type) {
  const size_t rank = shape.size();
  const Dims row = row_major_strides(shape);
  Dims dims = {shape[0], shape[rank - 1]}, strides = {row[0], row[rank - 1]};
  for (size_t i = 1; i + 1 < rank; ++i) {
    dims.push_back(shape[i]);
    strides.push_back(row[i]);
  }
  return memory::desc(dims, type, strides);
}

// w, (*window, C / groups, O) in memory with group-major O, as oneDNN's logical (O, C, *window) or,
// grouped, (groups, O / groups, C / groups, *window).
memory::desc kernel_desc(const Dims& shape, int64_t groups, memory::data_type type) {
  const size_t rank = shape.size();
  const Dims row = row_major_strides(shape);
  const int64_t out = shape[rank - 1];
  Dims dims, strides;
  if (groups > 1) {
    dims = {groups, out / groups};
    strides = {out / groups, 1};
  } else {
    dims = {out};
    strides = {1};
  }
  dims.push_back(shape[rank - 2]);
  strides.push_back(row[rank - 2]);
  for (size_t i = 0; i + 2 < rank; ++i) {
    dims.push_back(shape[i]);
    strides.push_back(row[i]);
  }
  return memory::desc(dims, type, strides);
}

memory::desc any_layout(const memory::desc& desc) {
  return memory::desc(desc.get_dims(), desc.get_data_type(), memory::format_tag::any);
}

enum Slot { kX, kW, kY };

struct Conv {
  Dims shape[3], stride, pad_lo, pad_hi, dilation;  // jaxcnn's shapes of x, w, y; dilation as jaxcnn's
  int64_t groups;
  Slot computes;
  memory::data_type type;  // of all three arrays: f32, or bf16 (accumulated in f32 by oneDNN)
};

// One convolution's primitive and, per array (x, w, y), its layout in jaxcnn (`user`), the one the
// primitive works in (`internal`) and the reorder between them where they differ: into the internal
// layout for the operands, out of it for the result.
struct Plan {
  dnnl::primitive conv;
  const int* args;  // oneDNN's argument for each array
  memory::desc user[3], internal[3];
  std::optional<dnnl::reorder> reorder[3];
  size_t scratch_bytes = 0;
};

// oneDNN's argument for x, w and y, by the array computed.
constexpr int kArgs[3][3] = {
    {DNNL_ARG_DIFF_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DIFF_DST},  // x: backward data
    {DNNL_ARG_SRC, DNNL_ARG_DIFF_WEIGHTS, DNNL_ARG_DIFF_DST},  // w: backward weights
    {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST},            // y: forward
};

dnnl::primitive_attr user_scratchpad() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

// The primitive descriptor of the convolution that computes `c.computes`, from x, w, y descriptors that
// may leave the layout to oneDNN.
dnnl::primitive_desc convolution_desc(const Conv& c, const memory::desc& x, const memory::desc& w,
                                      const memory::desc& y, const dnnl::primitive_attr& attr) {
  const dnnl::engine& engine = cpu_engine();
  const auto algorithm = dnnl::algorithm::convolution_direct;
  Dims dilation;  // oneDNN counts the gaps between taps: 0 is no dilation
  for (int64_t d : c.dilation) dilation.push_back(d - 1);
  auto forward = [&](dnnl::prop_kind kind) {
    return dnnl::convolution_forward::primitive_desc(engine, kind, algorithm, x, w, y, c.stride, dilation,
                                                     c.pad_lo, c.pad_hi, attr);
  };
  if (c.computes == kY) return forward(dnnl::prop_kind::forward_inference);
  const auto hint = forward(dnnl::prop_kind::forward_training);
  if (c.computes == kX) {
    return dnnl::convolution_backward_data::primitive_desc(engine, algorithm, x, w, y, c.stride, dilation,
                                                           c.pad_lo, c.pad_hi, hint, attr);
  }
  return dnnl::convolution_backward_weights::primitive_desc(engine, algorithm, x, w, y, c.stride, dilation,
                                                            c.pad_lo, c.pad_hi, hint, attr);
}

std::shared_ptr<const Plan> make_plan(const Conv& c) {
  auto plan = std::make_shared<Plan>();
  plan->user[kX] = activation_desc(c.shape[kX], c.type);
  plan->user[kW] = kernel_desc(c.shape[kW], c.groups, c.type);
  plan->user[kY] = activation_desc(c.shape[kY], c.type);
  const auto layout = [&](Slot slot) {
    return slot == kW ? any_layout(plan->user[slot]) : plan->user[slot];
  };
  const dnnl::primitive_attr attr = user_scratchpad();
  const dnnl::primitive_desc pd = convolution_desc(c, layout(kX), layout(kW), layout(kY), attr);
  plan->conv = dnnl::primitive(pd);
  plan->args = kArgs[c.computes];
  size_t scratch = pd.scratchpad_desc().get_size();
  for (int slot : {kX, kW, kY}) {
    plan->internal[slot] = pd.query_md(dnnl::query::exec_arg_md, plan->args[slot]);
    if (plan->internal[slot] == plan->user[slot]) continue;
    const bool into = slot != c.computes;
    const dnnl::engine& engine = cpu_engine();
    dnnl::reorder::primitive_desc reorder(engine, into ? plan->user[slot] : plan->internal[slot], engine,
                                          into ? plan->internal[slot] : plan->user[slot], attr);
    plan->reorder[slot] = dnnl::reorder(reorder);
    scratch = std::max(scratch, reorder.scratchpad_desc().get_size());
  }
  plan->scratch_bytes = scratch;
  return plan;
}

// Plans by convolution and thread count (oneDNN splits the work for the threads it sees at creation).
class PlanCache {
 public:
  std::shared_ptr<const Plan> get(const Conv& c, int threads) {
    std::vector<int64_t> key = {c.computes, threads, c.groups, static_cast<int64_t>(c.type)};
    for (const Dims* part : {&c.shape[kX], &c.shape[kW], &c.shape[kY], &c.stride, &c.pad_lo, &c.pad_hi,
                             &c.dilation}) {
      key.push_back(static_cast<int64_t>(part->size()));
      key.insert(key.end(), part->begin(), part->end());
    }
    {
      std::shared_lock lock(mutex_);
      auto found = plans_.find(key);
      if (found != plans_.end()) return found->second;
    }
    std::shared_ptr<const Plan> plan = make_plan(c);  // outside the lock: creation takes a while
    std::unique_lock lock(mutex_);
    return plans_.emplace(std::move(key), std::move(plan)).first->second;
  }

 private:
  std::shared_mutex mutex_;
  std::map<std::vector<int64_t>, std::shared_ptr<const Plan>> plans_;
};

// Per-thread scratch memory that grows to the largest call: the reordered arrays and oneDNN's
// scratchpad. (Memory allocated per call would be mapped and faulted in again every time.)
class Scratch {
 public:
  char* reserve(size_t bytes) {
    if (bytes > size_) {
      data_.reset(static_cast<char*>(std::aligned_alloc(kAlign, round_up(bytes))));
      size_ = data_ ? round_up(bytes) : 0;
    }
    return data_.get();
  }
  static size_t round_up(size_t bytes) { return (bytes + kAlign - 1) / kAlign * kAlign; }

 private:
  static constexpr size_t kAlign = 64;
  std::unique_ptr<char, decltype(&std::free)> data_{nullptr, &std::free};
  size_t size_ = 0;
};

Dims as_dims(ffi::Span<const int64_t> s) { return Dims(s.begin(), s.end()); }

ffi::Error run(const Conv& c, void* const data[3], int threads) {
  static PlanCache cache;
  const std::shared_ptr<const Plan> plan = cache.get(c, threads);
  // Scratch memory: the arrays in their internal layouts where they need one, then oneDNN's scratchpad.
  size_t offsets[3], bytes = 0;
  for (int slot : {kX, kW, kY}) {
    offsets[slot] = bytes;
    if (plan->reorder[slot]) bytes += Scratch::round_up(plan->internal[slot].get_size());
  }
  thread_local Scratch scratch;
  char* base = scratch.reserve(bytes + plan->scratch_bytes);
  if (base == nullptr && bytes + plan->scratch_bytes > 0) {
    return ffi::Error::Internal("oneDNN convolution: out of memory for scratch space");
  }
  const dnnl::engine& engine = cpu_engine();
  dnnl::stream stream(engine);
  const memory scratchpad(memory::desc({static_cast<int64_t>(plan->scratch_bytes)}, memory::data_type::u8,
                                       memory::format_tag::a),
                          engine, base + bytes);
  const Slot computed = c.computes;
  std::unordered_map<int, memory> args = {{DNNL_ARG_SCRATCHPAD, scratchpad}};
  auto reorder = [&](int slot, const memory& from, const memory& to) {
    const std::unordered_map<int, memory> reorder_args = {
        {DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}, {DNNL_ARG_SCRATCHPAD, scratchpad}};
    plan->reorder[slot]->execute(stream, reorder_args);
  };
  memory user[3], internal[3];
  for (int slot : {kX, kW, kY}) {
    user[slot] = memory(plan->user[slot], engine, data[slot]);
    internal[slot] = user[slot];
    if (plan->reorder[slot]) {
      internal[slot] = memory(plan->internal[slot], engine, base + offsets[slot]);
      if (slot != computed) reorder(slot, user[slot], internal[slot]);
    }
    args[plan->args[slot]] = internal[slot];
  }
  plan->conv.execute(stream, args);
  if (plan->reorder[computed]) reorder(computed, internal[computed], user[computed]);
  stream.wait();
  return ffi::Error::Success();
}

using Ints = ffi::Span<const int64_t>;

ffi::Error convolution(ffi::ThreadPool pool, ffi::AnyBuffer a, ffi::AnyBuffer b,
                       ffi::Result<ffi::AnyBuffer> out, std::string_view computes, Ints stride, Ints pad_lo,
                       Ints pad_hi, Ints dilation, int64_t groups) {
  if (computes.size() != 1 || std::string_view("xwy").find(computes[0]) == std::string_view::npos) {
    return ffi::Error::InvalidArgument("oneDNN convolution: computes must be \"x\", \"w\" or \"y\"");
  }
  const ffi::DataType type = a.element_type();
  if (type != ffi::DataType::F32 && type != ffi::DataType::BF16) {
    return ffi::Error::InvalidArgument("oneDNN convolution: float32 or bfloat16 arrays only");
  }
  if (b.element_type() != type || out->element_type() != type) {
    return ffi::Error::InvalidArgument("oneDNN convolution: the three arrays must have one dtype");
  }
  const Slot computed = computes[0] == 'x' ? kX : computes[0] == 'w' ? kW : kY;
  Conv c{{}, as_dims(stride), as_dims(pad_lo), as_dims(pad_hi), as_dims(dilation), groups, computed,
         type == ffi::DataType::F32 ? memory::data_type::f32 : memory::data_type::bf16};
  // The operands are the two arrays other than the one computed, in the order x, w, y.
  void* data[3];
  const ffi::AnyBuffer* operands[2] = {&a, &b};
  for (int slot = kX, next = 0; slot <= kY; ++slot) {
    const ffi::AnyBuffer& buffer = slot == computed ? *out : *operands[next++];
    c.shape[slot] = as_dims(buffer.dimensions());
    data[slot] = buffer.untyped_data();
  }
  // oneDNN's OpenMP threads in place of XLA's: as many as XLA's intra-op pool has, at most one per core
  // this process may use (the pool has one thread per device when devices are simulated).
  const int64_t xla_threads = pool.num_threads();
  const int cores = omp_get_num_procs();
  const int threads = xla_threads > 0 && xla_threads < cores ? static_cast<int>(xla_threads) : cores;
  omp_set_num_threads(threads);
  try {
    return run(c, data, threads);
  } catch (const std::exception& e) {  // dnnl::error, std::bad_alloc: reported, not thrown through C
    return ffi::Error::Internal(std::string("oneDNN convolution: ") + e.what());
  }
}

}  // namespace

// The one exported symbol (the library is built with hidden visibility).
extern "C" __attribute__((visibility("default"))) XLA_FFI_Error* JaxcnnOnednnConvolution(XLA_FFI_CallFrame*);

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxcnnOnednnConvolution, convolution,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Ret<ffi::AnyBuffer>()
                                  .Attr<std::string_view>("computes")
                                  .Attr<ffi::Span<const int64_t>>("stride")
                                  .Attr<ffi::Span<const int64_t>>("pad_lo")
                                  .Attr<ffi::Span<const int64_t>>("pad_hi")
                                  .Attr<ffi::Span<const int64_t>>("dilation")
                                  .Attr<int64_t>("groups"));
