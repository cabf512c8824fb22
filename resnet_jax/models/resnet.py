"""Flax ResNets that compute what torchvision's compute: norm layer, blocks, networks and the registry."""

from __future__ import annotations

import functools
from typing import Any, Callable, ClassVar, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from resnet_jax.models.layers import ATTENTION, BlurPool, DropPath, avg_pool

ModuleDef = Any
Dtype = Any

# torchvision: kaiming_normal_(mode="fan_out", nonlinearity="relu"), i.e. N(0, 2 / (out_channels * k * k)).
# JAX's "fan_out" for an HWIO kernel is the same product; "normal" is the untruncated normal torch uses.
conv_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# nn.Linear's default: kaiming_uniform_(a=sqrt(5)) == U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
dense_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")

SHORTCUTS = ("A", "B", "C", None)
NORMS = ("batch", "group", "folded")
STEMS = ("imagenet", "cifar", "deep", "deep_tiered")
STEM_POOLS = ("max", "conv")


class _Folded(nn.Module):
  """Stands where a BatchNorm stood once `inference.fold_batchnorm` has moved it into the conv."""

  def __call__(self, x):
    return x


def _symmetric_uniform(limit: float) -> Callable:
  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -limit, limit)
  return init


def _pad(kernel_size: int, dilation: int = 1) -> tuple[tuple[int, int], tuple[int, int]]:
  # PyTorch pads both sides by the same amount; Flax's 'SAME' pads (0, 1) for stride 2 on even
  # sizes, which shifts every sampling grid by one pixel and makes converted weights disagree.
  p = dilation * (kernel_size - 1) // 2
  return ((p, p), (p, p))


def _shifted_moments(x: jax.Array, axes: tuple, shift: jax.Array) -> jax.Array:
  """[E[x - shift], E[(x - shift)^2]] over `axes`, in one pass over x (XLA fuses both reductions).

  Var = E[d^2] - E[d]^2 loses about log2(1 + (mean - shift)^2 / var) bits to cancellation: unshifted
  (shift 0) that is all of float32's 24 bits when |mean| >> std, as after a ReLU deep in a ResNet;
  shifted by a value near the mean, almost nothing. A two-pass variance would need a second pass.
  """
  d = x - shift
  return jnp.stack([jnp.mean(d, axes), jnp.mean(jnp.square(d), axes)])


class BatchNorm(nn.Module):
  """BatchNorm over all axes but the last, with PyTorch's running-statistics update.

  Same parameter and statistic names as `flax.linen.BatchNorm` ('scale', 'bias'; 'mean', 'var' in
  `batch_stats`), but the running variance is updated with the unbiased batch variance, as
  `torch.nn.BatchNorm2d` does, so a model trained here matches one trained there. Normalisation
  itself uses the biased variance, in both. Statistics are computed in float32 whatever `dtype` is.

  Attributes:
    use_running_average: normalise with the running statistics (eval) instead of the batch's.
    momentum: weight of the old running value; Flax's 0.9 is PyTorch's momentum=0.1.
    epsilon: added to the variance; torchvision's 1e-5.
    axis_name: `pmap` axis over which batch statistics are averaged (synchronised BatchNorm).
    scale_init: initialiser of the scale; zeros for the last norm of a block under
      `zero_init_residual`.
  """
  use_running_average: bool = False
  momentum: float = 0.9
  epsilon: float = 1e-5
  dtype: Optional[Dtype] = None
  param_dtype: Dtype = jnp.float32
  axis_name: Optional[str] = None
  scale_init: Callable = nn.initializers.ones
  bias_init: Callable = nn.initializers.zeros

  @nn.compact
  def __call__(self, x):
    features = x.shape[-1]
    scale = self.param("scale", self.scale_init, (features,), self.param_dtype)
    bias = self.param("bias", self.bias_init, (features,), self.param_dtype)
    ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((features,), jnp.float32))
    ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((features,), jnp.float32))

    if self.use_running_average:
      mean, var = ra_mean.value, ra_var.value
    else:
      axes = tuple(range(x.ndim - 1))
      # The shift is the running mean: the same on every device (so the per-device moments can be
      # averaged), and close to the batch mean once training has run a few steps.
      shift = jax.lax.stop_gradient(ra_mean.value)
      moments = _shifted_moments(x.astype(jnp.float32), axes, shift)
      if self.axis_name is not None and not self.is_initializing():
        moments = jax.lax.pmean(moments, self.axis_name)
      mean = shift + moments[0]
      var = jnp.maximum(moments[1] - jnp.square(moments[0]), 0.0)
      if not self.is_initializing():
        n = np.prod([x.shape[a] for a in axes])
        if self.axis_name is not None:
          n = n * jax.lax.psum(1, self.axis_name)
        unbiased = var * (n / jnp.maximum(n - 1, 1))
        m = self.momentum
        ra_mean.value = m * ra_mean.value + (1.0 - m) * mean
        ra_var.value = m * ra_var.value + (1.0 - m) * unbiased

    # Fold the statistics into one multiply-add per element: y = x * a + b.
    a = scale.astype(jnp.float32) * jax.lax.rsqrt(var + self.epsilon)
    b = bias.astype(jnp.float32) - mean * a
    dtype = self.dtype or x.dtype
    return (x * a.astype(dtype) + b.astype(dtype)).astype(dtype)


