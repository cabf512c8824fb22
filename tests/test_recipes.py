"""The modern-recipe keys end to end: FixRes sizes, and the recipe configs against their sources."""

import chex
import jax
import numpy as np
import pytest

from resnet_jax.data import image_ops, input_pipeline
from resnet_jax.training import optim, sharding, steps, train_lib


def test_fixres_sizes_reach_the_batches(tiny_config):
  # torchvision --train-crop-size 12 --val-resize-size 16 --val-crop-size 14 (on 8x8 digits).
  config = tiny_config(train_crop_size=12, val_resize_size=16, val_crop_size=14,
                       augment="torchvision")
  data = train_lib.create_data(config)
  layout = sharding.Layout("jit")
  train = next(train_lib.train_batches(config, data, layout))
  assert train["image"].shape[1:] == (12, 12, 1)
  crop, fraction = train_lib.eval_sizes(config)
  assert crop == 14 and int(round(crop / fraction)) == 16  # center_crop's resize: 16, then 14.
  evaluation = next(train_lib.eval_batches(config, data, layout))
  want = input_pipeline.resize_center_crop(data.eval[0]["image"], 14, fraction)
  np.testing.assert_array_equal(np.asarray(jax.device_get(evaluation["image"]))[0], want)
  assert train_lib.eval_sizes(tiny_config()) == (8, 1.0)  # Unset: image_size, eval_crop_fraction.


def test_repeated_augmentation_deals_copies_as_rasampler():
  source = input_pipeline.InMemorySource(np.arange(32, dtype=np.uint8).reshape(32, 1, 1, 1)
                                         .repeat(4, 1).repeat(4, 2), np.arange(32), num_classes=32)
  kw = dict(global_batch_size=8, image_size=4, augment="torchvision", seed=1, repeats=4)
  whole = input_pipeline.train_dataset(source, **kw)
  labels = np.concatenate([whole[i]["label"] for i in range(8)])  # Two epochs of 32.
  # Each epoch: 8 distinct images (the first quarter of its shuffle), 4 copies in a row.
  for epoch in labels.reshape(2, 32):
    np.testing.assert_array_equal(epoch, np.repeat(epoch[::4], 4))
    assert len(set(epoch)) == 8
  assert set(labels[:32]) != set(labels[32:])  # A new shuffle each epoch.
  # Four processes: process p gets copy p of each image, as RASampler's rank-strided indices.
  parts = [input_pipeline.train_dataset(source, process_index=p, process_count=4, **kw)[0]["label"]
           for p in range(4)]
  for p in range(4):
    np.testing.assert_array_equal(parts[p], labels[p:8:4])  # Global batch 0: 2 images x 4.


def test_tv2_recipe_carries_torchvision_s_command():
  from configs import imagenet_resnet50_tv2 as tv2
  c = tv2.get_config()
  want = {"learning_rate": 0.5, "batch_size": 8 * 128, "lr_schedule": "cosine", "warmup": 5,
          "warmup_type": "linear", "warmup_factor": 0.01, "auto_augment": "ta_wide",
          "num_epochs": 600, "random_erase": 0.1, "weight_decay": 2e-5, "norm_weight_decay": 0.0,
          "label_smoothing": 0.1, "mixup_alpha": 0.2, "cutmix_alpha": 1.0, "train_crop_size": 176,
          "model_ema": True, "model_ema_steps": 32, "model_ema_decay": 0.99998,
          "val_resize_size": 232, "val_crop_size": 224, "ra_sampler": True, "ra_reps": 4,
          "optimizer": "sgd", "momentum": 0.9, "augment": "torchvision", "schedule_unit": "epochs"}
  assert {k: c[k] for k in want} == want
  # Every flag of the quoted command has its line in the docstring's flag-by-flag table.
  command = tv2.__doc__.split("torchrun")[1].split("Flag by flag")[0]
  flags = {w for w in command.split() if w.startswith("--") and w != "--nproc_per_node=8"}
  table = tv2.__doc__.split("Flag by flag")[1]
  assert all(f"  {flag}" in table or f" {flag} " in table for flag in flags), flags


def test_mlperf_recipe_is_its_reference():
  from configs import imagenet_resnet50_mlperf as mlperf
  c = mlperf.get_config()
  want = {"optimizer": "lars", "batch_size": 4096, "learning_rate": 10.0, "lr_schedule": "poly",
          "lr_power": 2.0, "lr_end": 1e-4, "warmup": 5, "warmup_factor": 0.0, "num_epochs": 42,
          "weight_decay": 2e-4, "momentum": 0.9, "label_smoothing": 0.1}
  assert {k: c[k] for k in want} == want


def _one_step(norm, accum, devices=None):
  from test_train_lib import TINY
  import optax
  from resnet_jax import models
  extra = {"norm_groups": 4} if norm == "group" else {}  # resnet20 starts with 16 channels.
  model = models.get_model("resnet20", num_classes=10, norm=norm, **TINY, **extra)
  tx = optim.create_sgd(optax.constant_schedule(0.1), momentum=0.9, nesterov=False,
                                  weight_decay=1e-4, exclude_bn_and_bias=False)
  state = train_lib.initial_state(model, tx, (8, 8, 1), seed=0)
  source = input_pipeline.digits("train")
  batch = {"image": np.stack([source[i]["image"] for i in range(16)]),
           "label": np.asarray([source[i]["label"] for i in range(16)], np.int32)}
  step = lambda s, b, axis_name=None: steps.train_step(
      s, b, model=model, tx=tx, schedule=optax.constant_schedule(0.1), mean=(84.0,), std=(105.0,),
      axis_name=axis_name, grad_accum_steps=accum)
  layout = sharding.Layout("jit", devices)
  train_fn, _ = layout.compile(step, steps.eval_step)
  new, metrics = train_fn(layout.put_state(state), layout.put_batch(batch))
  return layout.get_state(new), layout.scalars(metrics), (model, state, batch)


def test_gradient_accumulation_with_group_norm_equals_the_big_batch():
  big, big_metrics, _ = _one_step("group", 1)  # 16 examples over 8 devices, sharded.
  small, small_metrics, _ = _one_step("group", 4)
  # float32 sums in another order: a few ulp of the step's 0.1 * gradient.
  chex.assert_trees_all_close(small.params, big.params, rtol=1e-5, atol=1e-6)
  assert small_metrics["loss"] == pytest.approx(big_metrics["loss"], rel=1e-5)
  assert small_metrics["accuracy"] == big_metrics["accuracy"]


def test_gradient_accumulation_updates_batch_norm_once_per_micro_batch():
  new, _, (model, state, batch) = _one_step("batch", 2, jax.devices()[:1])
  images = image_ops.normalize(batch["image"], (84.0,), (105.0,))
  stats = state.batch_stats
  for j in range(2):  # Micro-batch j: examples j, j + 2, ...; applied in turn, as two torch steps.
    _, updates = model.apply({"params": state.params, "batch_stats": stats}, images[j::2],
                             train=True, mutable=["batch_stats"])
    stats = updates["batch_stats"]
  chex.assert_trees_all_close(new.batch_stats, stats, rtol=1e-6, atol=1e-7)
