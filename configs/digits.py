"""Shim: the recipe is resnet_jax/configs/digits.py, shipped in the package (one source of truth)."""

from resnet_jax.configs import digits as _recipe
from resnet_jax.configs.digits import *  # noqa: F401,F403

__doc__ = _recipe.__doc__  # the run command, as `help(configs.digits)` and the tests read it
