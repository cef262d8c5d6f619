// TfaccelOpenvino: a TensorFlow op that runs one compiled OpenVINO model in-process.
//
// Why an op (and not a py_function): the traced model stays a TensorFlow graph, so it saves as a
// SavedModel, runs under tf.function without the GIL, and the parts that stay on TensorFlow run around
// it in the same executor. The model itself (IR xml + weights) arrives as two scalar string inputs fed
// from SavedModel variables: node attributes would copy it into every function that holds the node.
//
// Design points (see the project's DESIGN.md, section 8):
//  - compile lazily, once per process and model, behind a lock, through a cache keyed by the model's
//    content (xml, weights, precision): a fast hash finds candidates and a byte-for-byte comparison
//    decides. The `model_key` attribute is only a label for messages: a saved model can carry any
//    attribute, and one carrying another model's key must still run its own model;
//  - the cache holds weak references: kernels hold the compiled model, so it dies with the last kernel
//    that runs it (an unloaded model version frees its memory), while a re-trace of a model that is still
//    in use reuses the compilation. TfaccelOpenvinoCompile compiles ahead of the first call (at trace
//    time) and keeps that compilation alive for a while ("pending") so that the traced model's first
//    call finds it; TfaccelOpenvinoCacheStats reports (and can drop) them;
//  - run on a pool of infer requests so concurrent calls never share one. The `streams` attribute (1 by
//    default: the latency hint, one call at a time using every core) asks for that many parallel execution
//    streams with the throughput hint (trace's --num-streams, tfaccel.auto_multicore), so that many
//    concurrent calls run at once, each on its share of the cores; 0 is the throughput hint with the stream
//    count OpenVINO picks for the machine it runs on (--performance-hint=throughput). It is part of what
//    the cache matches, so copies of one model with other stream settings never share a compilation;
//  - bind TensorFlow's buffers as ov::Tensor without copying, and rebind every input and output on every
//    call (a request remembers the last buffers it was given). An output is bound only when the plugin
//    provably writes it: its Result, in the compiled (runtime) model, is fed by a computing node that
//    feeds no earlier Result. The CPU plugin neither writes a bound buffer whose Result reads a Parameter
//    (a pass-through) nor one that reads a Constant reliably, and with a Parameter it even copies that
//    unwritten buffer over the caller's input; every other output is copied from the plugin's own tensor;
//  - check dtypes and shapes of inputs and outputs against the model and the op's attributes, and fail
//    with InvalidArgument naming the input or output, never crash;
//  - keep compiled blobs on disk (OpenVINO's model cache, keyed by OpenVINO itself on the model, the
//    device, the compile configuration and its own version) in the folder $_TFACCEL_MODEL_CACHE_RESOLVED
//    names, so a second process loading the same model imports instead of compiling. `import tfaccel`
//    sets that variable to the folder it created or checked for $TFACCEL_MODEL_CACHE
//    (tfaccel.native.model_cache); the folder is checked again here before each use (ours, not a link, not
//    writable by group or others), else no cache is used.

#include <algorithm>
#include <chrono>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <sys/stat.h>
#include <unistd.h>

#include "openvino/openvino.hpp"
#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/framework/tensor.h"

