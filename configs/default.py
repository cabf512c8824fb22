"""Shim: the recipe is resnet_jax/configs/default.py, shipped in the package (one source of truth)."""

from resnet_jax.configs import default as _recipe
from resnet_jax.configs.default import *  # noqa: F401,F403

__doc__ = _recipe.__doc__  # the run command, as `help(configs.default)` and the tests read it
