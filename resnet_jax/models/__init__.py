"""The architectures: layers, one file per family, the registry, complexity and BatchNorm folding.

The lowest layer: it imports JAX and Flax only, nothing of `resnet_jax.data`, `.weights` or `.training`
(tests/test_layers.py checks). Every family registers its names in one registry (`resnet.py`'s), so
`get_model(name)` and `list_models()` see them all once this package is imported.
"""

from resnet_jax.models.resnet import (COMPUTE_DTYPES, BasicBlock, BatchNorm, Bottleneck, ResidualBlock,
                                      ResNet, compute_dtype, dense_kernel_init, get_model, list_models,
                                      register_model)
from resnet_jax.models import timm_models  # noqa: E402,F401  registers timm's names

__all__ = ["COMPUTE_DTYPES", "BasicBlock", "BatchNorm", "Bottleneck", "ResidualBlock", "ResNet",
           "compute_dtype", "dense_kernel_init", "get_model", "list_models", "register_model"]