namespace tfaccel {

using ::tensorflow::DataType;
using ::tensorflow::DataTypeVector;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::PartialTensorShape;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
using ::tensorflow::tstring;
namespace errors = ::tensorflow::errors;

REGISTER_OP("TfaccelOpenvino")
    .Input("model_xml: string")
    .Input("model_weights: string")
    .Input("args: Tin")
    .Output("results: Tout")
    .Attr("Tin: list(type) >= 0")
    .Attr("Tout: list(type) >= 1")
    .Attr("model_key: string")
    .Attr("precision: {'f32', 'bf16'} = 'f32'")
    .Attr("input_names: list(string) >= 0")
    .Attr("output_shapes: list(shape) >= 1")
    .Attr("streams: int >= 0 = 1")
    .SetShapeFn([](::tensorflow::shape_inference::InferenceContext* c) {
      std::vector<PartialTensorShape> shapes;
      TF_RETURN_IF_ERROR(c->GetAttr("output_shapes", &shapes));
      if (static_cast<int>(shapes.size()) != c->num_outputs()) {
        return errors::InvalidArgument("TfaccelOpenvino: output_shapes has ", shapes.size(),
                                       " entries for ", c->num_outputs(), " outputs");
      }
      for (int i = 0; i < c->num_outputs(); ++i) {
        ::tensorflow::shape_inference::ShapeHandle handle;
        TF_RETURN_IF_ERROR(c->MakeShapeFromPartialTensorShape(shapes[i], &handle));
        c->set_output(i, handle);
      }
      return absl::OkStatus();
    })
    .Doc(R"doc(
Runs a subgraph that tfaccel compiled with OpenVINO. Load the library with `import tfaccel`.
`streams` > 1 runs that many calls in parallel (OpenVINO execution streams, throughput hint); 0 lets
OpenVINO's throughput hint choose how many.
)doc");

REGISTER_OP("TfaccelOpenvinoCompile")
    .Input("model_xml: string")
    .Input("model_weights: string")
    .Attr("model_key: string")
    .Attr("precision: {'f32', 'bf16'} = 'f32'")
    .Attr("streams: int >= 0 = 1")
    .SetIsStateful()
    .SetShapeFn(::tensorflow::shape_inference::NoOutputs)
    .Doc(R"doc(
Compiles a model into the process-wide cache TfaccelOpenvino runs from (tfaccel does this at trace time).
)doc");

REGISTER_OP("TfaccelOpenvinoCacheStats")
    .Output("stats: int64")
    .Attr("release_pending: bool = false")
    .SetIsStateful()
    .SetShapeFn([](::tensorflow::shape_inference::InferenceContext* c) {
      c->set_output(0, c->Vector(4));
      return absl::OkStatus();
    })
    .Doc(R"doc(
The compile cache: [live compiled models, pending trace-time compilations, compilations so far, of which
imported from OpenVINO's model cache on disk].
`release_pending` first drops the pending references (a compiled model then lives only while a kernel runs it).
)doc");

namespace {

// How long, and how many, trace-time compilations stay alive without a kernel holding them.
constexpr auto kPendingLifetime = std::chrono::seconds(120);
constexpr size_t kPendingMax = 64;
// At most this many execution streams (the `streams` attribute): more than any CPU has cores.
constexpr int64_t kMaxStreams = 256;

bool ToOvType(DataType dtype, ov::element::Type* out) {
  switch (dtype) {
    case ::tensorflow::DT_FLOAT: *out = ov::element::f32; return true;
    case ::tensorflow::DT_HALF: *out = ov::element::f16; return true;
    case ::tensorflow::DT_BFLOAT16: *out = ov::element::bf16; return true;
    case ::tensorflow::DT_DOUBLE: *out = ov::element::f64; return true;
    case ::tensorflow::DT_INT8: *out = ov::element::i8; return true;
    case ::tensorflow::DT_INT16: *out = ov::element::i16; return true;
    case ::tensorflow::DT_INT32: *out = ov::element::i32; return true;
    case ::tensorflow::DT_INT64: *out = ov::element::i64; return true;
    case ::tensorflow::DT_UINT8: *out = ov::element::u8; return true;
    case ::tensorflow::DT_UINT16: *out = ov::element::u16; return true;
    case ::tensorflow::DT_UINT32: *out = ov::element::u32; return true;
    case ::tensorflow::DT_UINT64: *out = ov::element::u64; return true;
    case ::tensorflow::DT_BOOL: *out = ov::element::boolean; return true;
    default: return false;
  }
}

std::string ShapeText(const TensorShape& shape) { return shape.DebugString(); }

std::string_view View(const tstring& s) { return std::string_view(s.data(), s.size()); }

// Whether a TensorFlow partial shape admits OpenVINO's (partial) shape: ranks and known dims agree.
bool Compatible(const PartialTensorShape& declared, const ov::PartialShape& actual) {
  if (declared.unknown_rank() || actual.rank().is_dynamic()) return true;
  if (declared.dims() != actual.rank().get_length()) return false;
  for (int d = 0; d < declared.dims(); ++d) {
    const int64_t want = declared.dim_size(d);
    if (want >= 0 && actual[d].is_static() && actual[d].get_length() != want) return false;
  }
  return true;
}

// One compiled model and its request pool. Shared by every kernel instance that runs the same model.
struct Compiled {
  std::string precision;
  int64_t streams = 1;
  std::string xml;
  ov::Tensor weights;  // OpenVINO may point into the weights after compile: keep them alive
  size_t weights_size = 0;
  ov::CompiledModel model;
  std::vector<ov::element::Type> input_types;
  std::vector<ov::PartialShape> input_shapes;
  std::vector<ov::element::Type> output_types;
  std::vector<ov::PartialShape> output_shapes;
  std::vector<std::string> output_labels;  // " ('tensor name')" or empty, for messages
  std::vector<bool> zero_copy;             // output k may be bound to TensorFlow's buffer
  std::mutex pool_mu;
  std::vector<ov::InferRequest> pool;

  // The exact content this model was compiled from (what the cache key claims is checked here).
  bool Matches(const std::string& want_precision, int64_t want_streams, std::string_view want_xml,
               std::string_view want_weights) const {
    if (precision != want_precision || streams != want_streams || xml != want_xml ||
        weights_size != want_weights.size()) {
      return false;
    }
    return weights_size == 0 || std::memcmp(weights.data(), want_weights.data(), weights_size) == 0;
  }
};

// Outputs the plugin provably writes into a caller-bound buffer: a Result of the runtime model fed by a
// computing node (not the Parameter or a Constant, which the CPU plugin serves from its own memory),
// and the first Result fed by that node's port. Results are matched to outputs by their names; anything
// unexpected means no zero-copy (a copy is always correct).
std::vector<bool> ZeroCopyOutputs(const ov::CompiledModel& model) {
  const auto outputs = model.outputs();
  std::vector<bool> zero_copy(outputs.size(), false);
  std::shared_ptr<const ov::Model> runtime = model.get_runtime_model();
  std::map<std::string, std::shared_ptr<ov::op::v0::Result>> results;
  std::set<std::string> ambiguous;
  for (const auto& result : runtime->get_results()) {
    if (!results.emplace(result->get_friendly_name(), result).second) ambiguous.insert(result->get_friendly_name());
  }
  std::set<std::pair<const ov::Node*, size_t>> fed;
  for (size_t k = 0; k < outputs.size(); ++k) {
    const std::string name = outputs[k].get_node()->get_friendly_name();
    auto found = results.find(name);
    if (found == results.end() || ambiguous.count(name)) continue;
    const ov::Output<ov::Node> source = found->second->input_value(0);
    const ov::Node* producer = source.get_node();
    const bool first = fed.emplace(producer, source.get_index()).second;
    const auto& info = producer->get_rt_info();
    auto layer = info.find("layerType");  // ov::exec_model_info::LAYER_TYPE (not in the wheel's headers)
    if (layer == info.end()) continue;
    const std::string layer_type = layer->second.as<std::string>();
    const bool computes = std::string(producer->get_type_name()) == "ExecutionNode" &&
                          layer_type != "Input" && layer_type != "Const" && layer_type != "Output" &&
                          layer_type != "Parameter";
    zero_copy[k] = first && computes;
  }
  return zero_copy;
}

ov::Core& Core() {
  static ov::Core* core = new ov::Core();  // never destroyed: kernels may outlive static destructors
  return *core;
}

// The process-wide compile cache: content fingerprint -> compiled models (weak), plus the pending
// trace-time compilations (strong, expiring).
struct Cache {
  std::mutex mu;
  std::unordered_map<size_t, std::vector<std::weak_ptr<Compiled>>> entries;
  std::deque<std::pair<std::chrono::steady_clock::time_point, std::shared_ptr<Compiled>>> pending;
  int64_t compiles = 0;
  int64_t from_disk = 0;  // compilations OpenVINO imported from its model cache instead of compiling

  // Drops expired pending references (moved to `dropped`, destroyed by the caller outside the lock).
  void ExpirePending(bool all, std::vector<std::shared_ptr<Compiled>>* dropped) {
    const auto now = std::chrono::steady_clock::now();
    while (!pending.empty() &&
           (all || pending.size() > kPendingMax || now - pending.front().first > kPendingLifetime)) {
      dropped->push_back(std::move(pending.front().second));
      pending.pop_front();
    }
  }

  void Hold(const std::shared_ptr<Compiled>& compiled) {
    for (auto it = pending.begin(); it != pending.end(); ++it) {
      if (it->second == compiled) {
        pending.erase(it);
        break;
      }
    }
    pending.emplace_back(std::chrono::steady_clock::now(), compiled);
  }

  int64_t Live() {
    int64_t live = 0;
    for (auto it = entries.begin(); it != entries.end();) {
      auto& bucket = it->second;
      bucket.erase(std::remove_if(bucket.begin(), bucket.end(), [](const auto& w) { return w.expired(); }),
                   bucket.end());
      live += static_cast<int64_t>(bucket.size());
      it = bucket.empty() ? entries.erase(it) : std::next(it);
    }
    return live;
  }
};

Cache& TheCache() {
  static Cache* cache = new Cache();  // never destroyed, like Core()
  return *cache;
}

size_t Fingerprint(const std::string& precision, int64_t streams, std::string_view xml,
                   std::string_view weights) {
  const std::hash<std::string_view> hash;
  size_t seed = hash(precision);
  for (size_t part : {static_cast<size_t>(streams), hash(xml), hash(weights), weights.size()}) {
    seed ^= part + 0x9e3779b97f4a7c15ULL + (seed << 6) + (seed >> 2);
  }
  return seed;
}

// The CPU plugin's configuration: one stream with the latency hint (every core on one call) by default;
// N streams with the throughput hint, each running one call on its share of the cores, for N callers; with
// 0, the throughput hint and as many streams as the plugin finds right for this machine.
ov::AnyMap CompileConfig(const std::string& precision, int64_t streams) {
  ov::AnyMap config{
      ov::hint::inference_precision(precision == "bf16" ? ov::element::bf16 : ov::element::f32)};
  if (streams == 1) {
    config.insert(ov::hint::performance_mode(ov::hint::PerformanceMode::LATENCY));
  } else if (streams == 0) {
    config.insert(ov::hint::performance_mode(ov::hint::PerformanceMode::THROUGHPUT));
  } else {
    config.insert(ov::hint::performance_mode(ov::hint::PerformanceMode::THROUGHPUT));
    config.insert(ov::num_streams(ov::streams::Num(static_cast<int32_t>(streams))));
  }
  return config;
}

// The model cache folder tfaccel.native.model_cache checked, or "" (no cache) when it is unset, "off", or
// not a folder that only this user can change: a blob planted there would be run as this user's model.
std::string ModelCacheDir() {
  const char* value = std::getenv("_TFACCEL_MODEL_CACHE_RESOLVED");
  if (value == nullptr || *value == '\0' || std::string_view(value) == "off") return "";
  struct stat info;
  if (lstat(value, &info) != 0 || !S_ISDIR(info.st_mode) || info.st_uid != geteuid() ||
      (info.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    return "";
  }
  return value;
}

absl::Status Compile(const std::string& label, const std::string& precision, int64_t streams,
                     std::string_view xml, std::string_view weights, std::shared_ptr<Compiled>* out,
                     bool* from_disk) {
  auto compiled = std::make_shared<Compiled>();
  compiled->precision = precision;
  compiled->streams = streams;
  compiled->xml = std::string(xml);
  compiled->weights_size = weights.size();
  try {
    if (!weights.empty()) {
      compiled->weights = ov::Tensor(ov::element::u8, ov::Shape{weights.size()});
      std::memcpy(compiled->weights.data(), weights.data(), weights.size());
    }
    std::shared_ptr<ov::Model> model = Core().read_model(compiled->xml, compiled->weights);
    ov::AnyMap config = CompileConfig(precision, streams);
    const std::string cache_dir = ModelCacheDir();
    if (!cache_dir.empty()) config.insert(ov::cache_dir(cache_dir));
    compiled->model = Core().compile_model(model, "CPU", config);
    if (!cache_dir.empty()) *from_disk = compiled->model.get_property(ov::loaded_from_cache);
    for (const auto& input : compiled->model.inputs()) {
      compiled->input_types.push_back(input.get_element_type());
      compiled->input_shapes.push_back(input.get_partial_shape());
    }
    for (const auto& output : compiled->model.outputs()) {
      compiled->output_types.push_back(output.get_element_type());
      compiled->output_shapes.push_back(output.get_partial_shape());
      const auto& names = output.get_names();
      compiled->output_labels.push_back(names.empty() ? "" : " ('" + *names.begin() + "')");
    }
    compiled->zero_copy = ZeroCopyOutputs(compiled->model);
  } catch (const std::exception& err) {
    return errors::Internal("OpenVINO could not compile the model ", label, ": ", err.what());
  }
  *out = std::move(compiled);
  return absl::OkStatus();
}

// Returns the compiled model for this content, compiling it on first use; `hold` keeps it pending.
absl::Status GetCompiled(const std::string& label, const std::string& precision, int64_t streams,
                         const tstring& xml, const tstring& weights, bool hold,
                         std::shared_ptr<Compiled>* out) {
  Cache& cache = TheCache();
  std::vector<std::shared_ptr<Compiled>> dropped;  // destroyed after the lock is released
  std::lock_guard<std::mutex> lock(cache.mu);
  cache.ExpirePending(false, &dropped);
  auto& bucket = cache.entries[Fingerprint(precision, streams, View(xml), View(weights))];
  std::shared_ptr<Compiled> found;
  for (auto it = bucket.begin(); it != bucket.end();) {
    std::shared_ptr<Compiled> live = it->lock();
    if (!live) {
      it = bucket.erase(it);
      continue;
    }
    if (!found && live->Matches(precision, streams, View(xml), View(weights))) found = live;
    ++it;
  }
  if (!found) {
    bool from_disk = false;
    absl::Status status = Compile(label, precision, streams, View(xml), View(weights), &found, &from_disk);
    if (!status.ok()) return status;
    bucket.push_back(found);
    ++cache.compiles;
    if (from_disk) ++cache.from_disk;
  }
  if (hold) cache.Hold(found);
  *out = std::move(found);
  return absl::OkStatus();
}

// An infer request borrowed from the pool for one call, returned when the call ends.
class Lease {
 public:
  explicit Lease(Compiled* compiled) : compiled_(compiled) {
    std::lock_guard<std::mutex> lock(compiled_->pool_mu);
    if (!compiled_->pool.empty()) {
      request_ = std::move(compiled_->pool.back());
      compiled_->pool.pop_back();
      return;
    }
    request_ = compiled_->model.create_infer_request();
  }
  ~Lease() {
    std::lock_guard<std::mutex> lock(compiled_->pool_mu);
    compiled_->pool.push_back(std::move(request_));
  }
  ov::InferRequest& request() { return request_; }

 private:
  Compiled* compiled_;
  ov::InferRequest request_;
};

}  // namespace

class TfaccelOpenvinoOp : public OpKernel {
 public:
  explicit TfaccelOpenvinoOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("model_key", &key_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("precision", &precision_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("streams", &streams_));
    OP_REQUIRES(ctx, streams_ <= kMaxStreams,
                errors::InvalidArgument(name(), ": streams is ", streams_, ", more than the ", kMaxStreams,
                                        " execution streams a model can run with"));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("input_names", &input_names_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("Tout", &tout_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("output_shapes", &output_shapes_));
    OP_REQUIRES(ctx, output_shapes_.size() == tout_.size(),
                errors::InvalidArgument(name(), ": output_shapes has ", output_shapes_.size(),
                                        " entries for ", tout_.size(), " outputs"));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& xml_tensor = ctx->input(0);
    const Tensor& weights_tensor = ctx->input(1);
    OP_REQUIRES(ctx, xml_tensor.dims() == 0 && weights_tensor.dims() == 0,
                errors::InvalidArgument(name(), ": model_xml and model_weights must be scalars"));
    const tstring& xml = xml_tensor.scalar<tstring>()();
    const tstring& weights = weights_tensor.scalar<tstring>()();
    std::shared_ptr<Compiled> compiled;
    {
      std::lock_guard<std::mutex> lock(mu_);
      // The model is what the inputs hold, not what the attributes say: verified on first use and again
      // whenever the inputs are other buffers (the last ones are held, so an address is never reused).
      if (!compiled_ || xml.data() != seen_xml_ || xml.size() != held_xml_size_ ||
          weights.data() != seen_weights_ || weights.size() != held_weights_size_) {
        std::shared_ptr<Compiled> found = compiled_;
        if (!found || !found->Matches(precision_, streams_, View(xml), View(weights))) {
          OP_REQUIRES_OK(ctx, GetCompiled(key_, precision_, streams_, xml, weights, false, &found));
          OP_REQUIRES_OK(ctx, CheckOutputs(*found));
        }
        compiled_ = std::move(found);
        held_xml_ = xml_tensor;
        held_weights_ = weights_tensor;
        seen_xml_ = xml.data();
        seen_weights_ = weights.data();
        held_xml_size_ = xml.size();
        held_weights_size_ = weights.size();
      }
      compiled = compiled_;
    }
    const int num_inputs = ctx->num_inputs() - 2;
    OP_REQUIRES(ctx, num_inputs == static_cast<int>(compiled->input_types.size()),
                errors::InvalidArgument(name(), ": the compiled model takes ",
                                        compiled->input_types.size(), " inputs, the op was given ",
                                        num_inputs));
    Lease lease(compiled.get());
    ov::InferRequest& request = lease.request();
    try {
      for (int i = 0; i < num_inputs; ++i) {
        const Tensor& input = ctx->input(i + 2);
        const std::string what = InputName(i);
        ov::element::Type type;
        OP_REQUIRES(ctx, ToOvType(input.dtype(), &type) && type == compiled->input_types[i],
                    errors::InvalidArgument(
                        name(), ": input ", what, " has dtype ", DataTypeString(input.dtype()),
                        " but the compiled subgraph expects ", compiled->input_types[i].get_type_name()));
        const ov::PartialShape& expected = compiled->input_shapes[i];
        const auto sizes = input.shape().dim_sizes();
        ov::Shape shape(sizes.begin(), sizes.end());
        OP_REQUIRES(ctx, expected.compatible(ov::PartialShape(shape)),
                    errors::InvalidArgument(name(), ": input ", what, " has shape ",
                                            ShapeText(input.shape()),
                                            " but the compiled subgraph expects ", expected.to_string(),
                                            "; trace with --dynamic-batch-size to accept other batch "
                                            "sizes"));
        request.set_input_tensor(i, ov::Tensor(type, shape, const_cast<char*>(input.tensor_data().data())));
      }
      std::vector<Tensor*> allocated(ctx->num_outputs(), nullptr);
      for (int k = 0; k < ctx->num_outputs(); ++k) {
        const ov::PartialShape& shape = compiled->output_shapes[k];
        if (!shape.is_static()) continue;  // known only after inference: allocated below
        const ov::Shape dims = shape.to_shape();
        TensorShape tf_shape;
        for (size_t d : dims) tf_shape.AddDim(static_cast<int64_t>(d));
        OP_REQUIRES_OK(ctx, ctx->allocate_output(k, tf_shape, &allocated[k]));
        if (compiled->zero_copy[k] && allocated[k]->NumElements() > 0) {
          request.set_output_tensor(k, ov::Tensor(compiled->output_types[k], dims,
                                                  const_cast<char*>(allocated[k]->tensor_data().data())));
        }
      }
      request.infer();
      for (int k = 0; k < ctx->num_outputs(); ++k) {
        ov::Tensor result = request.get_output_tensor(k);
        Tensor* out = allocated[k];
        if (out == nullptr) {
          TensorShape tf_shape;
          for (size_t d : result.get_shape()) tf_shape.AddDim(static_cast<int64_t>(d));
          OP_REQUIRES(ctx, output_shapes_[k].IsCompatibleWith(tf_shape),
                      errors::InvalidArgument(name(), ": output ", k, compiled->output_labels[k],
                                              " has shape ", ShapeText(tf_shape), " but the op declares ",
                                              output_shapes_[k].DebugString(), " (output_shapes)"));
          OP_REQUIRES_OK(ctx, ctx->allocate_output(k, tf_shape, &out));
        }
        const size_t bytes = out->tensor_data().size();
        OP_REQUIRES(ctx, result.get_byte_size() == bytes,
                    errors::Internal(name(), ": output ", k, " has ", result.get_byte_size(),
                                     " bytes, expected ", bytes));
        // not bound (see ZeroCopyOutputs), dynamic, or the plugin replaced our buffer: copy
        if (bytes > 0 && result.data() != out->tensor_data().data()) {
          std::memcpy(const_cast<char*>(out->tensor_data().data()), result.data(), bytes);
        }
      }
    } catch (const std::exception& err) {
      ctx->CtxFailure(errors::Internal(name(), ": OpenVINO inference failed: ", err.what()));
      return;
    }
  }

 private:
  std::string InputName(int i) const {
    if (i < static_cast<int>(input_names_.size())) return "'" + input_names_[i] + "'";
    return std::to_string(i);
  }

  // The op's attributes (Tout, output_shapes) must describe the model it runs: a mismatch means the
  // graph and its OpenVINO model do not belong together (edited or tampered), never a silent reinterpretation.
  absl::Status CheckOutputs(const Compiled& compiled) const {
    if (tout_.size() != compiled.output_types.size()) {
      return errors::InvalidArgument(name(), ": the compiled model has ", compiled.output_types.size(),
                                     " outputs, the op declares ", tout_.size());
    }
    for (size_t k = 0; k < tout_.size(); ++k) {
      ov::element::Type declared;
      if (!ToOvType(tout_[k], &declared) || declared != compiled.output_types[k]) {
        return errors::InvalidArgument(name(), ": output ", k, compiled.output_labels[k], " is declared ",
                                       DataTypeString(tout_[k]), " (Tout) but the compiled model produces ",
                                       compiled.output_types[k].get_type_name(),
                                       "; the graph does not match its OpenVINO model: trace it again");
      }
      if (!Compatible(output_shapes_[k], compiled.output_shapes[k])) {
        return errors::InvalidArgument(name(), ": output ", k, compiled.output_labels[k],
                                       " is declared with shape ", output_shapes_[k].DebugString(),
                                       " (output_shapes) but the compiled model produces ",
                                       compiled.output_shapes[k].to_string(),
                                       "; the graph does not match its OpenVINO model: trace it again");
      }
    }
    return absl::OkStatus();
  }

  std::string key_;
  std::string precision_;
  int64_t streams_ = 1;
  std::vector<std::string> input_names_;
  DataTypeVector tout_;
  std::vector<PartialTensorShape> output_shapes_;
  std::mutex mu_;
  std::shared_ptr<Compiled> compiled_;
  Tensor held_xml_, held_weights_;  // keep the verified buffers alive: their addresses stay theirs
  const char* seen_xml_ = nullptr;
  const char* seen_weights_ = nullptr;
  size_t held_xml_size_ = 0, held_weights_size_ = 0;
};

REGISTER_KERNEL_BUILDER(Name("TfaccelOpenvino").Device(::tensorflow::DEVICE_CPU), TfaccelOpenvinoOp);

class TfaccelOpenvinoCompileOp : public OpKernel {
 public:
  explicit TfaccelOpenvinoCompileOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("model_key", &key_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("precision", &precision_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("streams", &streams_));
    OP_REQUIRES(ctx, streams_ <= kMaxStreams,
                errors::InvalidArgument(name(), ": streams is ", streams_, ", more than the ", kMaxStreams,
                                        " execution streams a model can run with"));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& xml = ctx->input(0);
    const Tensor& weights = ctx->input(1);
    OP_REQUIRES(ctx, xml.dims() == 0 && weights.dims() == 0,
                errors::InvalidArgument(name(), ": model_xml and model_weights must be scalars"));
    std::shared_ptr<Compiled> compiled;
    OP_REQUIRES_OK(ctx, GetCompiled(key_, precision_, streams_, xml.scalar<tstring>()(),
                                    weights.scalar<tstring>()(), true, &compiled));
  }

 private:
  std::string key_;
  std::string precision_;
  int64_t streams_ = 1;
};

REGISTER_KERNEL_BUILDER(Name("TfaccelOpenvinoCompile").Device(::tensorflow::DEVICE_CPU),
                        TfaccelOpenvinoCompileOp);

class TfaccelOpenvinoCacheStatsOp : public OpKernel {
 public:
  explicit TfaccelOpenvinoCacheStatsOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("release_pending", &release_pending_));
  }

  void Compute(OpKernelContext* ctx) override {
    std::vector<std::shared_ptr<Compiled>> dropped;
    int64_t live, pending, compiles, from_disk;
    {
      Cache& cache = TheCache();
      std::lock_guard<std::mutex> lock(cache.mu);
      cache.ExpirePending(release_pending_, &dropped);
      pending = static_cast<int64_t>(cache.pending.size());
      compiles = cache.compiles;
      from_disk = cache.from_disk;
    }
    dropped.clear();  // the last reference to a model may go here, outside the cache's lock
    {
      Cache& cache = TheCache();
      std::lock_guard<std::mutex> lock(cache.mu);
      live = cache.Live();
    }
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({4}), &out));
    auto stats = out->vec<int64_t>();
    stats(0) = live;
    stats(1) = pending;
    stats(2) = compiles;
    stats(3) = from_disk;
  }

 private:
  bool release_pending_ = false;
};

REGISTER_KERNEL_BUILDER(Name("TfaccelOpenvinoCacheStats").Device(::tensorflow::DEVICE_CPU),
                        TfaccelOpenvinoCacheStatsOp);

}  // namespace tfaccel
