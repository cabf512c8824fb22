r"""timm's "ResNet strikes back" A1 recipe for ResNet-50 (Wightman, Touvron, Jegou 2021; 80.4% top-1).

Table 1 of the paper, setting by setting (A1 / A2 / A3 where they differ; `rsb_settings` holds them):

  Train Res 224 / 224 / 160                 image_size 224; train_crop_size 160 for A3
  Test Res 224, Test crop ratio 0.95        val_crop_size 224, eval_crop_fraction 0.95,
                                            val_resize_size 235 (timm: floor(224 / 0.95)),
                                            val_interpolation "bicubic" (timm's evaluation of
                                            resnet50: its pretrained_cfg, a1_in1k's)
  Epochs 600 / 300 / 100                    num_epochs
  Batch size 2048                           batch_size = 2048 (global)
  Optimizer LAMB                            optimizer = "lamb" (decay excludes BatchNorm and biases,
                                            as timm's filter_bias_and_bn)
  LR 5e-3 / 5e-3 / 8e-3                     learning_rate (base_learning_rate x 2048 / 256)
  decay rate cosine                         lr_schedule = "cosine"
  Weight decay 0.01 / 0.02 / 0.02           weight_decay
  Warmup epochs 5                           warmup = 5 (linear from 0; timm starts at its
                                            --warmup-lr, ~1e-6 of these rates)
  Label smoothing 0.1 / - / -               label_smoothing
  Dropout -                                 drop_rate = 0
  Stoch. Depth 0.05 / 0.05 / -              drop_path_rate (a model argument of timm's models)
  Repeated Aug yes / yes / -                ra_sampler (ra_reps 3, timm's default)
  Gradient Clip -                           clip_grad_norm = 0
  H. flip, RRC                              augment = "torchvision" (random-resized crop + flip)
  Rand Augment 7/0.5 / 7/0.5 / 6/0.5        auto_augment = "rand-m7-mstd0.5-inc1" ("rand-m6-..." for
                                            A3): timm's RandAugment (resnet_jax/data/timm_augment.py), its
                                            'random' bilinear/bicubic filter, the mean as fill
  Auto Augment, Erasing, ColorJitter, EMA -  auto-augment policies off, random_erase 0, model_ema off
  Mixup alpha 0.2 / 0.1 / 0.1               mixup_alpha
  Cutmix alpha 1.0                          cutmix_alpha = 1.0 (one of the two per batch, p 0.5)
  CE loss - / BCE loss yes                  loss = "bce", bce_target_threshold = 0.2 (timm's
                                            --bce-target-thresh 0.2)
  Mixed precision yes                       dtype = "auto" (bfloat16 on accelerators)

Known differences: timm's training crop (RandomResizedCrop) resizes with a random filter
(bilinear or bicubic), ours is bilinear (torchvision's). The evaluation resize is bicubic, as timm's
(`val_interpolation`, recorded in the checkpoints' model description, so `resnet-jax predict` and
`evaluate` on the run's workdir feed the model as its own evaluation did).

  python train.py --config configs/imagenet_resnet50_rsb_a1.py --workdir runs/imagenet_resnet50_rsb_a1 \
      --config.data_dir=~/tensorflow_datasets
"""

import ml_collections

from resnet_jax.configs import imagenet_resnet50

# name -> Table 1's column: (epochs, train crop, lr at 2048, weight decay, label smoothing,
# stochastic depth, repeated augmentation, RandAugment magnitude (of 10), mixup alpha).
RSB_SETTINGS = {
    "a1": (600, 224, 5e-3, 0.01, 0.1, 0.05, True, 7, 0.2),
    "a2": (300, 224, 5e-3, 0.02, 0.0, 0.05, True, 7, 0.1),
    "a3": (100, 160, 8e-3, 0.02, 0.0, 0.0, False, 6, 0.1),
}
BATCH_SIZE = 2048
TEST_CROP_PCT = 0.95


def rsb_config(name: str) -> ml_collections.ConfigDict:
  """The config of "ResNet strikes back" procedure `name` ('a1', 'a2', 'a3'): Table 1's column."""
  epochs, crop, lr, weight_decay, smoothing, drop_path, repeated, magnitude, mixup = RSB_SETTINGS[name]
  config = imagenet_resnet50.get_config()
  config.num_epochs = float(epochs)
  config.train_crop_size = 0 if crop == 224 else crop
  config.image_size = 224
  config.val_crop_size = 224
  config.eval_crop_fraction = TEST_CROP_PCT
  config.val_resize_size = int(224 / TEST_CROP_PCT)  # timm: floor(224 / 0.95) = 235.
  config.val_interpolation = "bicubic"
  config.batch_size = BATCH_SIZE
  config.base_learning_rate = lr * 256 / BATCH_SIZE
  config.optimizer = "lamb"
  config.lr_schedule = "cosine"
  config.weight_decay = weight_decay
  config.warmup = 5.0
  config.warmup_type = "linear"
  config.warmup_factor = 0.0
  config.label_smoothing = smoothing
  config.drop_rate = 0.0
  config.drop_path_rate = drop_path
  config.ra_sampler = repeated
  config.ra_reps = 3
  config.augment = "torchvision"
  config.auto_augment = f"rand-m{magnitude}-mstd0.5-inc1"
  config.mixup_alpha = mixup
  config.cutmix_alpha = 1.0
  config.loss = "bce"
  config.bce_target_threshold = 0.2
  config.random_erase = 0.0
  config.model_ema = False
  config.clip_grad_norm = 0.0
  return config


def get_config() -> ml_collections.ConfigDict:
  return rsb_config("a1")
