r"""The paper's ImageNet recipe (He et al., 2016, sec. 3.4) for ResNet-50, on TFDS imagenet2012.

Batch 256, lr 0.1 divided by 10 at epochs 30 and 60, 90 epochs, weight decay 1e-4, momentum 0.9,
random-resized crops and flips; evaluated on the 50k validation images (resize 256, center 224).
Prepare imagenet2012 once (see resnet_jax/data/input_pipeline.py), then:

  python train.py --config configs/imagenet_resnet50.py --workdir runs/imagenet_resnet50 \
      --config.data_dir=~/tensorflow_datasets

For batch 1024 add `--config.batch_size=1024 --config.warmup=5` (the lr scales to 0.4).
"""

import ml_collections

from resnet_jax.configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()  # The defaults are this recipe.
  config.model = "resnet50"
  config.source = "tfds"
  config.dataset = "imagenet2012"
  config.checkpoint_every_steps = 2000
  return config
