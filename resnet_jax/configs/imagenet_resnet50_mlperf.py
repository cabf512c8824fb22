r"""MLPerf Training's ResNet-50 v1.5 reference with LARS (target 75.9% top-1), batch 4096.

Source: mlcommons/training, image_classification/README_tensorflow2.md (v1.0 reference, TPU-v3-64
command) and tensorflow2/lars_util.py (its schedule):

  --optimizer=LARS --batch_size=4096 --base_learning_rate=10.0 --lr_schedule=polynomial
  --warmup_epochs=5 --train_epochs=42 --weight_decay=0.0002 --momentum=0.9 --lars_epsilon=0
  --label_smoothing=0.1 --target_accuracy=0.759

  optimizer LARS (trust coefficient 0.001, eps 0; BatchNorm parameters and biases neither decayed
    nor adapted, as its optimizer skips them)  optimizer = "lars"
  batch_size 4096                             batch_size = 4096
  base_learning_rate 10.0 (the peak rate)     learning_rate = 10.0
  polynomial decay, power 2, to 0.0001        lr_schedule = "poly", lr_power = 2.0, lr_end = 1e-4
  warm-up 5 epochs, linear from 0             warmup = 5, warmup_type = "linear", warmup_factor = 0
  train_epochs 42                             num_epochs = 42
  weight_decay 0.0002                         weight_decay = 2e-4
  momentum 0.9                                momentum = 0.9
  label_smoothing 0.1                         label_smoothing = 0.1

Known differences: its polynomial decay spans train_steps - warmup_steps + 1 steps (one more than
here); its crops are TF's distorted bounding boxes (area 0.05-1) where this uses torchvision's
random-resized crop (area 0.08-1); evaluation is the same resize 256 / center 224.

  python train.py --config configs/imagenet_resnet50_mlperf.py --workdir runs/imagenet_resnet50_mlperf \
      --config.data_dir=~/tensorflow_datasets
"""

import ml_collections

from resnet_jax.configs import imagenet_resnet50


def get_config() -> ml_collections.ConfigDict:
  """The V1 recipe (imagenet_resnet50) with the fields MLPerf's command changes (its momentum and
  linear warm-up are already the V1 recipe's)."""
  config = imagenet_resnet50.get_config()
  config.optimizer = "lars"
  config.batch_size = 4096
  config.learning_rate = 10.0  # MLPerf's base_learning_rate is the peak rate, not per 256.
  config.lr_schedule = "poly"
  config.lr_power = 2.0
  config.lr_end = 1e-4
  config.warmup = 5.0
  config.warmup_factor = 0.0
  config.num_epochs = 42.0
  config.weight_decay = 2e-4
  config.label_smoothing = 0.1
  return config
