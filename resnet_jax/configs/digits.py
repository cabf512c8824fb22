"""The embedded default: ResNet-20 on scikit-learn's handwritten digits (no download), ~2 min on a CPU.

1437 training and 360 held-out test images (8x8, one channel), upsampled to 16x16. Run:

  python train.py --config configs/digits.py --workdir runs/digits     # or: make train
"""

import ml_collections

from resnet_jax.configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.model = "resnet20"
  config.model_overrides = ml_collections.ConfigDict({"in_channels": 1})
  config.source = "digits"  # Its splits: 'train' (the default's) and 'test'.
  config.eval_split = "test"
  config.image_size = 16
  config.augment = "none"
  config.eval_crop_fraction = 1.0
  config.mean = (84.0,)
  config.std = (105.0,)
  config.batch_size = 64
  config.base_learning_rate = 0.2  # lr 0.05 at batch 64.
  config.num_epochs = 15.0
  config.lr_boundaries = (9, 13)
  config.log_every_steps = 10
  config.checkpoint_every_steps = 200
  config.num_data_threads = 2
  # With --config.model_ema=True: torchvision's defaults (32, 0.99998) suit 600 epochs of ImageNet;
  # through its adjustment (alpha = (1 - decay) * batch * steps / epochs) these give this 15-epoch
  # run an update every step with alpha 0.043, an average over about one epoch (22 steps).
  config.model_ema_steps = 1
  config.model_ema_decay = 0.99
  return config
