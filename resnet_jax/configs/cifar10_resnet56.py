"""The paper's CIFAR-10 recipe (sec. 4.2) for ResNet-56 (0.85M parameters, 6.97% error).

  python train.py --config configs/cifar10_resnet56.py --workdir runs/cifar10_resnet56
"""

import ml_collections

from resnet_jax.configs import cifar10_resnet20


def get_config() -> ml_collections.ConfigDict:
  return cifar10_resnet20.get_config(depth=56)
