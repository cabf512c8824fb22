"""Shim: the recipe is resnet_jax/configs/synthetic_benchmark.py, shipped in the package (one source of truth)."""

from resnet_jax.configs import synthetic_benchmark as _recipe
from resnet_jax.configs.synthetic_benchmark import *  # noqa: F401,F403

__doc__ = _recipe.__doc__  # the run command, as `help(configs.synthetic_benchmark)` and the tests read it
