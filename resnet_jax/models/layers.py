"""Layers of timm's ResNet variants: SE and ECA attention, blur pooling, average pools, drop path."""

from __future__ import annotations

import math
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

Dtype = Any


def make_divisible(value: float, divisor: int = 8, round_limit: float = 0.9) -> int:
  """timm's channel rounding: the nearest multiple of `divisor` (at least `divisor`), raised by one
  step when that would lose more than `1 - round_limit` of `value`."""
  new = max(divisor, int(value + divisor / 2) // divisor * divisor)
  return new + divisor if new < round_limit * value else new


class SqueezeExcite(nn.Module):
  """Squeeze-and-Excitation (Hu et al. 2018): x * sigmoid(fc2(relu(fc1(mean(x))))).

  The two fully connected layers are 1x1 convolutions with bias, as timm's `SEModule` (keys
  `fc1`, `fc2`), so their weights convert with the convolutions' transpose.

  Attributes:
    rd_ratio: reduced channels over channels, rounded to a multiple of 8 as timm rounds them
      (1/16 for SE-ResNet, 1/4 for ResNet-RS).
  """
  rd_ratio: float = 1.0 / 16
  dtype: Optional[Dtype] = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    channels = x.shape[-1]
    reduced = make_divisible(channels * self.rd_ratio, 8, round_limit=0.0)
    conv = lambda n, name: nn.Conv(n, (1, 1), use_bias=True, dtype=self.dtype,  # noqa: E731
                                   param_dtype=self.param_dtype, name=name)
    s = jnp.mean(x.astype(jnp.float32), axis=(1, 2), keepdims=True).astype(x.dtype)
    s = conv(channels, "fc2")(nn.relu(conv(reduced, "fc1")(s)))
    return x * nn.sigmoid(s).astype(x.dtype)


def eca_kernel_size(channels: int, gamma: int = 2, beta: int = 1) -> int:
  """ECA-Net's adaptive kernel size (Wang et al. 2020, eq. 12): the odd number nearest
  (log2(C) + beta) / gamma, at least 3."""
  t = int(abs(math.log(channels, 2) + beta) / gamma)
  return max(t if t % 2 else t + 1, 3)


class EfficientChannelAttention(nn.Module):
  """ECA (Wang et al. 2020): a 1-D convolution across the pooled channels, no bias, then a sigmoid
  gate. The kernel (timm's `conv`, a `Conv1d(1, 1, k)`) is (k, 1, 1) here."""
  dtype: Optional[Dtype] = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    k = eca_kernel_size(x.shape[-1])
    s = jnp.mean(x.astype(jnp.float32), axis=(1, 2)).astype(x.dtype)[..., None]  # (batch, C, 1)
    s = nn.Conv(1, (k,), padding=(((k - 1) // 2, (k - 1) // 2),), use_bias=False, dtype=self.dtype,
                param_dtype=self.param_dtype, name="conv")(s)
    return x * nn.sigmoid(s[:, None, :, 0]).astype(x.dtype)[:, None]


ATTENTION = {"se": SqueezeExcite, "eca": EfficientChannelAttention}


class BlurPool(nn.Module):
  """Anti-aliased downsampling (Zhang 2019): reflect-pad by 1, blur each channel with the binomial
  3x3 filter [1, 2, 1]^T [1, 2, 1] / 16, keep every `strides`-th pixel. No parameters (timm's filter
  is a non-persistent buffer, absent from its state_dict)."""
  strides: int = 2
  filter_size: int = 3

  @nn.compact
  def __call__(self, x):
    n = self.filter_size
    coeffs = np.array([math.comb(n - 1, k) for k in range(n)], np.float64) / 2 ** (n - 1)
    p = ((self.strides - 1) + (n - 1)) // 2  # timm's get_padding(filter_size, stride)
    x = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), mode="reflect")
    channels = x.shape[-1]
    kernel = np.broadcast_to(np.outer(coeffs, coeffs)[:, :, None, None], (n, n, 1, channels))
    return jax.lax.conv_general_dilated(
        x, jnp.asarray(kernel, x.dtype), (self.strides, self.strides), "VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=channels)

  def macs_per_output(self, inputs) -> int:
    """Multiply-adds per output element (a depthwise convolution), for `complexity`."""
    return self.filter_size ** 2


def avg_pool(x, window: int, strides: int, ceil_mode: bool = False):
  """PyTorch's AvgPool2d without padding; with `ceil_mode`, a partial window at the bottom/right
  edge is kept and averaged over the pixels it holds (count_include_pad=False, as timm's
  average-pool shortcut uses)."""
  if not ceil_mode:
    return nn.avg_pool(x, (window, window), (strides, strides))
  pads = []
  for size in x.shape[1:3]:
    out = -(-(size - window) // strides) + 1
    pads.append((0, max(0, (out - 1) * strides + window - size)))
  summed = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, window, window, 1),
                                 (1, strides, strides, 1), ((0, 0), *pads, (0, 0)))
  ones = jnp.ones((1, *x.shape[1:3], 1), x.dtype)
  counts = jax.lax.reduce_window(ones, 0.0, jax.lax.add, (1, window, window, 1),
                                 (1, strides, strides, 1), ((0, 0), *pads, (0, 0)))
  return summed / counts


class DropPath(nn.Module):
  """Stochastic depth (Huang et al. 2016) as timm's `DropPath`: each sample's residual is zeroed
  with probability `rate` and the kept ones scaled by 1 / (1 - rate). Needs a 'dropout' rng when
  not `deterministic`."""
  rate: float
  deterministic: bool = True

  @nn.compact
  def __call__(self, x):
    if self.deterministic or self.rate == 0.0:
      return x
    keep = 1.0 - self.rate
    mask = jax.random.bernoulli(self.make_rng("dropout"), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
    return x / keep * mask.astype(x.dtype)


class StdConv(nn.Module):
  """A convolution with weight standardisation (Qiao et al. 2019), as BiT's and timm's `StdConv2d`:
  each output channel's kernel is normalised to zero mean and unit (biased) variance over its inputs
  and taps before use; the stored kernel stays unnormalised. Parameter 'kernel' (HWIO), no bias.

  Attributes mirror `nn.Conv`'s: features, kernel_size, strides, padding (explicit pairs),
  feature_group_count; `epsilon` (1e-8 in BiT) is added to the variance.
  """
  features: int
  kernel_size: tuple
  strides: int = 1
  padding: Any = ((0, 0), (0, 0))
  feature_group_count: int = 1
  epsilon: float = 1e-6
  kernel_init: Any = nn.initializers.lecun_normal()
  dtype: Optional[Dtype] = None
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    kh, kw = self.kernel_size
    shape = (kh, kw, x.shape[-1] // self.feature_group_count, self.features)
    kernel = self.param("kernel", self.kernel_init, shape, self.param_dtype).astype(jnp.float32)
    mean = jnp.mean(kernel, axis=(0, 1, 2), keepdims=True)
    var = jnp.mean(jnp.square(kernel - mean), axis=(0, 1, 2), keepdims=True)
    kernel = (kernel - mean) * jax.lax.rsqrt(var + self.epsilon)
    dtype = self.dtype or x.dtype
    return jax.lax.conv_general_dilated(
        x.astype(dtype), kernel.astype(dtype), (self.strides, self.strides), self.padding,
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=self.feature_group_count)

  def macs_per_output(self, inputs) -> int:
    """Multiply-adds per output element, for `complexity`."""
    kh, kw = self.kernel_size
    return kh * kw * inputs.shape[-1] // self.feature_group_count
