r"""torchvision's V2 recipe for ResNet-50 (IMAGENET1K_V2 weights, 80.858% top-1, 95.434% top-5).

Sources: the recipe's command (https://github.com/pytorch/vision/issues/3995#issuecomment-1013906621,
the "new recipe with FixRes" of that issue plus repeated augmentation, PR pytorch/vision#5201) and
the blog post https://pytorch.org/blog/how-to-train-state-of-the-art-models-using-torchvision-latest-primitives/.
torchvision ran, on 8 GPUs:

  torchrun --nproc_per_node=8 train.py --model resnet50 --batch-size 128 --lr 0.5 \
      --lr-scheduler cosineannealinglr --lr-warmup-epochs 5 --lr-warmup-method linear \
      --auto-augment ta_wide --epochs 600 --random-erase 0.1 --weight-decay 0.00002 \
      --norm-weight-decay 0.0 --label-smoothing 0.1 --mixup-alpha 0.2 --cutmix-alpha 1.0 \
      --train-crop-size 176 --model-ema --val-resize-size 232 --ra-sampler --ra-reps 4

Flag by flag (and the defaults of its train.py that the command relies on):

  --model resnet50                      model = "resnet50"
  --batch-size 128 (x 8 GPUs)           batch_size = 1024 (global)
  --lr 0.5                              base_learning_rate = 0.125 -> learning_rate 0.5 at 1024
  --lr-scheduler cosineannealinglr      lr_schedule = "cosine" (T_max = epochs - warm-up, lr-min 0)
  --lr-warmup-epochs 5                  warmup = 5 (schedule_unit "epochs")
  --lr-warmup-method linear             warmup_type = "linear"
  (--lr-warmup-decay 0.01, default)     warmup_factor = 0.01
  --auto-augment ta_wide                auto_augment = "ta_wide"
  --epochs 600                          num_epochs = 600
  --random-erase 0.1                    random_erase = 0.1
  --weight-decay 0.00002                weight_decay = 2e-5
  --norm-weight-decay 0.0               norm_weight_decay = 0.0
  --label-smoothing 0.1                 label_smoothing = 0.1
  --mixup-alpha 0.2                     mixup_alpha = 0.2
  --cutmix-alpha 1.0                    cutmix_alpha = 1.0
  --train-crop-size 176                 train_crop_size = 176
  --model-ema                           model_ema = True
  (--model-ema-steps 32, default)       model_ema_steps = 32
  (--model-ema-decay 0.99998, default)  model_ema_decay = 0.99998
  --val-resize-size 232                 val_resize_size = 232
  (--val-crop-size 224, default)        val_crop_size = 224 (image_size)
  --ra-sampler --ra-reps 4              ra_sampler = True, ra_reps = 4
  (--opt sgd, --momentum 0.9)           optimizer = "sgd", momentum = 0.9
  (--interpolation bilinear, hflip 0.5) augment = "torchvision" (random-resized crop + flip)

Known differences: torchvision steps its learning rate once per epoch, here every step (the same
curve, without the staircase); its EMA counts model_ema_steps from each epoch's start, here from
the start of training (resnet_jax/training/ema.py); RASampler trims each epoch to a multiple of 256 images.

  python train.py --config configs/imagenet_resnet50_tv2.py --workdir runs/imagenet_resnet50_tv2 \
      --config.data_dir=~/tensorflow_datasets
"""

import ml_collections

from resnet_jax.configs import imagenet_resnet50


def get_config() -> ml_collections.ConfigDict:
  """The V1 recipe (imagenet_resnet50) with the fields the command above changes; the others (the
  warm-up's shape, image size, EMA steps and decay, momentum) are already the command's values."""
  config = imagenet_resnet50.get_config()
  config.batch_size = 1024
  config.base_learning_rate = 0.125  # 0.5 at batch 1024.
  config.lr_schedule = "cosine"
  config.warmup = 5.0
  config.warmup_factor = 0.01
  config.num_epochs = 600.0
  config.weight_decay = 2e-5
  config.norm_weight_decay = 0.0
  config.label_smoothing = 0.1
  config.auto_augment = "ta_wide"
  config.random_erase = 0.1
  config.mixup_alpha = 0.2
  config.cutmix_alpha = 1.0
  config.train_crop_size = 176
  config.val_resize_size = 232
  config.val_crop_size = 224
  config.model_ema = True
  config.ra_sampler = True
  config.ra_reps = 4
  return config
