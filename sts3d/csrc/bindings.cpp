// The Python module of sts3d's compiled CPU kernels (sts3d/models/native.py builds and loads it).
// pybind11 and its at::Tensor casters, without the rest of torch/extension.h (which took 52 s of this file's
// compile on a 2-core VM; now 15 s)
#include <ATen/core/Tensor.h>
#include <torch/csrc/utils/pybind.h>

#include <vector>

at::Tensor depthwise_forward(const at::Tensor& x, const at::Tensor& weight, const std::vector<int64_t>& bounds,
                             const at::Tensor& specs, int64_t Ho, int64_t Wo);
std::vector<at::Tensor> depthwise_backward(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& weight,
                                           const std::vector<int64_t>& bounds, const at::Tensor& specs,
                                           bool need_x, bool need_w);
void tap_sum_forward(const at::Tensor& y, at::Tensor& out, int64_t quarter, bool faithful);
void tap_sum_backward(const at::Tensor& grad, at::Tensor& grad_y, int64_t quarter, bool faithful);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "sts3d's CPU kernels: depthwise stencil convs, plain and STS, with their gradients; the dense 3x1x1 STS "
            "conv's tap sum and its transpose";
  m.def("depthwise_forward", &depthwise_forward);
  m.def("depthwise_backward", &depthwise_backward);
  m.def("tap_sum_forward", &tap_sum_forward);
  m.def("tap_sum_backward", &tap_sum_backward);
}