class _AvgDown(nn.Module):
  """timm's `aa_layer=nn.AvgPool2d`: a 2x2 average pool of stride 2 where the block downsamples."""
  strides: int = 2

  def __call__(self, x):
    return avg_pool(x, 2, self.strides)


AA_LAYERS = {"blur": BlurPool, "avg": _AvgDown}


class ResidualBlock(nn.Module):
  """The fields and the shortcut shared by `BasicBlock` and `Bottleneck`; subclasses give the residual.

  Attributes:
    planes: channels of the block's inner convolutions; the output has `planes * expansion`.
    conv, norm, act: the layers, passed in as partials by `ResNet`.
    strides: stride of the block's 3x3 convolution.
    groups, base_width, dilation: ResNeXt cardinality, width per group and dilation of the 3x3
      convolution (Bottleneck only; `ResNet` rejects other values for BasicBlock, as torchvision).
    shortcut: 'projection' (1x1 conv + norm), 'pad' (paper's option A: subsample and zero-pad
      channels), 'identity', or None for a plain block without a shortcut.
    zero_init_last: initialise the last norm's scale to zero, so the block starts as its shortcut.
    reduce_first: the first convolution has `1 / reduce_first` of the width (timm's SENet-154).
    attn: channel attention applied to the residual before the addition (timm's `se`), or None.
    aa: anti-aliasing: the strided 3x3 convolution runs at stride 1 and this module (e.g.
      `BlurPool`) downsamples after its activation; None for a strided convolution.
    drop_path: stochastic depth on the residual (`layers.DropPath`), or None.
    avg_down: the projection shortcut average-pools 2x2 and then convolves at stride 1 (ResNet-D).
    down_kernel_size: kernel of a strided projection shortcut (3 in SENet-154, else 1).
  """
  expansion: ClassVar[int] = 1
  planes: int
  conv: ModuleDef
  norm: ModuleDef
  act: Callable = nn.relu
  strides: int = 1
  groups: int = 1
  base_width: int = 64
  dilation: int = 1
  shortcut: Optional[str] = "identity"
  zero_init_last: bool = False
  reduce_first: int = 1
  attn: Optional[ModuleDef] = None
  aa: Optional[ModuleDef] = None
  drop_path: Optional[ModuleDef] = None
  avg_down: bool = False
  down_kernel_size: int = 1

  def last_norm(self, name: str):
    """The block's last norm, zero-initialised under `zero_init_last` (torchvision's zero_init_residual)."""
    if self.zero_init_last:
      return self.norm(name=name, scale_init=nn.initializers.zeros)
    return self.norm(name=name)

  def strided(self, y, strides: int):
    """`y` downsampled by the anti-aliasing module when there is one and `strides` is 2."""
    return self.aa(strides=strides, name="aa")(y) if self.aa is not None and strides != 1 else y

  def conv_strides(self) -> int:
    """Stride of the strided 3x3 convolution: 1 when the anti-aliasing module downsamples."""
    return 1 if self.aa is not None else self.strides

  def add_shortcut(self, x, y):
    """Applies attention and drop path to the residual `y`, adds the shortcut of the block's input
    `x`, and applies the activation."""
    if self.attn is not None:
      y = self.attn(name="se")(y)  # timm names every attention module 'se'
    if self.drop_path is not None:
      y = self.drop_path()(y)
    if self.shortcut is None:
      return self.act(y)
    out_channels = self.planes * self.expansion
    if self.shortcut == "projection":
      strides, k = self.strides, self.down_kernel_size if self.strides != 1 else 1
      if self.avg_down and self.strides != 1:
        # ResNet-D (Bag of Tricks, sec. 4.1): the 1x1 strided conv ignored 3/4 of its input.
        x, strides = avg_pool(x, 2, self.strides, ceil_mode=True), 1
      # timm's get_padding(k, stride): ((stride - 1) + (k - 1)) // 2 on both sides.
      p = ((strides - 1) + (k - 1)) // 2
      x = self.conv(out_channels, (k, k), strides, padding=((p, p), (p, p)),
                    name="downsample_conv")(x)
      x = self.norm(name="downsample_bn")(x)
    elif self.shortcut == "pad":
      # Option A of the paper (sec. 4.1): no parameters. Subsample spatially as the strided conv does,
      # then append zero channels. Where the zeros go does not change what the network can represent.
      x = x[:, ::self.strides, ::self.strides, :]
      x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, out_channels - x.shape[-1])))
    elif self.shortcut != "identity":
      raise ValueError(f"unknown shortcut {self.shortcut!r}")
    return self.act(y + x.astype(y.dtype))


