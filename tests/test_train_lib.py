"""Tests of resnet_jax.training.train_lib: schedules, optimizer, device layouts agreeing, evaluation, the loop."""

import json
import math
import os

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import default
from resnet_jax import models
from resnet_jax.training import checkpoints, optim, plot, sharding, steps, train_lib
from resnet_jax.data import image_ops, input_pipeline

TINY = dict(stage_sizes=(1, 1, 1), in_channels=1)


# ----------------------------------------------------------------------------------------------
# Schedules and optimizer.

def test_learning_rate_scales_linearly_with_batch_size():
  config = default.get_config()
  assert config.learning_rate == pytest.approx(0.1)
  config.batch_size = 1024
  assert config.learning_rate == pytest.approx(0.4)


def test_step_schedule_with_linear_warmup():
  fn = optim.learning_rate_schedule(learning_rate=0.4, kind="step", total_steps=100,
                                        boundaries=(30, 60), warmup_steps=10)
  assert [float(fn(s)) for s in (0, 5, 10, 29, 30, 59, 60, 99)] == pytest.approx(
      [0.0, 0.2, 0.4, 0.4, 0.04, 0.04, 0.004, 0.004])


def test_constant_warmup_as_resnet110():
  fn = optim.learning_rate_schedule(learning_rate=0.1, kind="step", total_steps=64000,
                                        boundaries=(32000, 48000), warmup_steps=400,
                                        warmup_type="constant", warmup_factor=0.1)
  assert [float(fn(s)) for s in (0, 399, 400, 31999, 32000, 48000)] == pytest.approx(
      [0.01, 0.01, 0.1, 0.1, 0.01, 0.001])


def test_cosine_schedule():
  fn = optim.learning_rate_schedule(learning_rate=1.0, kind="cosine", total_steps=110,
                                        warmup_steps=10)
  assert float(fn(10)) == pytest.approx(1.0)
  assert float(fn(60)) == pytest.approx(0.5)
  assert float(fn(110)) == pytest.approx(0.0, abs=1e-6)


def test_schedule_boundaries_in_epochs(tiny_config):
  config = tiny_config(schedule_unit="epochs", lr_boundaries=(2, 3), warmup=1.0)
  fn = train_lib.schedule_from_config(config, steps_per_epoch=10.0, total_steps=40)
  assert [float(fn(s)) for s in (5, 10, 19, 20, 30)] == pytest.approx([0.05, 0.1, 0.1, 0.01, 0.001])


@pytest.mark.parametrize("exclude", [False, True], ids=["decay_all", "exclude_bn_bias"])
def test_weight_decay_is_in_the_optimizer(exclude):
  params = {"conv": {"kernel": jnp.ones((3, 3, 1, 2))}, "bn": {"scale": jnp.ones(2)}}
  tx = optim.create_sgd(optax.constant_schedule(0.1), momentum=0.9, nesterov=False,
                                  weight_decay=1e-4, exclude_bn_and_bias=exclude)
  zero = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zero, tx.init(params), params)
  np.testing.assert_allclose(updates["conv"]["kernel"], -0.1 * 1e-4, rtol=1e-6)
  np.testing.assert_allclose(updates["bn"]["scale"], 0.0 if exclude else -0.1 * 1e-4, rtol=1e-6)


def test_nesterov_differs_from_heavy_ball():
  params = {"w": jnp.ones(2)}
  grads = {"w": jnp.ones(2)}
  out = []
  for nesterov in (False, True):
    tx = optim.create_sgd(optax.constant_schedule(1.0), momentum=0.9, nesterov=nesterov,
                                    weight_decay=0.0, exclude_bn_and_bias=False)
    out.append(float(tx.update(grads, tx.init(params), params)[0]["w"][0]))
  assert out == pytest.approx([-1.0, -1.9])


def test_label_smoothing():
  logits = jnp.array([[10.0, 0.0, 0.0]])
  plain = float(steps.cross_entropy(logits, jnp.array([0]))[0])
  smooth = float(steps.cross_entropy(logits, jnp.array([0]), label_smoothing=0.3)[0])
  assert smooth > plain > 0


