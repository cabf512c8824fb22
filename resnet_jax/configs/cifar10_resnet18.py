r"""ResNet-18 adapted to CIFAR-10 (3x3 stem, no max-pool) with the common strong recipe: 95.44% test.

Source: kuangliu/pytorch-cifar (README: ResNet18 95.44%; main.py): SGD lr 0.1, momentum 0.9,
weight decay 5e-4, batch 128, cosine annealing over 200 epochs, 4-pixel pad + random crop + flip,
trained on all 50k training images and evaluated on the test split:

  python train.py --config configs/cifar10_resnet18.py --workdir runs/cifar10_resnet18

Modern additions on top (not part of that published figure): `--config.auto_augment=ta_wide`
(TrivialAugment, as torchvision's V2 recipe), `--config.label_smoothing=0.1`, `--config.model_ema=True`.
"""

import ml_collections

from resnet_jax.configs import cifar10_resnet20


def get_config() -> ml_collections.ConfigDict:
  config = cifar10_resnet20.get_config()
  config.model = "resnet18_cifar"
  config.train_split = "train"
  config.eval_split = "test"
  config.weight_decay = 5e-4  # The usual value for this model; 1e-4 under-regularises it.
  config.lr_schedule = "cosine"
  config.schedule_unit = "epochs"
  config.num_epochs = 200.0
  config.num_train_steps = -1
  config.lr_boundaries = ()
  config.eval_every_steps = 0  # Once per epoch.
  return config
