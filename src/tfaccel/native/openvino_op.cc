// TfaccelOpenvino: a TensorFlow op that runs one compiled OpenVINO model in-process.
//
// Why an op (and not a py_function): the traced model stays a TensorFlow graph, so it saves as a
// SavedModel, runs under tf.function without the GIL, and the parts that stay on TensorFlow run around
// it in the same executor. The model itself (IR xml + weights) arrives as two scalar string inputs fed
// from SavedModel variables: node attributes would copy it into every function that holds the node.
//
// Design points (see the project's DESIGN.md, section 8):
//  - compile lazily, once per process and model, behind a lock, through a cache keyed by the content
//    hash the tracer computed (`model_key`, which also covers the precision); TfaccelOpenvinoCompile
//    fills the same cache ahead of the first call (at trace time);
//  - run on a pool of infer requests so concurrent calls never share one;
//  - bind TensorFlow's buffers as ov::Tensor without copying, and rebind every input and output on every
//    call (a request remembers the last buffers it was given);
//  - check dtypes and shapes and fail with InvalidArgument naming the input, never crash.

#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "openvino/openvino.hpp"
#include "tensorflow/core/framework/common_shape_fns.h"
#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/framework/tensor.h"

namespace tfaccel {

using ::tensorflow::DataType;
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
)doc");

REGISTER_OP("TfaccelOpenvinoCompile")
    .Input("model_xml: string")
    .Input("model_weights: string")
    .Attr("model_key: string")
    .Attr("precision: {'f32', 'bf16'} = 'f32'")
    .SetIsStateful()
    .SetShapeFn(::tensorflow::shape_inference::NoOutputs)
    .Doc(R"doc(
Compiles a model into the process-wide cache TfaccelOpenvino runs from (tfaccel does this at trace time).
)doc");

namespace {

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

// One compiled model and its request pool. Shared by every kernel instance that runs the same model.
struct Compiled {
  ov::Tensor weights;  // OpenVINO may point into the weights after compile: keep them alive
  ov::CompiledModel model;
  std::vector<ov::element::Type> input_types;
  std::vector<ov::PartialShape> input_shapes;
  std::vector<ov::PartialShape> output_shapes;
  std::mutex pool_mu;
  std::vector<ov::InferRequest> pool;
};

ov::Core& Core() {
  static ov::Core* core = new ov::Core();  // never destroyed: kernels may outlive static destructors
  return *core;
}

std::mutex& CacheMutex() {
  static std::mutex* mu = new std::mutex();
  return *mu;
}

// Compiled models live as long as the process: a model traced once is usually called until exit, and
// a re-trace of the same model (same content hash) reuses the compilation.
std::map<std::string, std::shared_ptr<Compiled>>& Cache() {
  static auto* cache = new std::map<std::string, std::shared_ptr<Compiled>>();
  return *cache;
}

// Returns the shared compiled model for `key`, compiling it from the xml and weights on first use.
absl::Status GetCompiled(const std::string& key, const std::string& precision, const tstring& xml,
                         const tstring& weights, std::shared_ptr<Compiled>* out) {
  std::lock_guard<std::mutex> lock(CacheMutex());
  auto it = Cache().find(key);
  if (it != Cache().end()) {
    *out = it->second;
    return absl::OkStatus();
  }
  auto compiled = std::make_shared<Compiled>();
  try {
    if (weights.size() > 0) {
      compiled->weights = ov::Tensor(ov::element::u8, ov::Shape{weights.size()});
      std::memcpy(compiled->weights.data(), weights.data(), weights.size());
    }
    std::shared_ptr<ov::Model> model =
        Core().read_model(std::string(xml.data(), xml.size()), compiled->weights);
    ov::AnyMap config{
        ov::hint::inference_precision(precision == "bf16" ? ov::element::bf16 : ov::element::f32),
        ov::hint::performance_mode(ov::hint::PerformanceMode::LATENCY)};
    compiled->model = Core().compile_model(model, "CPU", config);
    for (const auto& input : compiled->model.inputs()) {
      compiled->input_types.push_back(input.get_element_type());
      compiled->input_shapes.push_back(input.get_partial_shape());
    }
    for (const auto& output : compiled->model.outputs()) {
      compiled->output_shapes.push_back(output.get_partial_shape());
    }
  } catch (const std::exception& err) {
    return errors::Internal("OpenVINO could not compile the model ", key, ": ", err.what());
  }
  Cache()[key] = compiled;
  *out = compiled;
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
    OP_REQUIRES_OK(ctx, ctx->GetAttr("input_names", &input_names_));
  }

