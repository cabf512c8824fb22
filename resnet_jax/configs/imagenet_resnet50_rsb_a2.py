r"""timm's "ResNet strikes back" A2 recipe for ResNet-50 (Wightman, Touvron, Jegou 2021; 79.8% top-1).

Table 1's A2 column, setting by setting, is in resnet_jax/configs/imagenet_resnet50_rsb_a1.py
(`RSB_SETTINGS['a2']`), with the known differences from timm's runs.

  python train.py --config configs/imagenet_resnet50_rsb_a2.py --workdir runs/imagenet_resnet50_rsb_a2 \
      --config.data_dir=~/tensorflow_datasets
"""

import ml_collections

from resnet_jax.configs.imagenet_resnet50_rsb_a1 import rsb_config


def get_config() -> ml_collections.ConfigDict:
  return rsb_config("a2")