# ----------------------------------------------------------------------------------------------
# One device, a sharded jit step and a pmap step compute the same thing.

STEPS = 3
GLOBAL_BATCH = 16


def _batches():
  rng = np.random.default_rng(0)
  return [{"image": rng.integers(0, 256, (GLOBAL_BATCH, 8, 8, 1), np.uint8),
           "label": rng.integers(0, 10, GLOBAL_BATCH).astype(np.int32)} for _ in range(STEPS)]


def _train(mode, devices=None, sync=True):
  """Trains STEPS steps from the same initial state; returns (host state, losses)."""
  chex.clear_trace_counter()
  axis = sharding.PMAP_AXIS if mode == "pmap" and sync else None
  model = models.get_model("resnet20", num_classes=10, axis_name=axis, **TINY)
  tx = optim.create_sgd(optax.constant_schedule(0.1), momentum=0.9, nesterov=False,
                                  weight_decay=1e-4, exclude_bn_and_bias=False)
  state = train_lib.initial_state(model, tx, (8, 8, 1), seed=0)
  bound = dict(model=model, tx=tx, schedule=optax.constant_schedule(0.1), mean=(84.0,),
               std=(105.0,), average_batch_stats=mode == "pmap" and not sync)

  # A def (not a partial) for chex: a second trace would mean a recompilation between steps.
  @chex.assert_max_traces(n=1)
  def step(state, batch, axis_name=None):
    return steps.train_step(state, batch, axis_name=axis_name, **bound)

  layout = sharding.Layout(mode, devices)
  train_fn, _ = layout.compile(step, steps.eval_step)
  state = layout.put_state(state)
  losses = []
  for batch in _batches():
    state, metrics = train_fn(state, layout.put_batch(batch))
    losses.append(layout.scalars(metrics)["loss"])
  return layout.get_state(state), losses


@pytest.fixture(scope="module")
def single_device_run():
  return _train("jit", jax.devices()[:1])


# Float32 with 'highest' matmuls; the layouts differ only in the order of the batch reductions
# (per-device partial sums vs one sum), which moves results by a few ulps per step.
TOLERANCE = dict(rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", ["jit", "pmap"], ids=["jit_sharded_8", "pmap_8_sync_bn"])
def test_device_layouts_agree_with_one_device(mode, single_device_run):
  assert jax.device_count() == 8
  (ref_state, ref_losses), (state, losses) = single_device_run, _train(mode)
  np.testing.assert_allclose(losses, ref_losses, **TOLERANCE)
  chex.assert_trees_all_close(state.params, ref_state.params, **TOLERANCE)
  # The running statistics are those of the global batch of 16, not of each device's 2 images.
  chex.assert_trees_all_close(state.batch_stats, ref_state.batch_stats, **TOLERANCE)
  assert int(state.step) == STEPS


def test_per_device_batch_norm_is_not_global(single_device_run):
  """The control for the test above: without SyncBN each device normalises with its own 2 images'
  statistics, and the results leave the tolerance the synchronised layouts meet."""
  state, losses = _train("pmap", sync=False)
  ref_state, ref_losses = single_device_run
  assert losses[0] != pytest.approx(ref_losses[0], rel=TOLERANCE["rtol"])
  with pytest.raises(AssertionError):
    chex.assert_trees_all_close(state.batch_stats, ref_state.batch_stats, **TOLERANCE)


def test_bfloat16_compute_keeps_float32_parameters_and_loss():
  assert models.compute_dtype("auto") == jnp.float32  # On CPU; bfloat16 on GPU/TPU.
  model = models.get_model("resnet20", num_classes=10, dtype=jnp.bfloat16, **TINY)
  tx = optax.sgd(0.1)
  state = train_lib.initial_state(model, tx, (8, 8, 1), seed=0)
  batch = _batches()[0]
  new_state, metrics = jax.jit(lambda s, b: steps.train_step(
      s, b, model=model, tx=tx, schedule=optax.constant_schedule(0.1), mean=(84.0,),
      std=(105.0,)))(state, batch)
  chex.assert_trees_all_equal_dtypes(new_state.params, state.params)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves((new_state.params, new_state.batch_stats)))
  assert metrics["loss"].dtype == jnp.float32 and np.isfinite(float(metrics["loss"]))


