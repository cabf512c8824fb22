"""The paper's CIFAR-10 recipe (sec. 4.2) for ResNet-110 (1.7M parameters, 6.43% error).

As the paper, lr 0.01 "to warm up the training until the training error is below 80% (about 400
iterations)", then 0.1 and the usual schedule:

  python train.py --config configs/cifar10_resnet110.py --workdir runs/cifar10_resnet110
"""

import ml_collections

from resnet_jax.configs import cifar10_resnet20


def get_config() -> ml_collections.ConfigDict:
  config = cifar10_resnet20.get_config(depth=110)
  config.warmup = 400.0
  config.warmup_type = "constant"
  config.warmup_factor = 0.1
  return config
