"""ResNet-18 adapted to CIFAR-10 (3x3 stem, no max-pool): the common ~95% baseline, not from the paper.

The paper's CIFAR schedule and augmentation with batch 128 on the full 50k training images,
evaluated on the test split:

  python train.py --config configs/cifar10_resnet18.py --workdir runs/cifar10_resnet18
"""

import ml_collections

from configs import cifar10_resnet20


def get_config() -> ml_collections.ConfigDict:
  config = cifar10_resnet20.get_config()
  config.model = "resnet18_cifar"
  config.train_split = "train"
  config.eval_split = "test"
  config.weight_decay = 5e-4  # The usual value for this model; 1e-4 under-regularises it.
  return config
