"""The training recipes, one `get_config()` per module (`resnet-jax train --config NAME`).

They ship inside the package so that an installed wheel can train; the top-level `configs/*.py` of a
checkout are shims that re-export these (`python train.py --config configs/NAME.py`).
"""
