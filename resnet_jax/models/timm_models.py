"""timm's ResNet family (`timm.models.resnet`) and pre-activation ResNetV2 / BiT
(`timm.models.resnetv2`) under timm's names, in the zoo's one registry.

Each entry is the zoo's `models.ResNet` with timm's options; the names, depths and widths are those
timm registers. Letters in a name are Bag of Tricks' variants (He et al. 2019, sec. 4): 'c' a deep
3x3 stem, 'd' the deep stem plus average-pool shortcuts, 's' a wider deep stem, 't' a tiered deep
stem plus average-pool shortcuts; 'aa' and 'blur' anti-aliased downsampling; 'se'/'eca' attention.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, ClassVar, Optional, Sequence

import jax.numpy as jnp
from flax import linen as nn

from resnet_jax.models.layers import DropPath, StdConv, avg_pool, make_divisible
from resnet_jax.models.resnet import (BasicBlock, BatchNorm, Bottleneck, ModuleDef, ResNet, _pad,
                               conv_kernel_init, register_model)

B, K = BasicBlock, Bottleneck
C = dict(stem="deep", stem_width=32)
D = dict(stem="deep", stem_width=32, avg_down=True)
S = dict(stem="deep", stem_width=64)
T = dict(stem="deep_tiered", stem_width=32, avg_down=True)
SE, ECA = dict(attn="se"), dict(attn="eca")
BLUR, AA = dict(aa="blur"), dict(aa="avg")
# ResNet-RS (Bello et al. 2021): ResNet-D, SE of ratio 1/4, and a 3x3/2 conv for the stem max-pool.
RS = dict(D, stem_pool="conv", attn="se", attn_ratio=0.25)


def _x(groups: int, width: int) -> dict:
  return dict(groups=groups, width_per_group=width)


R18, R34, R26, R50 = (2, 2, 2, 2), (3, 4, 6, 3), (2, 2, 2, 2), (3, 4, 6, 3)
R101, R152, R200, R269 = (3, 4, 23, 3), (3, 8, 36, 3), (3, 24, 36, 3), (3, 30, 48, 8)

# name -> (block, stage sizes, options), as timm's entry points define them.
TIMM_RESNETS = {
    "resnet10t": (B, (1, 1, 1, 1), T),
    "resnet14t": (K, (1, 1, 1, 1), T),
    "resnet18d": (B, R18, D),
    "resnet34d": (B, R34, D),
    "resnet26": (K, R26, {}),
    "resnet26t": (K, R26, T),
    "resnet26d": (K, R26, D),
    "resnet50c": (K, R50, C), "resnet50d": (K, R50, D), "resnet50s": (K, R50, S),
    "resnet50t": (K, R50, T),
    "resnet101c": (K, R101, C), "resnet101d": (K, R101, D), "resnet101s": (K, R101, S),
    "resnet152c": (K, R152, C), "resnet152d": (K, R152, D), "resnet152s": (K, R152, S),
    "resnet200": (K, R200, {}), "resnet200d": (K, R200, D),
    "resnet50_gn": (K, R50, dict(norm="group")),
    "resnext50d_32x4d": (K, R50, dict(D, **_x(32, 4))),
    "resnext101_32x4d": (K, R101, _x(32, 4)),
    "resnext101_32x16d": (K, R101, _x(32, 16)),
    "resnext101_32x32d": (K, R101, _x(32, 32)),
    "ecaresnet26t": (K, R26, dict(T, **ECA)),
    "ecaresnet50d": (K, R50, dict(D, **ECA)),
    "ecaresnet50t": (K, R50, dict(T, **ECA)),
    # The 7x7 stem (timm passes stem_width=32, which only a deep stem reads) with ResNet-D shortcuts.
    "ecaresnetlight": (K, (1, 1, 11, 3), dict(avg_down=True, **ECA)),
    "ecaresnet101d": (K, R101, dict(D, **ECA)),
    "ecaresnet200d": (K, R200, dict(D, **ECA)),
    "ecaresnet269d": (K, R269, dict(D, **ECA)),
    "ecaresnext26t_32x4d": (K, R26, dict(T, **ECA, **_x(32, 4))),
    "ecaresnext50t_32x4d": (K, R50, dict(T, **ECA, **_x(32, 4))),
    "seresnet18": (B, R18, SE), "seresnet34": (B, R34, SE), "seresnet50": (K, R50, SE),
    "seresnet50t": (K, R50, dict(T, **SE)),
    "seresnet101": (K, R101, SE), "seresnet152": (K, R152, SE),
    "seresnet152d": (K, R152, dict(D, **SE)),
    "seresnet200d": (K, R200, dict(D, **SE)),
    "seresnet269d": (K, R269, dict(D, **SE)),
    "seresnext26d_32x4d": (K, R26, dict(D, **SE, **_x(32, 4))),
    "seresnext26t_32x4d": (K, R26, dict(T, **SE, **_x(32, 4))),
    "seresnext50_32x4d": (K, R50, dict(SE, **_x(32, 4))),
    "seresnext101_32x4d": (K, R101, dict(SE, **_x(32, 4))),
    "seresnext101_32x8d": (K, R101, dict(SE, **_x(32, 8))),
    "seresnext101d_32x8d": (K, R101, dict(D, **SE, **_x(32, 8))),
    "seresnext101_64x4d": (K, R101, dict(SE, **_x(64, 4))),
    # SENet-154 (Hu et al. 2018): a 64-wide deep stem, 3x3 strided shortcuts, halved first convs.
    "senet154": (K, R152, dict(stem="deep", stem_width=64, down_kernel_size=3, block_reduce_first=2,
                               **SE, **_x(64, 4))),
    "resnetblur18": (B, R18, BLUR), "resnetblur50": (K, R50, BLUR),
    "resnetblur50d": (K, R50, dict(D, **BLUR)), "resnetblur101d": (K, R101, dict(D, **BLUR)),
    "resnetaa34d": (B, R34, dict(D, **AA)), "resnetaa50": (K, R50, AA),
    "resnetaa50d": (K, R50, dict(D, **AA)), "resnetaa101d": (K, R101, dict(D, **AA)),
    "seresnetaa50d": (K, R50, dict(D, **AA, **SE)),
    "seresnextaa101d_32x8d": (K, R101, dict(D, **AA, **SE, **_x(32, 8))),
    "seresnextaa201d_32x8d": (K, (3, 24, 36, 4), dict(D, stem_width=64, **AA, **SE, **_x(32, 8))),
    "resnetrs50": (K, R50, RS), "resnetrs101": (K, R101, RS), "resnetrs152": (K, R152, RS),
    "resnetrs200": (K, R200, RS), "resnetrs270": (K, (4, 29, 53, 4), RS),
    "resnetrs350": (K, (4, 36, 72, 4), RS), "resnetrs420": (K, (4, 44, 87, 4), RS),
}

# timm names that are torchvision's architectures key for key: the zoo's own entries serve them
# (timm only initialises the last norm of each block to zero by default; pass zero_init_residual).
SAME_AS_TORCHVISION = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
                       "resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d",
                       "wide_resnet50_2", "wide_resnet101_2")

# timm names of `timm.models.resnet` not registered here, and why.
LEFT_OUT = {
    "ecaresnet50d_pruned": "per-layer channel widths read from timm's pruning file",
    "ecaresnet101d_pruned": "per-layer channel widths read from timm's pruning file",
    "test_resnet": "a unit-test model mixing block types across stages",
    "resnetv2_50d_evos": "EvoNorm-S0 normalisation layers",
    "resnetv2_50d_frn": "Filter Response Normalisation layers",
}


# ----------------------------------------------------------------------------------------------
# Pre-activation ResNet (He et al. 2016, "Identity Mappings in Deep Residual Networks") as timm's
# ResNetV2: norm-ReLU before each conv, nothing after the addition, one norm-ReLU after the last
# stage. BiT (Kolesnikov et al. 2020) is its bottleneck form with weight-standardised convolutions
# and GroupNorm. Submodules are named after timm's keys with '.' as '_' ('stages_0', 'blocks_1').


class PreActBlock(nn.Module):
  """A pre-activation block: norm1-relu feeds both the residual and a projection shortcut.

  Basic (`bottleneck=False`): 3x3 (stride), norm-relu, 3x3. Bottleneck: 1x1, norm-relu, 3x3
  (stride), norm-relu, 1x1 to `out_channels`, the inner width `out_channels * bottle_ratio`.
  """
  expansion: ClassVar[int] = 1
  out_channels: int
  conv: ModuleDef
  norm: ModuleDef
  bottleneck: bool = True
  bottle_ratio: float = 0.25
  strides: int = 1
  projection: bool = False
  avg_down: bool = False
  drop_path: Optional[ModuleDef] = None

  @nn.compact
  def __call__(self, x):
    pre = nn.relu(self.norm(name="norm1")(x))
    shortcut = x
    if self.projection:
      s = pre
      strides = self.strides
      if self.avg_down and self.strides != 1:
        s, strides = avg_pool(pre, 2, self.strides, ceil_mode=True), 1
      shortcut = self.conv(self.out_channels, (1, 1), strides, padding=_pad(1),
                           name="downsample_conv")(s)
    mid = make_divisible(self.out_channels * self.bottle_ratio)
    if self.bottleneck:
      y = self.conv(mid, (1, 1), padding=_pad(1), name="conv1")(pre)
      y = nn.relu(self.norm(name="norm2")(y))
      y = self.conv(mid, (3, 3), self.strides, padding=_pad(3), name="conv2")(y)
      y = nn.relu(self.norm(name="norm3")(y))
      y = self.conv(self.out_channels, (1, 1), padding=_pad(1), name="conv3")(y)
    else:
      y = self.conv(mid, (3, 3), self.strides, padding=_pad(3), name="conv1")(pre)
      y = nn.relu(self.norm(name="norm2")(y))
      y = self.conv(self.out_channels, (3, 3), padding=_pad(3), name="conv2")(y)
    if self.drop_path is not None:
      y = self.drop_path()(y)
    return y + shortcut.astype(y.dtype)


class ResNetV2(nn.Module):
  """timm's pre-activation ResNetV2, NHWC, with the zoo's conventions (train mode from a mutable
  'batch_stats', `return_features`, headless with `num_classes=0`).

  Attributes:
    stage_sizes: blocks per stage.
    stage_widths: output channels of each stage before `width_factor`.
    bottleneck: bottleneck blocks (bottle_ratio 1/4) or basic ones (bottle_ratio 1).
    width_factor: BiT's width multiplier of the stem and every stage.
    stem: 'imagenet' (7x7/2 conv), 'deep' (3x3 convs of 32, 32, 64) or 'tiered' (24, 32, 64).
    stem_pool_pad: 'torch' (max-pool padded with -inf) or 'zeros' (BiT's "fixed" padding: pad
      by 1 with zeros, then an unpadded max-pool; the input is not yet normalised, so it differs).
    avg_down: projection shortcuts average-pool 2x2 before a stride-1 1x1 conv ('d').
    norm: 'batch' or 'group' (32 groups).
    std_conv_eps: weight-standardised convolutions with this epsilon (BiT: 1e-8), or None.
    drop_path_rate, drop_rate: stochastic depth (timm's linear rule) and classifier dropout.
  """
  stage_sizes: Sequence[int]
  stage_widths: Sequence[int] = (256, 512, 1024, 2048)
  bottleneck: bool = True
  width_factor: int = 1
  num_classes: Optional[int] = 1000
  stem: str = "imagenet"
  stem_pool_pad: str = "torch"
  avg_down: bool = False
  norm: str = "batch"
  norm_groups: int = 32
  std_conv_eps: Optional[float] = None
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  axis_name: Optional[str] = None
  bn_momentum: float = 0.9
  in_channels: int = 3
  drop_path_rate: float = 0.0
  drop_rate: float = 0.0

  def _layers(self, train: bool) -> tuple[Callable, Callable]:
    if self.std_conv_eps is not None:
      conv = functools.partial(StdConv, epsilon=self.std_conv_eps, kernel_init=conv_kernel_init,
                               dtype=self.dtype, param_dtype=self.param_dtype)
    else:
      conv = functools.partial(nn.Conv, use_bias=False, kernel_init=conv_kernel_init,
                               dtype=self.dtype, param_dtype=self.param_dtype)
    if self.norm == "batch":
      norm = functools.partial(BatchNorm, use_running_average=not train, momentum=self.bn_momentum,
                               dtype=self.dtype, param_dtype=self.param_dtype,
                               axis_name=self.axis_name)
    elif self.norm == "group":
      norm = functools.partial(nn.GroupNorm, num_groups=self.norm_groups, epsilon=1e-5,
                               use_fast_variance=False, dtype=self.dtype,
                               param_dtype=self.param_dtype)
    else:
      raise ValueError(f"norm must be 'batch' or 'group', got {self.norm!r}")
    return conv, norm

  def _stem(self, x, conv, norm):
    width = make_divisible(64 * self.width_factor)
    if self.stem == "imagenet":
      x = conv(width, (7, 7), 2, padding=_pad(7), name="stem_conv")(x)
    elif self.stem in ("deep", "tiered"):
      first, second = (3 * width // 8, width // 2) if self.stem == "tiered" else (width // 2,) * 2
      x = conv(first, (3, 3), 2, padding=_pad(3), name="stem_conv1")(x)
      x = conv(second, (3, 3), padding=_pad(3), name="stem_conv2")(nn.relu(norm(name="stem_norm1")(x)))
      x = conv(width, (3, 3), padding=_pad(3), name="stem_conv3")(nn.relu(norm(name="stem_norm2")(x)))
    else:
      raise ValueError(f"stem must be 'imagenet', 'deep' or 'tiered', got {self.stem!r}")
    if self.stem_pool_pad == "zeros":
      x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
      return nn.max_pool(x, (3, 3), (2, 2)), width
    return nn.max_pool(x, (3, 3), (2, 2), padding=_pad(3)), width

  @nn.compact
  def __call__(self, x, train: Optional[bool] = None, return_features: bool = False):
    """As `models.ResNet.__call__`: logits, pooled features when headless, or a dict of features
    ('stem', 'layer1'.. (each stage's output, before the final norm), 'pre_logits', 'logits')."""
    if x.ndim != 4 or x.shape[-1] != self.in_channels:
      raise ValueError(f"expected NHWC images with {self.in_channels} channels, got shape "
                       f"{tuple(x.shape)}")
    if train is None:
      train = self.is_mutable_collection("batch_stats") and not self.is_initializing()
    conv, norm = self._layers(train)
    features = {}
    x, channels = self._stem(x, conv, norm)
    features["stem"] = x
    index, total = 0, sum(self.stage_sizes)
    for i, (depth, width) in enumerate(zip(self.stage_sizes, self.stage_widths)):
      out_channels = make_divisible(width * self.width_factor)
      for j in range(depth):
        strides = 2 if i > 0 and j == 0 else 1
        rate = self.drop_path_rate * index / max(total - 1, 1)
        x = PreActBlock(
            out_channels, conv, norm, bottleneck=self.bottleneck,
            bottle_ratio=0.25 if self.bottleneck else 1.0, strides=strides,
            # timm's basic blocks project only where the shape changes, its bottlenecks always.
            projection=j == 0 and (self.bottleneck or strides != 1 or channels != out_channels),
            avg_down=self.avg_down,
            drop_path=functools.partial(DropPath, rate, not train) if rate > 0 else None,
            name=f"stages_{i}_blocks_{j}")(x)
        channels, index = out_channels, index + 1
      features[f"layer{i + 1}"] = x
    x = nn.relu(norm(name="norm")(x))
    x = jnp.mean(x.astype(jnp.float32), axis=(1, 2))
    features["pre_logits"] = x
    if self.drop_rate:
      x = nn.Dropout(self.drop_rate, deterministic=not train)(x)
    if self.num_classes:
      # timm's head is a 1x1 conv with bias ('head.fc'), initialised N(0, 0.01) and zero.
      x = nn.Conv(self.num_classes, (1, 1), kernel_init=nn.initializers.normal(0.01),
                  dtype=self.dtype, param_dtype=self.param_dtype, name="head_fc")(x[:, None, None])
      x = x[:, 0, 0].astype(jnp.float32)
      features["logits"] = x
    return features if return_features else x


BASIC_V2 = dict(bottleneck=False, stage_widths=(64, 128, 256, 512))
DV2 = dict(stem="deep", avg_down=True)
BIT = dict(norm="group", std_conv_eps=1e-8, stem_pool_pad="zeros")
# name -> (stage sizes, options), as timm's resnetv2 entry points define them.
TIMM_RESNETV2S = {
    "resnetv2_18": ((2, 2, 2, 2), BASIC_V2), "resnetv2_18d": ((2, 2, 2, 2), dict(BASIC_V2, **DV2)),
    "resnetv2_34": (R34, BASIC_V2), "resnetv2_34d": (R34, dict(BASIC_V2, **DV2)),
    "resnetv2_50": (R50, {}), "resnetv2_50d": (R50, DV2),
    "resnetv2_50t": (R50, dict(stem="tiered", avg_down=True)),
    "resnetv2_101": (R101, {}), "resnetv2_101d": (R101, DV2),
    "resnetv2_152": (R152, {}), "resnetv2_152d": (R152, DV2),
    "resnetv2_50d_gn": (R50, dict(DV2, norm="group")),
    "resnetv2_50x1_bit": (R50, dict(BIT, width_factor=1)),
    "resnetv2_50x3_bit": (R50, dict(BIT, width_factor=3)),
    "resnetv2_101x1_bit": (R101, dict(BIT, width_factor=1)),
    "resnetv2_101x3_bit": (R101, dict(BIT, width_factor=3)),
    "resnetv2_152x2_bit": (R152, dict(BIT, width_factor=2)),
    "resnetv2_152x4_bit": (R152, dict(BIT, width_factor=4)),
}


def timm_names() -> list[str]:
  """Every timm name the zoo builds, sorted: its own entries and the torchvision ones timm shares."""
  return sorted(set(TIMM_RESNETS) | set(SAME_AS_TORCHVISION) | set(TIMM_RESNETV2S))


for _name, (_sizes, _options) in TIMM_RESNETV2S.items():
  register_model(_name, functools.partial(ResNetV2, stage_sizes=_sizes, **_options))

for _name, (_block, _sizes, _options) in TIMM_RESNETS.items():
  # timm zero-initialises each block's last norm (its `zero_init_last=True`).
  register_model(_name, functools.partial(ResNet, block=_block, stage_sizes=_sizes,
                                          zero_init_residual=True, **_options))