# ----------------------------------------------------------------------------------------------
# Evaluation.

@pytest.mark.parametrize("mode", ["jit", "pmap"])
def test_evaluation_counts_every_example_once(mode):
  """37 examples with a global batch of 16 (8 devices): 3 batches, the last one 5 real + 11 padding."""
  rng = np.random.default_rng(1)
  source = input_pipeline.InMemorySource(rng.integers(0, 256, (37, 8, 8, 1), np.uint8),
                                         rng.integers(0, 10, 37), num_classes=10)
  model = models.get_model("resnet20", num_classes=10, **TINY)
  tx = optax.sgd(0.1)
  state = train_lib.initial_state(model, tx, (8, 8, 1), seed=0)
  layout = sharding.Layout(mode)
  _, eval_fn = layout.compile(steps.train_step,
                              lambda s, b, axis_name: steps.eval_step(
                                  s, b, model=model, mean=(84.0,), std=(105.0,), axis_name=axis_name))
  ds = input_pipeline.eval_dataset(source, global_batch_size=16, image_size=8, eval_protocol="center",
                                   crop_fraction=1.0)
  batches = input_pipeline.DeviceIterator(ds, layout.put_batch, prefetch=2, num_threads=1)
  result = train_lib.evaluate(eval_fn, layout.put_state(state), batches, layout)
  assert result["count"] == 37

  # The same numbers computed on all 37 at once.
  images = image_ops.normalize(source.images, (84.0,), (105.0,))
  logits = model.apply({"params": state.params, "batch_stats": state.batch_stats}, images)
  logits, labels = np.asarray(logits), source.labels
  assert result["top1"] == pytest.approx(float(np.mean(np.argmax(logits, -1) == labels)), abs=1e-6)
  top5 = np.argsort(-logits, -1)[:, :5]
  assert result["top5"] == pytest.approx(float(np.mean(np.any(top5 == labels[:, None], -1))), abs=1e-6)
  loss = steps.cross_entropy(logits, labels).mean()
  assert result["loss"] == pytest.approx(float(loss), rel=1e-5)