class BasicBlock(ResidualBlock):
  """Two 3x3 convolutions: conv-norm-relu, conv-norm, add the shortcut, relu. Expansion 1."""
  expansion: ClassVar[int] = 1

  @nn.compact
  def __call__(self, x):
    y = self.conv(self.planes // self.reduce_first, (3, 3), self.conv_strides(), padding=_pad(3),
                  name="conv1")(x)
    y = self.strided(self.act(self.norm(name="bn1")(y)), self.strides)
    y = self.conv(self.planes, (3, 3), padding=_pad(3), name="conv2")(y)
    y = self.last_norm("bn2")(y)
    return self.add_shortcut(x, y)


class Bottleneck(ResidualBlock):
  """1x1 reduce, 3x3, 1x1 expand (x4), each followed by norm; add the shortcut, relu.

  This is torchvision's "ResNet v1.5": the stride sits on the 3x3 convolution, not on the first 1x1
  as in the paper ("Deep residual learning", fig. 5), which costs a little speed and gains ~0.5%
  top-1 (https://ngc.nvidia.com/catalog/model-scripts/nvidia:resnet_50_v1_5_for_pytorch).
  The 3x3 convolution is grouped for ResNeXt and widened for Wide ResNet through
  `width = planes * width_per_group / 64 * groups`.
  """
  expansion: ClassVar[int] = 4

  @nn.compact
  def __call__(self, x):
    width = int(self.planes * (self.base_width / 64.0)) * self.groups
    y = self.conv(width // self.reduce_first, (1, 1), padding=_pad(1), name="conv1")(x)
    y = self.act(self.norm(name="bn1")(y))
    y = self.conv(width, (3, 3), self.conv_strides(), padding=_pad(3, self.dilation),
                  kernel_dilation=self.dilation, feature_group_count=self.groups, name="conv2")(y)
    y = self.strided(self.act(self.norm(name="bn2")(y)), self.strides)
    y = self.conv(self.planes * self.expansion, (1, 1), padding=_pad(1), name="conv3")(y)
    y = self.last_norm("bn3")(y)
    return self.add_shortcut(x, y)


class ResNet(nn.Module):
  """A residual network with torchvision's options, NHWC.

  Attributes:
    block: `BasicBlock` or `Bottleneck`.
    stage_sizes: number of blocks in each stage (torchvision's `layers`).
    stage_widths: `planes` of each stage; the stem has `stage_widths[0]` channels.
    num_classes: classifier outputs; 0 or None for a headless model returning pooled features.
    stem: 'imagenet' (7x7/2 conv, 3x3/2 max-pool) or 'cifar' (3x3/1 conv, no pool).
    shortcut: 'B' projection where the shape changes, identity elsewhere (torchvision);
      'A' zero-padding identity where the shape changes; 'C' projection everywhere;
      None for a plain network without shortcuts.
    zero_init_residual: zero the scale of each block's last norm (torchvision's option).
    groups, width_per_group: ResNeXt cardinality and width of each group (Bottleneck only).
    replace_stride_with_dilation: for layer2..layer4, dilate instead of striding (segmentation).
    norm: 'batch' (BatchNorm with running statistics in `batch_stats`), 'group' (GroupNorm), or
      'folded' (inference only: every conv has a bias that holds its BatchNorm; see
      `resnet_jax.models.inference.fold_batchnorm`).
    norm_groups: number of groups for `norm='group'`.
    dtype: compute dtype (e.g. bfloat16); parameters and norm statistics stay in `param_dtype`.
    axis_name: `pmap` axis over which BatchNorm statistics are synchronised.
    bn_momentum: Flax convention, weight of the old value (0.9 == PyTorch's momentum 0.1).
    in_channels: expected channels of the input images.
    stem_width: channels of the first two 3x3 convolutions of a deep stem, whose output has
      twice as many (timm's `stem_width`; 32 in ResNet-C/D).
    stem_pool: 'max' (3x3/2 max-pool) or 'conv' (a 3x3/2 conv, norm and ReLU; ResNet-RS).
    avg_down: projection shortcuts average-pool 2x2 before a stride-1 1x1 conv (ResNet-D).
    down_kernel_size: kernel of strided projection shortcuts (3 in SENet-154).
    block_reduce_first: the first conv of each block has 1/this of the width (2 in SENet-154).
    attn: 'se' (Squeeze-and-Excitation), 'eca' (ECA) after each block's last norm, or None.
    attn_ratio: SE's reduced channels over channels (1/16; 1/4 in ResNet-RS).
    aa: anti-aliased downsampling: 'blur' (`layers.BlurPool` after the strided 3x3 conv, run at
      stride 1, and after a stride-1 stem max-pool) or 'avg' (2x2 average pools there instead, and
      in place of the stem's max-pool); None.
    drop_path_rate: stochastic depth of the last block, the others' rising linearly from 0 by block
      index (timm's rule); needs a 'dropout' rng in train mode.
    drop_rate: dropout before the classifier in train mode; needs a 'dropout' rng.
  """
  block: type
  stage_sizes: Sequence[int]
  stage_widths: Sequence[int] = (64, 128, 256, 512)
  num_classes: Optional[int] = 1000
  stem: str = "imagenet"
  shortcut: Optional[str] = "B"
  zero_init_residual: bool = False
  groups: int = 1
  width_per_group: int = 64
  replace_stride_with_dilation: Sequence[bool] = (False, False, False)
  norm: str = "batch"
  norm_groups: int = 32
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  axis_name: Optional[str] = None
  bn_momentum: float = 0.9
  in_channels: int = 3
  stem_width: int = 64
  stem_pool: str = "max"
  avg_down: bool = False
  down_kernel_size: int = 1
  block_reduce_first: int = 1
  attn: Optional[str] = None
  attn_ratio: float = 1.0 / 16
  aa: Optional[str] = None
  drop_path_rate: float = 0.0
  drop_rate: float = 0.0

  def _check(self, x):
    if x.ndim != 4:
      raise ValueError(f"expected a batch of NHWC images of rank 4, got shape {tuple(x.shape)}")
    if x.shape[-1] != self.in_channels:
      raise ValueError(f"expected {self.in_channels} channels in the last axis (NHWC), "
                       f"got shape {tuple(x.shape)}; transpose NCHW input with x.transpose(0, 2, 3, 1)")
    if self.shortcut not in SHORTCUTS:
      raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {self.shortcut!r}")
    if self.norm not in NORMS:
      raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")
    if len(self.replace_stride_with_dilation) != len(self.stage_sizes) - 1:
      raise ValueError("replace_stride_with_dilation should have one entry per stage after the "
                       f"first ({len(self.stage_sizes) - 1}), got {self.replace_stride_with_dilation}")
    if len(self.stage_widths) != len(self.stage_sizes):
      raise ValueError(f"stage_widths {self.stage_widths} and stage_sizes {self.stage_sizes} "
                       "differ in length")
    if self.block is BasicBlock and (self.groups != 1 or self.width_per_group != 64):
      raise ValueError("BasicBlock only supports groups=1 and width_per_group=64 (as torchvision)")
    if self.block is BasicBlock and any(self.replace_stride_with_dilation):
      raise ValueError("dilation > 1 is not supported with BasicBlock (as torchvision)")
    if self.stem not in STEMS:
      raise ValueError(f"stem must be one of {STEMS}, got {self.stem!r}")
    if self.stem_pool not in STEM_POOLS:
      raise ValueError(f"stem_pool must be one of {STEM_POOLS}, got {self.stem_pool!r}")
    if self.stem_pool == "conv" and (self.aa or self.stem == "cifar"):
      raise ValueError("stem_pool='conv' is not supported with aa or the 'cifar' stem")
    if self.attn is not None and self.attn not in ATTENTION:
      raise ValueError(f"attn must be one of {tuple(ATTENTION)} or None, got {self.attn!r}")
    if self.aa is not None and self.aa not in AA_LAYERS:
      raise ValueError(f"aa must be one of {tuple(AA_LAYERS)} or None, got {self.aa!r}")
    if any(self.replace_stride_with_dilation) and (self.aa or self.avg_down or
                                                   self.down_kernel_size != 1):
      raise ValueError("replace_stride_with_dilation is not supported with aa, avg_down or "
                       "down_kernel_size > 1")

  def _layers(self, train: bool):
    conv = functools.partial(nn.Conv, use_bias=self.norm == "folded", kernel_init=conv_kernel_init,
                             dtype=self.dtype, param_dtype=self.param_dtype)
    if self.norm == "folded":
      norm = _Folded
    elif self.norm == "batch":
      norm = functools.partial(BatchNorm, use_running_average=not train, momentum=self.bn_momentum,
                               epsilon=1e-5, dtype=self.dtype, param_dtype=self.param_dtype,
                               axis_name=self.axis_name)
    else:
      norm = functools.partial(nn.GroupNorm, num_groups=self.norm_groups, epsilon=1e-5,
                               dtype=self.dtype, param_dtype=self.param_dtype)
    return conv, norm

  def _shortcut(self, strides: int, in_channels: int, out_channels: int) -> Optional[str]:
    if self.shortcut is None:
      return None
    changes_shape = strides != 1 or in_channels != out_channels
    if self.shortcut == "C" or (changes_shape and self.shortcut == "B"):
      return "projection"
    return "pad" if changes_shape else "identity"

  def _stage_plan(self):
    """Yields (stage name, planes, [(strides, dilation) of each block]), as torchvision's `_make_layer`.

    A stage in `replace_stride_with_dilation` keeps stride 1 and multiplies the dilation by the
    stride it replaces; its first block still uses the previous stage's dilation.
    """
    dilation = 1
    dilate = (False, *self.replace_stride_with_dilation)
    for i, (num_blocks, planes) in enumerate(zip(self.stage_sizes, self.stage_widths)):
      strides = 1 if i == 0 else 2
      previous_dilation = dilation
      if dilate[i]:
        dilation, strides = dilation * strides, 1
      yield f"layer{i + 1}", planes, [(strides, previous_dilation)] + [(1, dilation)] * (num_blocks - 1)

  def _aa(self) -> Optional[ModuleDef]:
    return AA_LAYERS[self.aa] if self.aa else None

  def _stem(self, x, conv, norm):
    """The stem: (output, its channels)."""
    if self.stem == "cifar":
      width = self.stage_widths[0]
      x = conv(width, (3, 3), 1, padding=_pad(3), name="conv1")(x)
      return nn.relu(norm(name="bn1")(x)), width
    if self.stem == "imagenet":
      width = self.stage_widths[0]
      x = conv(width, (7, 7), 2, padding=_pad(7), name="conv1")(x)
    else:
      # Bag of Tricks' ResNet-C: three 3x3 convs for the 7x7; 'tiered' narrows the first to 3/4.
      # Named as timm's nn.Sequential indices (1 and 4 are its norms, 2 and 5 its ReLUs).
      width = 2 * self.stem_width
      first = 3 * (self.stem_width // 4) if self.stem == "deep_tiered" else self.stem_width
      x = conv(first, (3, 3), 2, padding=_pad(3), name="conv1_0")(x)
      x = nn.relu(norm(name="conv1_1")(x))
      x = conv(self.stem_width, (3, 3), 1, padding=_pad(3), name="conv1_3")(x)
      x = nn.relu(norm(name="conv1_4")(x))
      x = conv(width, (3, 3), 1, padding=_pad(3), name="conv1_6")(x)
    x = nn.relu(norm(name="bn1")(x))
    if self.stem_pool == "conv":
      # ResNet-RS: a learned 3x3/2 downsampling instead of the max-pool.
      x = conv(width, (3, 3), 2, padding=_pad(3), name="maxpool_0")(x)
      return nn.relu(norm(name="maxpool_1")(x)), width
    if self.aa == "avg":
      return avg_pool(x, 2, 2), width
    # PyTorch pads max-pool with -inf; so does Flax (reduce_window's init value).
    if self.aa == "blur":
      return BlurPool(2)(nn.max_pool(x, (3, 3), (1, 1), padding=_pad(3))), width
    return nn.max_pool(x, (3, 3), (2, 2), padding=_pad(3)), width

  @nn.compact
  def __call__(self, x, train: Optional[bool] = None, return_features: bool = False):
    """Runs the network on a batch of NHWC images.

    Args:
      x: images, shape (batch, height, width, in_channels).
      train: True: normalise with the batch's statistics and update the running ones (needs
        `mutable=['batch_stats']`); False: normalise with the running statistics. None (default):
        train exactly when `batch_stats` is mutable, so `apply(variables, x)` evaluates and
        Flax's ImageNet example's `apply(variables, x, mutable=['batch_stats'])` trains (its
        ResNet defaults to train mode; a fixed eval default would silently never update the
        statistics there). `init` evaluates.
      return_features: return a dict with 'stem', 'layer1'.. (each stage's output), 'pre_logits'
        (pooled features) and, with a classifier, 'logits', instead of the logits alone.

    Returns:
      float32 logits of shape (batch, num_classes), pooled features when headless, or the dict.
    """
    self._check(x)
    if train is None:
      train = self.is_mutable_collection("batch_stats") and not self.is_initializing()
    conv, norm = self._layers(train)
    features = {}
    x, width = self._stem(x, conv, norm)
    features["stem"] = x

    # A folded model has no norm scale to zero (and nothing to train).
    zero_init_last = self.zero_init_residual and self.shortcut is not None and self.norm != "folded"
    attn = self.attn and functools.partial(
        ATTENTION[self.attn], dtype=self.dtype, param_dtype=self.param_dtype,
        **({"rd_ratio": self.attn_ratio} if self.attn == "se" else {}))
    in_channels, index, total = width, 0, sum(self.stage_sizes)
    for stage, planes, blocks in self._stage_plan():
      out_channels = planes * self.block.expansion
      for j, (strides, dilation) in enumerate(blocks):
        # timm's linear rule: 0 for the first block, drop_path_rate for the last.
        rate = self.drop_path_rate * index / max(total - 1, 1)
        drop_path = functools.partial(DropPath, rate, not train) if rate > 0 else None
        x = self.block(planes=planes, conv=conv, norm=norm, strides=strides, groups=self.groups,
                       base_width=self.width_per_group, dilation=dilation,
                       shortcut=self._shortcut(strides, in_channels, out_channels),
                       zero_init_last=zero_init_last, reduce_first=self.block_reduce_first,
                       attn=attn, aa=self._aa(), drop_path=drop_path, avg_down=self.avg_down,
                       down_kernel_size=self.down_kernel_size, name=f"{stage}_{j}")(x)
        in_channels, index = out_channels, index + 1
      features[stage] = x

    x = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    features["pre_logits"] = x
    if self.drop_rate:
      x = nn.Dropout(self.drop_rate, deterministic=not train)(x)
    if self.num_classes:
      x = nn.Dense(self.num_classes, kernel_init=dense_kernel_init,
                   bias_init=_symmetric_uniform(1.0 / np.sqrt(x.shape[-1])),
                   dtype=self.dtype, param_dtype=self.param_dtype, name="fc")(x)
      x = x.astype(jnp.float32)
      features["logits"] = x
    return features if return_features else x


# ----------------------------------------------------------------------------------------------
# The registry.

_MODELS: dict[str, Callable[..., ResNet]] = {}


def register_model(name: str, builder: Callable[..., ResNet]) -> None:
  """Adds `builder(**overrides) -> ResNet` under `name`; a name can be registered once."""
  if name in _MODELS:
    raise ValueError(f"model {name!r} is already registered")
  _MODELS[name] = builder


def list_models() -> list[str]:
  """Names of every registered model, sorted."""
  return sorted(_MODELS)


def get_model(name: str, **overrides) -> ResNet:
  """Builds a registered model, e.g. `get_model('resnet50', num_classes=10, dtype=jnp.bfloat16)`."""
  if name not in _MODELS:
    raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
  return _MODELS[name](**overrides)


COMPUTE_DTYPES = ("auto", "float32", "bfloat16")  # config.dtype's choices.


def compute_dtype(name: str):
  """'auto' is bfloat16 on GPU/TPU (float32 parameters and BN statistics stay) and float32 on CPU,
  where bfloat16 is emulated and slower."""
  if name == "auto":
    return jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16
  if name not in COMPUTE_DTYPES:
    raise ValueError(f"dtype must be one of {COMPUTE_DTYPES}, got {name!r}")
  return jnp.dtype(name)


IMAGENET = dict(stem="imagenet", stage_widths=(64, 128, 256, 512), num_classes=1000)
# Paper sec. 4.2: 3x3 stem of 16 filters, three stages of 16/32/64 filters of n blocks, option A.
CIFAR = dict(stem="cifar", stage_widths=(16, 32, 64), num_classes=10, shortcut="A",
             replace_stride_with_dilation=(False, False))
CIFAR_RESNET18 = dict(stem="cifar", stage_widths=(64, 128, 256, 512), num_classes=10)

# name -> (block, stage sizes, options)
_TABLE = {
    "resnet18": (BasicBlock, (2, 2, 2, 2), IMAGENET),
    "resnet34": (BasicBlock, (3, 4, 6, 3), IMAGENET),
    "resnet50": (Bottleneck, (3, 4, 6, 3), IMAGENET),
    "resnet101": (Bottleneck, (3, 4, 23, 3), IMAGENET),
    "resnet152": (Bottleneck, (3, 8, 36, 3), IMAGENET),
    "resnext50_32x4d": (Bottleneck, (3, 4, 6, 3), dict(IMAGENET, groups=32, width_per_group=4)),
    "resnext101_32x8d": (Bottleneck, (3, 4, 23, 3), dict(IMAGENET, groups=32, width_per_group=8)),
    "resnext101_64x4d": (Bottleneck, (3, 4, 23, 3), dict(IMAGENET, groups=64, width_per_group=4)),
    "wide_resnet50_2": (Bottleneck, (3, 4, 6, 3), dict(IMAGENET, width_per_group=128)),
    "wide_resnet101_2": (Bottleneck, (3, 4, 23, 3), dict(IMAGENET, width_per_group=128)),
    "resnet18_cifar": (BasicBlock, (2, 2, 2, 2), CIFAR_RESNET18),
    "plain18": (BasicBlock, (2, 2, 2, 2), dict(IMAGENET, shortcut=None)),
    "plain34": (BasicBlock, (3, 4, 6, 3), dict(IMAGENET, shortcut=None)),
}
for _n in (3, 5, 7, 9, 18, 200):  # depth 6n + 2: 20, 32, 44, 56, 110, 1202
  _TABLE[f"resnet{6 * _n + 2}"] = (BasicBlock, (_n,) * 3, CIFAR)
  if _n != 200:
    _TABLE[f"plain{6 * _n + 2}"] = (BasicBlock, (_n,) * 3, dict(CIFAR, shortcut=None))

for _name, (_block, _sizes, _options) in _TABLE.items():
  register_model(_name, functools.partial(ResNet, block=_block, stage_sizes=_sizes, **_options))