  void Compute(OpKernelContext* ctx) override {
    std::shared_ptr<Compiled> compiled;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!compiled_) {
        const Tensor& xml = ctx->input(0);
        const Tensor& weights = ctx->input(1);
        OP_REQUIRES(ctx, xml.dims() == 0 && weights.dims() == 0,
                    errors::InvalidArgument(name(), ": model_xml and model_weights must be scalars"));
        OP_REQUIRES_OK(ctx, GetCompiled(key_, precision_, xml.scalar<tstring>()(),
                                        weights.scalar<tstring>()(), &compiled_));
      }
      compiled = compiled_;
    }
    const int num_inputs = ctx->num_inputs() - 2;
    OP_REQUIRES(ctx, num_inputs == static_cast<int>(compiled->input_types.size()),
                errors::InvalidArgument(name(), ": the compiled model takes ",
                                        compiled->input_types.size(), " inputs, the op was given ",
                                        num_inputs));
    OP_REQUIRES(ctx, ctx->num_outputs() == static_cast<int>(compiled->output_shapes.size()),
                errors::InvalidArgument(name(), ": the compiled model has ",
                                        compiled->output_shapes.size(), " outputs, the op declares ",
                                        ctx->num_outputs()));
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
      std::vector<Tensor*> bound(ctx->num_outputs(), nullptr);
      for (int k = 0; k < ctx->num_outputs(); ++k) {
        const ov::PartialShape& shape = compiled->output_shapes[k];
        if (!shape.is_static()) continue;  // known only after inference: copied below
        const ov::Shape dims = shape.to_shape();
        TensorShape tf_shape;
        for (size_t d : dims) tf_shape.AddDim(static_cast<int64_t>(d));
        OP_REQUIRES_OK(ctx, ctx->allocate_output(k, tf_shape, &bound[k]));
        ov::element::Type type;
        OP_REQUIRES(ctx, ToOvType(bound[k]->dtype(), &type),
                    errors::InvalidArgument(name(), ": output ", k, " has an unsupported dtype"));
        if (bound[k]->NumElements() > 0) {
          request.set_output_tensor(
              k, ov::Tensor(type, dims, const_cast<char*>(bound[k]->tensor_data().data())));
        }
      }
      request.infer();
      for (int k = 0; k < ctx->num_outputs(); ++k) {
        ov::Tensor result = request.get_output_tensor(k);
        Tensor* out = bound[k];
        if (out == nullptr) {
          TensorShape tf_shape;
          for (size_t d : result.get_shape()) tf_shape.AddDim(static_cast<int64_t>(d));
          OP_REQUIRES_OK(ctx, ctx->allocate_output(k, tf_shape, &out));
        }
        const size_t bytes = out->tensor_data().size();
        OP_REQUIRES(ctx, result.get_byte_size() == bytes,
                    errors::Internal(name(), ": output ", k, " has ", result.get_byte_size(),
                                     " bytes, expected ", bytes));
        // the plugin may have written elsewhere (dynamic output, or it replaced our buffer): copy then
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

  std::string key_;
  std::string precision_;
  std::vector<std::string> input_names_;
  std::mutex mu_;
  std::shared_ptr<Compiled> compiled_;
};

REGISTER_KERNEL_BUILDER(Name("TfaccelOpenvino").Device(::tensorflow::DEVICE_CPU), TfaccelOpenvinoOp);

class TfaccelOpenvinoCompileOp : public OpKernel {
 public:
  explicit TfaccelOpenvinoCompileOp(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("model_key", &key_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("precision", &precision_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor& xml = ctx->input(0);
    const Tensor& weights = ctx->input(1);
    OP_REQUIRES(ctx, xml.dims() == 0 && weights.dims() == 0,
                errors::InvalidArgument(name(), ": model_xml and model_weights must be scalars"));
    std::shared_ptr<Compiled> compiled;
    OP_REQUIRES_OK(ctx, GetCompiled(key_, precision_, xml.scalar<tstring>()(),
                                    weights.scalar<tstring>()(), &compiled));
  }

 private:
  std::string key_;
  std::string precision_;
};

REGISTER_KERNEL_BUILDER(Name("TfaccelOpenvinoCompile").Device(::tensorflow::DEVICE_CPU),
                        TfaccelOpenvinoCompileOp);

}  // namespace tfaccel
