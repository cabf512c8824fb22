"""Shim: the recipe is resnet_jax/configs/cifar10_resnet110.py, shipped in the package (one source of truth)."""

from resnet_jax.configs import cifar10_resnet110 as _recipe
from resnet_jax.configs.cifar10_resnet110 import *  # noqa: F401,F403

__doc__ = _recipe.__doc__  # the run command, as `help(configs.cifar10_resnet110)` and the tests read it
