r"""timm's "ResNet strikes back" A3 recipe for ResNet-50 (Wightman, Touvron, Jegou 2021; 78.1% top-1).

Table 1's A3 column, setting by setting, is in resnet_jax/configs/imagenet_resnet50_rsb_a1.py
(`RSB_SETTINGS['a3']`), with the known differences from timm's runs.

  python train.py --config configs/imagenet_resnet50_rsb_a3.py --workdir runs/imagenet_resnet50_rsb_a3 \
      --config.data_dir=~/tensorflow_datasets
"""

import ml_collections

from resnet_jax.configs.imagenet_resnet50_rsb_a1 import rsb_config


def get_config() -> ml_collections.ConfigDict:
  return rsb_config("a3")
