"""Shim: the recipe is resnet_jax/configs/imagenet_resnet50_rsb_a2.py, shipped in the package (one source of truth)."""

from resnet_jax.configs import imagenet_resnet50_rsb_a2 as _recipe
from resnet_jax.configs.imagenet_resnet50_rsb_a2 import *  # noqa: F401,F403

__doc__ = _recipe.__doc__  # the run command, as `help(configs.imagenet_resnet50_rsb_a2)` and the tests read it