def test_multi_crop_eval_averages_crops():
  model = models.get_model("resnet20", num_classes=10, **TINY)
  state = train_lib.initial_state(model, optax.sgd(0.1), (8, 8, 1), seed=0)
  rng = np.random.default_rng(2)
  images = rng.integers(0, 256, (4, 8, 8, 1), np.uint8)
  batch = {"image": np.stack([images, images], 1), "label": np.arange(4, dtype=np.int32),
           "mask": np.ones(4, np.float32)}
  single = {"image": images, "label": batch["label"], "mask": batch["mask"]}
  kw = dict(model=model, mean=(84.0,), std=(105.0,))
  two = steps.eval_step(state, batch, **kw)
  one = steps.eval_step(state, single, **kw)
  chex.assert_trees_all_close(two, one, rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# The loop, end to end, and bad input.

def test_train_and_evaluate_writes_metrics_checkpoints_and_plot(tmp_path, tiny_config):
  workdir = str(tmp_path / "run")
  result = train_lib.train_and_evaluate(tiny_config(), workdir)
  assert result["count"] == 360
  assert 0.0 <= result["top1"] <= result["top5"] <= 1.0
  records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  train = [r for r in records if r["split"] == "train"]
  assert [r["step"] for r in train] == list(range(1, 7))
  assert {"loss", "accuracy", "learning_rate"} <= set(train[0])
  assert "images_per_sec" in train[1]  # not in train[0]: step 1 compiles (tests/test_metrics.py)
  assert [r["learning_rate"] for r in train] == pytest.approx([0.1] * 4 + [0.01] * 2)
  assert any(r["split"] == "eval" and r["step"] == 6 for r in records)
  assert any(f.startswith("events.out.tfevents")
             for f in os.listdir(os.path.join(workdir, "tensorboard", "run")))
  with checkpoints.TrainCheckpoints(workdir, keep=None) as ckpts:
    assert ckpts.steps() == [3, 6]
  variables, spec = checkpoints.load_variables(workdir)
  assert (spec.arch, spec.num_classes, spec.in_channels) == ("resnet20", 10, 1)
  assert spec.model_overrides == {"stage_sizes": [1, 1, 1]}
  assert spec.source == {"kind": "training", "workdir": os.path.abspath(workdir), "step": 6}
  config = tiny_config()
  assert (spec.mean_255, spec.std_255, spec.image_size, spec.resize_size) == (
      config.mean, config.std, config.image_size, config.image_size)  # crop fraction 1
  assert spec.class_names == tuple(str(d) for d in range(10))
  png = plot.plot_workdir(workdir)
  assert png.endswith(".png") and os.path.getsize(png) > 1000


def test_global_batch_not_divisible_by_devices(tmp_path, tiny_config):
  with pytest.raises(ValueError, match="not divisible by the 8 devices"):
    train_lib.train_and_evaluate(tiny_config(batch_size=12), str(tmp_path))


@pytest.mark.parametrize("num_classes, expected", [(0, 1000), (7, 7)])
def test_class_count_comes_from_the_config_or_the_source(tiny_config, num_classes, expected):
  """config.num_classes 0 takes the source's count: digits' 10, the synthetic source's ImageNet 1000."""
  synthetic = train_lib.create_data(tiny_config(source="synthetic", num_classes=num_classes,
                                                synthetic_examples=32))
  assert synthetic.num_classes == expected == synthetic.train.num_classes
  assert {synthetic.train[i]["label"] for i in range(32)} <= set(range(expected))
  assert synthetic.image_shape == (8, 8, 1)  # model_overrides.in_channels
  assert train_lib.create_data(tiny_config()).num_classes == 10


def test_missing_dataset_is_a_clear_error(tmp_path, tiny_config):
  config = tiny_config(source="folder", data_dir=str(tmp_path / "nowhere"))
  with pytest.raises(FileNotFoundError, match="does not exist"):
    train_lib.train_and_evaluate(config, str(tmp_path / "run"))


def test_bad_config_values_are_named(tmp_path, tiny_config):
  with pytest.raises(ValueError, match="config.parallelism"):
    train_lib.train_and_evaluate(tiny_config(parallelism="pjit"), str(tmp_path))
  config = tiny_config()
  config.model_overrides = ml_collections.ConfigDict({"stage_size": (1, 1, 1)})
  with pytest.raises(ValueError, match="stage_size"):
    train_lib.train_and_evaluate(config, str(tmp_path))


def test_nan_loss_stops_before_saving(tmp_path, tiny_config):
  """Policy: a non-finite loss stops training with NonFiniteLossError; the state that produced
  it is never saved, and every checkpoint left in the workdir is finite and loadable."""
  workdir = str(tmp_path / "run")
  # Under pmap, so the loop's pmap paths (metrics and checkpointed state off a device axis) run too.
  config = tiny_config(num_train_steps=12, checkpoint_every_steps=2, lr_boundaries=(),
                       parallelism="pmap")
  config.base_learning_rate = 1.6e4  # lr 1000: diverges within a few steps.
  with pytest.raises(train_lib.NonFiniteLossError, match="last checkpoint"):
    train_lib.train_and_evaluate(config, workdir)
  records = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
  assert all(math.isfinite(r["loss"]) for r in records if r["split"] == "train")
  with checkpoints.TrainCheckpoints(workdir, keep=None) as ckpts:
    for step in ckpts.steps():
      state, _ = ckpts.restore_state(step, None)
      assert all(np.isfinite(x).all() for x in jax.tree.leaves(state))
