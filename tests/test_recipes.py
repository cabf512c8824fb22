"""The modern-recipe keys end to end: FixRes sizes, and the recipe configs against their sources."""

import jax
import numpy as np

from resnet_jax import input_pipeline, train_lib
from test_train_lib import tiny_config


def test_fixres_sizes_reach_the_batches():
  # torchvision --train-crop-size 12 --val-resize-size 16 --val-crop-size 14 (on 8x8 digits).
  config = tiny_config(train_crop_size=12, val_resize_size=16, val_crop_size=14,
                       augment="torchvision")
  data = train_lib.create_data(config)
  layout = train_lib.Layout("jit")
  train = next(train_lib.train_batches(config, data, layout))
  assert train["image"].shape[1:] == (12, 12, 1)
  crop, fraction = train_lib.eval_sizes(config)
  assert crop == 14 and int(round(crop / fraction)) == 16  # center_crop's resize: 16, then 14.
  evaluation = next(train_lib.eval_batches(config, data, layout))
  want = input_pipeline.center_crop(data.eval[0]["image"], 14, fraction)
  np.testing.assert_array_equal(np.asarray(jax.device_get(evaluation["image"]))[0], want)
  assert train_lib.eval_sizes(tiny_config()) == (8, 1.0)  # Unset: image_size, eval_crop_fraction.
