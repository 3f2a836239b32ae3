"""NumPy reference of the activations family: plain, obviously correct, always available.

Semantics are those of the ONNX ops (opset 13+ for Softmax/LogSoftmax, i.e. one axis; Elu,
Selu, HardSigmoid, LeakyRelu, PRelu from opset 6+, Clip 11+, Softplus 1, HardSwish 14,
Mish 18). ``*_grad(x, dy, ...)`` is dy * f'(x) with PyTorch's choice at kinks
(ReLU'(0) = 0; ReLU6 = hardtanh(0, 6): 0 at 0 and 6; clip = torch.clamp: 1 on [lo, hi];
LeakyReLU/PReLU/ELU/SELU at 0: the negative-side slope; hardsigmoid: alpha inside the open
interval 0 < alpha*x + beta < 1; hardswish: 0 below -3, x/3 + 1/2 on [-3, 3], 1 above).

Calling convention shared with the numba and Cython twins (the public wrappers in
``edgedl.kernels.activations`` validate and reshape):
- elementwise kernels get 1-D arrays ``x`` (and ``dy``) and write into ``out`` of the same shape;
  ``out`` may be ``x`` or ``dy``;
- ``prelu`` gets ``x`` of shape (outer, C, inner) and ``slope`` of shape (C,);
- ``softmax``/``log_softmax`` get ``x`` of shape (outer, n, inner) and reduce over axis 1;
- scalar parameters are already of the array's dtype.
"""
import numpy as np


def _sigmoid(x):
    # exp of -|x| only: never overflows
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _softplus(x):
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def _tanh_softplus(x):
    # tanh(log1p(e^x)) = n / (n + 2) with n = e^x (e^x + 2), written with e^-|x| for x > 0
    e = np.exp(-np.abs(x))
    pos = (1 + 2 * e) / (1 + 2 * e + 2 * e * e)
    n = e * (e + 2)
    return np.where(x > 0, pos, n / (n + 2))


def _softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# ----------------------------------------------------------------------------- forward
def relu(x, out):
    """ONNX Relu: max(x, 0)."""
    np.maximum(x, 0, out=out)


def relu6(x, out):
    """min(max(x, 0), 6) (ONNX Clip(0, 6))."""
    np.clip(x, 0, 6, out=out)


def clip(x, lo, hi, out):
    """ONNX Clip-11+: min(max(x, lo), hi); lo > hi gives hi everywhere, like onnxruntime."""
    np.minimum(np.maximum(x, lo), hi, out=out)


def leaky_relu(x, alpha, out):
    """ONNX LeakyRelu: x if x >= 0 else alpha * x."""
    out[...] = np.where(x >= 0, x, alpha * x)


def prelu(x, slope, out):
    """ONNX PRelu on x (outer, C, inner) with slope (C,)."""
    out[...] = np.where(x >= 0, x, slope[None, :, None] * x)


def elu(x, alpha, out):
    """ONNX Elu: x if x > 0 else alpha * (exp(x) - 1)."""
    out[...] = np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))


def selu(x, alpha, gamma, out):
    """ONNX Selu: gamma * (x if x > 0 else alpha * (exp(x) - 1))."""
    out[...] = gamma * np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))


def sigmoid(x, out):
    """ONNX Sigmoid: 1 / (1 + exp(-x)), without overflow for large |x|."""
    out[...] = _sigmoid(x)


def hard_sigmoid(x, alpha, beta, out):
    """ONNX HardSigmoid: max(0, min(1, alpha * x + beta))."""
    np.clip(alpha * x + beta, 0, 1, out=out)


def tanh(x, out):
    """ONNX Tanh."""
    np.tanh(x, out=out)


def softplus(x, out):
    """ONNX Softplus: log(1 + exp(x)), stable for large |x|."""
    out[...] = _softplus(x)


def swish(x, beta, out):
    """x * sigmoid(beta * x) (SiLU at beta = 1; ONNX Swish-24 with alpha = beta)."""
    out[...] = x * _sigmoid(beta * x)


def hard_swish(x, out):
    """ONNX HardSwish-14: x * max(0, min(1, x / 6 + 1 / 2))."""
    out[...] = x * np.clip(x * x.dtype.type(1 / 6) + x.dtype.type(0.5), 0, 1)


def mish(x, out):
    """ONNX Mish-18: x * tanh(softplus(x))."""
    out[...] = x * _tanh_softplus(x)


def softmax(x, out):
    """ONNX Softmax-13 over axis 1 of x (outer, n, inner): exp(x - max) / sum."""
    out[...] = _softmax(x)


def log_softmax(x, out):
    """ONNX LogSoftmax-13 over axis 1 of x (outer, n, inner): x - max - log(sum(exp(x - max)))."""
    s = x - x.max(axis=1, keepdims=True)
    out[...] = s - np.log(np.exp(s).sum(axis=1, keepdims=True))


# ----------------------------------------------------------------------------- gradients
def relu_grad(x, dy, out):
    out[...] = np.where(x > 0, dy, 0)


def relu6_grad(x, dy, out):
    out[...] = np.where((x > 0) & (x < 6), dy, 0)


def clip_grad(x, dy, lo, hi, out):
    out[...] = np.where((x >= lo) & (x <= hi), dy, 0)


def leaky_relu_grad(x, dy, alpha, out):
    out[...] = np.where(x > 0, dy, alpha * dy)


def prelu_grad(x, dy, slope, out):
    out[...] = np.where(x > 0, dy, slope[None, :, None] * dy)


def elu_grad(x, dy, alpha, out):
    out[...] = np.where(x > 0, dy, alpha * np.exp(np.minimum(x, 0)) * dy)


def selu_grad(x, dy, alpha, gamma, out):
    out[...] = gamma * np.where(x > 0, dy, alpha * np.exp(np.minimum(x, 0)) * dy)


def sigmoid_grad(x, dy, out):
    s = _sigmoid(x)
    out[...] = dy * s * (1 - s)


def hard_sigmoid_grad(x, dy, alpha, beta, out):
    v = alpha * x + beta
    out[...] = np.where((v > 0) & (v < 1), alpha * dy, 0)


def tanh_grad(x, dy, out):
    t = np.tanh(x)
    out[...] = dy * (1 - t * t)


def softplus_grad(x, dy, out):
    out[...] = dy * _sigmoid(x)


def swish_grad(x, dy, beta, out):
    s = _sigmoid(beta * x)
    out[...] = dy * (s + beta * x * s * (1 - s))


def hard_swish_grad(x, dy, out):
    out[...] = np.where(x < -3, 0, np.where(x <= 3, dy * (x / 3 + x.dtype.type(0.5)), dy))


def mish_grad(x, dy, out):
    t = _tanh_softplus(x)
    out[...] = dy * (t + x * _sigmoid(x) * (1 - t * t))


def softmax_grad(x, dy, out):
    s = _softmax(x)
    out[...] = s * (dy - (dy * s).sum(axis=1, keepdims=True))


def log_softmax_grad(x, dy, out):
    out[...] = dy - _softmax(x) * dy.sum(axis=1, keepdims=True)
