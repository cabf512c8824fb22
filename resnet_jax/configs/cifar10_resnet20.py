"""The paper's CIFAR-10 recipe (He et al., 2016, sec. 4.2) for ResNet-20 (0.27M parameters, 8.75% error).

Batch 128, lr 0.1 divided by 10 at 32k and 48k iterations, stop at 64k, weight decay 1e-4,
momentum 0.9; train on 45k images and validate on the other 5k; 4-pixel padding, random 32x32
crops and flips. Prepare cifar10 once (`tfds build cifar10 --file_format=array_record`), then:

  python train.py --config configs/cifar10_resnet20.py --workdir runs/cifar10_resnet20

Add `--config.eval_split=test` for the final test-set error the paper reports.
"""

import ml_collections

from resnet_jax.configs import default

CIFAR10_MEAN = (125.307, 122.961, 113.8575)
CIFAR10_STD = (62.9932, 62.0887, 66.7048)


def get_config(depth: int = 20) -> ml_collections.ConfigDict:
  """Shared by the CIFAR ResNet-20/56/110 recipes."""
  config = default.get_config()
  config.model = f"resnet{depth}"
  config.source = "tfds"
  config.dataset = "cifar10"
  config.train_split = "train[:45000]"
  config.eval_split = "train[45000:]"
  config.image_size = 32
  config.augment = "cifar"
  config.eval_crop_fraction = 1.0
  config.mean = CIFAR10_MEAN
  config.std = CIFAR10_STD
  config.batch_size = 128
  config.base_learning_rate = 0.2  # 0.1 at batch 128.
  config.schedule_unit = "steps"
  config.lr_boundaries = (32_000, 48_000)
  config.num_train_steps = 64_000
  config.eval_every_steps = 2_000
  config.checkpoint_every_steps = 2_000
  return config
