"""timm's ResNet family (`timm.models.resnet`) under timm's names, in the zoo's one registry.

Each entry is the zoo's `models.ResNet` with timm's options; the names, depths and widths are those
timm registers. Letters in a name are Bag of Tricks' variants (He et al. 2019, sec. 4): 'c' a deep
3x3 stem, 'd' the deep stem plus average-pool shortcuts, 's' a wider deep stem, 't' a tiered deep
stem plus average-pool shortcuts; 'aa' and 'blur' anti-aliased downsampling; 'se'/'eca' attention.
"""

from __future__ import annotations

import functools

from resnet_jax.models import BasicBlock, Bottleneck, ResNet, register_model

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
}


def timm_names() -> list[str]:
  """Every timm name the zoo builds, sorted: its own entries and the torchvision ones timm shares."""
  return sorted(set(TIMM_RESNETS) | set(SAME_AS_TORCHVISION))


for _name, (_block, _sizes, _options) in TIMM_RESNETS.items():
  # timm zero-initialises each block's last norm (its `zero_init_last=True`).
  register_model(_name, functools.partial(ResNet, block=_block, stage_sizes=_sizes,
                                          zero_init_residual=True, **_options))
