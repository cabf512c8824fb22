"""`python -m resnet_jax.train`: the same as `resnet-jax train` (the command line is parsed in
resnet_jax/cli.py, recipes are loaded by resnet_jax/configs, training is train_lib's).

  python -m resnet_jax.train --config digits --workdir runs/digits [--config.key=value ...]
"""

import sys

from resnet_jax.cli import train_main as main

if __name__ == "__main__":
  sys.exit(main(prog="python -m resnet_jax.train"))
