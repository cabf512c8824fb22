"""Trains a ResNet: `python train.py --config configs/digits.py --workdir runs/digits`.

The same as `resnet-jax train`, which also takes a recipe's name
(`--config digits`). Any config key can be overridden, e.g. `--config.batch_size=128
--config.parallelism=pmap`; an unknown key is an error. Restarting with the same workdir resumes from
its latest checkpoint. The command line is parsed in resnet_jax/cli.py, the training is
resnet_jax/training/train_lib.py's.
"""

import sys

# `python path/to/train.py` puts the script's folder first on sys.path, so config files outside the
# package can import the checkout's `configs` package wherever train.py is started from.
from resnet_jax.cli import train_main

if __name__ == "__main__":
  sys.exit(train_main(sys.argv[1:], prog="train.py"))
