"""Training and evaluation: the loop, pure steps, optimizers, EMA, sharding, checkpoints, metrics, config rules.

The top library layer: it may import `resnet_jax.models`, `.data` and `.weights`; only the command line
(`resnet_jax/cli.py`, `train.py`) imports it (tests/test_layers.py checks).
"""
