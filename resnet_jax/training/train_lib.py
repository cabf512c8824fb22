"""The training loop: a run set up from its config, then steps, evaluations and checkpoints."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import math
import os
from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import serialization, traverse_util

from resnet_jax import models
from resnet_jax.data import autoaugment, input_pipeline, mixup
from resnet_jax.training import checkpoints, config_checks, ema, optim, workdir_lock
from resnet_jax.training import logs, sharding, steps
from resnet_jax.training.metrics import MetricWriter, Throughput, describe_evaluation, interval_means
from resnet_jax.weights import spec as spec_lib

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
  """The loss or the updated state became NaN or infinite: the recipe diverged."""


# Errors in what the user gave (config values, the workdir's state) and a recipe that diverged:
# train.py prints one line (with ValueError, OSError and ImportError in general).
USER_ERRORS = (config_checks.ConfigError, checkpoints.CheckpointError, workdir_lock.WorkdirBusyError,
               NonFiniteLossError)


# ----------------------------------------------------------------------------------------------
# The state at the start: fresh, or with pretrained weights merged in.

def initial_state(model: models.ResNet, tx: optax.GradientTransformation, image_shape: tuple,
                  seed: int, model_ema: bool = False) -> steps.TrainState:
  """A fresh state on the host (numpy), the same on every process for the same seed; with
  `model_ema`, an EMA of the weights beside them."""
  @jax.jit
  def init(rng):
    variables = model.init(rng, jnp.zeros((1, *image_shape), model.dtype), train=False)
    params = variables["params"]
    batch_stats = variables.get("batch_stats", {})
    return steps.TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                      opt_state=tx.init(params),
                      ema=ema.init(params, batch_stats) if model_ema else None)
  # RBG rather than the default threefry: XLA:CPU takes ~15 s to compile threefry's normal samples
  # for a small ResNet's parameter shapes and ~2 s for RBG. Still deterministic per seed and backend.
  return jax.device_get(init(jax.random.key(seed, impl="rbg")))


def load_pretrained(state: steps.TrainState, directory: str,
                    expected: Optional[spec_lib.ModelSpec] = None) -> steps.TrainState:
  """Replaces `state`'s params and batch_stats with those saved in `directory`.

  `directory` is a `save_variables` checkpoint (e.g. a converted torchvision model) or a training
  workdir. The classifier ('fc') keeps its fresh initialisation when its shape differs (another
  number of classes); any other mismatch is an error. When `expected` (this run's spec) is given, a
  different input channel count is an error and a different normalisation a warning: the features
  were learnt on inputs normalised as the checkpoint's spec says.
  """
  # A directory, or timm's weights by name ('resnet50.a1_in1k').
  variables, theirs_spec = checkpoints.load_model(directory)
  if expected is not None:
    _check_pretrained_input(theirs_spec, expected, directory)
  ours = {"params": state.params, "batch_stats": state.batch_stats}
  flat_ours = traverse_util.flatten_dict(ours)
  flat_theirs = traverse_util.flatten_dict(variables)
  merged = {}
  for path, value in flat_ours.items():
    if path not in flat_theirs:
      raise ValueError(f"init_from {directory}: no variable {'/'.join(path)} in the checkpoint")
    theirs = flat_theirs[path]
    if theirs.shape == value.shape:
      merged[path] = np.asarray(theirs, value.dtype)
    elif path[1] in ("fc", "head_fc"):  # The classifier (a timm ResNetV2's is a 1x1 conv).
      log.info("init_from: new classifier %s %s (checkpoint has %s)", "/".join(path),
                   value.shape, theirs.shape)
      merged[path] = value
    else:
      raise ValueError(f"init_from {directory}: {'/'.join(path)} has shape {theirs.shape}, "
                       f"the model expects {value.shape}")
  loaded = traverse_util.unflatten_dict(merged)
  return state.replace(params=loaded["params"], batch_stats=loaded.get("batch_stats", {}))


def _check_pretrained_input(theirs: spec_lib.ModelSpec, ours: spec_lib.ModelSpec,
                            directory: str) -> None:
  if theirs.in_channels != ours.in_channels:
    raise ValueError(f"init_from {directory}: the checkpoint takes {theirs.in_channels}-channel "
                     f"input, this run {ours.in_channels}-channel")
  if (theirs.mean_255, theirs.std_255) != (ours.mean_255, ours.std_255):
    log.warning("init_from %s: the checkpoint was trained with mean %s, std %s (0-255 scale); this "
                "run normalises with mean %s, std %s", directory, theirs.mean_255, theirs.std_255,
                ours.mean_255, ours.std_255)


# ----------------------------------------------------------------------------------------------
# Setting up a run from the config.

def validate_config(config: ml_collections.ConfigDict) -> None:
  """Errors early, one line naming the key, for values the trainer cannot use (config_checks.RULES)."""
  config_checks.validate(config)


def initialize_distributed(config: ml_collections.ConfigDict) -> None:
  """`jax.distributed.initialize` when configured; empty fields are auto-detected (SLURM, TPU pods,
  Open MPI...). Must run before anything touches a JAX device."""
  d = config.distributed
  if not d.initialize:
    return
  jax.distributed.initialize(coordinator_address=d.coordinator_address or None,
                             num_processes=d.num_processes or None,
                             process_id=d.process_id if d.process_id >= 0 else None)


@dataclasses.dataclass
class Data:
  train: Any
  eval: Any
  num_classes: int
  image_shape: tuple
  class_names: tuple = ()


def create_data(config: ml_collections.ConfigDict) -> Data:
  """The train and eval sources; `config.num_classes` 0 takes the training source's count."""
  image_shape = (config.image_size, config.image_size, config_checks.input_channels(config))
  kw = dict(dataset=config.dataset, data_dir=config.data_dir, image_shape=image_shape,
            num_classes=config.num_classes, synthetic_examples=config.synthetic_examples)
  train = input_pipeline.get_source(config.source, config.train_split, **kw)
  # An image folder's classes are the training split's, whatever folders the other split has.
  evaluation = input_pipeline.get_source(config.source, config.eval_split,
                                         class_names=getattr(train, "class_names", None), **kw)
  num_classes = config.num_classes or train.num_classes
  names = tuple(getattr(train, "class_names", None) or ())
  return Data(train, evaluation, num_classes, image_shape,
              names if len(names) == num_classes else ())


def model_spec(config: ml_collections.ConfigDict, data: Data, workdir: str) -> spec_lib.ModelSpec:
  """What this run's checkpoints hold and how the model is fed: the normalisation, and the crop,
  resize and resize filter of training's center evaluation (`eval_sizes`: FixRes' val sizes when
  set; `val_interpolation`)."""
  overrides = json.loads(json.dumps(config.model_overrides.to_dict()))
  overrides.pop("in_channels", None)  # A field of its own in the spec.
  # Only when set, so that models without stochastic depth or dropout keep building.
  for key in ("drop_path_rate", "drop_rate"):
    if config[key]:
      overrides[key] = float(config[key])
  crop, crop_fraction = eval_sizes(config)
  return spec_lib.ModelSpec(
      arch=config.model, num_classes=data.num_classes, in_channels=config_checks.input_channels(config),
      model_overrides=overrides, image_size=crop, resize_size=int(round(crop / crop_fraction)),
      interpolation=config.val_interpolation, mean_255=tuple(config.mean), std_255=tuple(config.std), class_names=data.class_names,
      source={"kind": "training", "workdir": os.path.abspath(workdir)})


def train_batches(config, data: Data, layout: sharding.Layout) -> input_pipeline.DeviceIterator:
  ds = input_pipeline.train_dataset(
      data.train, global_batch_size=config.batch_size,
      image_size=config.train_crop_size or config.image_size, augment=config.augment,
      seed=config.seed, process_index=jax.process_index(), process_count=jax.process_count(),
      extra_augment=autoaugment.train_policy(
          config.auto_augment, ra_magnitude=config.ra_magnitude,
          augmix_severity=config.augmix_severity, random_erase=config.random_erase,
          erase_value=tuple(config.mean)),
      fast_decode=config.fast_decode, exact_input=config.exact_input,
      repeats=config.ra_reps if config.ra_sampler else 1)
  return input_pipeline.DeviceIterator(ds, layout.put_batch, config.prefetch_batches,
                                       config.num_data_threads, config.data_processes)


def eval_sizes(config) -> tuple[int, float]:
  """(crop size, crop fraction) of evaluation: FixRes's val_crop_size / val_resize_size when set."""
  crop = config.val_crop_size or config.image_size
  return crop, (crop / config.val_resize_size if config.val_resize_size else config.eval_crop_fraction)


def eval_batches(config, data: Data, layout: sharding.Layout) -> input_pipeline.DeviceIterator:
  crop, crop_fraction = eval_sizes(config)
  ds = input_pipeline.eval_dataset(
      data.eval, global_batch_size=config.batch_size, image_size=crop,
      eval_protocol=config.eval_protocol, crop_fraction=crop_fraction,
      interpolation=config.val_interpolation, process_index=jax.process_index(),
      process_count=jax.process_count())
  return input_pipeline.DeviceIterator(ds, layout.put_batch, config.prefetch_batches,
                                       config.num_data_threads)


def batch_mix(config) -> Optional[Callable]:
  """MixUp/CutMix for the train step, or None when both alphas are 0 (today's step, unchanged)."""
  if not config.mixup_alpha and not config.cutmix_alpha:
    return None
  return functools.partial(mixup.mix_batch, mixup_alpha=config.mixup_alpha,
                           cutmix_alpha=config.cutmix_alpha)


def ema_from_config(config, steps_per_epoch: float, total_steps: int) -> Optional[Callable]:
  """`ema.update` with torchvision's adjusted decay bound, or None without config.model_ema."""
  if not config.model_ema:
    return None
  epochs = config.num_epochs if config.num_train_steps <= 0 else total_steps / steps_per_epoch
  decay = ema.adjusted_decay(config.model_ema_decay, global_batch_size=config.batch_size,
                             every=config.model_ema_steps, epochs=epochs)
  warmup = (int(round(config.warmup * steps_per_epoch)) if config.schedule_unit == "epochs"
            else int(config.warmup))
  return functools.partial(ema.update, decay=decay, every=config.model_ema_steps,
                           warmup_steps=warmup)


def schedule_from_config(config, steps_per_epoch: float, total_steps: int) -> optax.Schedule:
  to_steps = (lambda x: int(round(x * steps_per_epoch))) if config.schedule_unit == "epochs" else int
  return optim.learning_rate_schedule(
      learning_rate=config.learning_rate, kind=config.lr_schedule, total_steps=total_steps,
      boundaries=tuple(to_steps(b) for b in config.lr_boundaries),
      decay_factor=config.lr_decay_factor, warmup_steps=to_steps(config.warmup),
      warmup_type=config.warmup_type, warmup_factor=config.warmup_factor,
      end_value=config.lr_end, power=config.lr_power)


def optimizer_from_config(config, schedule: optax.Schedule) -> optax.GradientTransformation:
  """Today's SGD exactly (same state layout, so older checkpoints resume) unless a modern option is
  set; then `optim.create`, where negative per-group decays mean 'as weight_decay'."""
  group = lambda x: None if x < 0 else x
  if (config.optimizer == "sgd" and group(config.norm_weight_decay) is None
      and group(config.bias_weight_decay) is None and not config.clip_grad_norm):
    return optim.create_sgd(schedule, momentum=config.momentum, nesterov=config.nesterov,
                            weight_decay=config.weight_decay,
                            exclude_bn_and_bias=config.weight_decay_exclude_bn_bias)
  excluded = 0.0 if config.weight_decay_exclude_bn_bias else None
  return optim.create(config.optimizer, schedule, weight_decay=config.weight_decay,
                      momentum=config.momentum, nesterov=config.nesterov,
                      norm_weight_decay=group(config.norm_weight_decay) if excluded is None else 0.0,
                      bias_weight_decay=group(config.bias_weight_decay) if excluded is None else 0.0,
                      clip_grad_norm=config.clip_grad_norm)


# ----------------------------------------------------------------------------------------------
# Metrics output.

def evaluate(evaluate_fn: Callable, state, batches, layout: sharding.Layout) -> dict:
  """Loss, top-1 and top-5 over the whole split (every example once; padding masked out)."""
  sums = [evaluate_fn(state, batch) for batch in batches]
  totals = {k: sum(layout.scalars(s)[k] for s in sums) for k in sums[0]}
  count = totals.pop("count")
  return {"loss": totals["loss"] / count, "top1": totals["top1"] / count,
          "top5": totals["top5"] / count, "count": int(count)}


def _check_finite(history: list[dict], first_step: int, last_checkpoint: Optional[int]) -> None:
  for i, scalars in enumerate(history):
    if not math.isfinite(scalars["loss"]) or scalars["finite"] != 1.0:
      raise NonFiniteLossError(
          f"the training loss or the updated parameters are not finite at step {first_step + i + 1} "
          f"(loss {scalars['loss']}); stopping without "
          f"saving this state. The last checkpoint (step {last_checkpoint}) is intact: lower "
          "config.learning_rate, add config.warmup or check the data, then train again in a new "
          "workdir (a resumed run keeps its recipe; config.init_from=THIS_WORKDIR starts from the "
          "last checkpoint's weights)")


# ----------------------------------------------------------------------------------------------
# The run's parts, each built from the config and what it needs.

class Compiled(NamedTuple):
  """The model, its optimizer, and the train and eval steps compiled for the run's layout."""
  model: models.ResNet
  tx: optax.GradientTransformation
  train_fn: Callable
  eval_fn: Callable


def create_layout(config: ml_collections.ConfigDict) -> sharding.Layout:
  layout = sharding.Layout(config.parallelism)
  layout.check_batch_size(config.batch_size)
  per_device = config.batch_size // (layout.mesh.size * jax.process_count())
  if config.parallelism == "pmap" and per_device % config.grad_accum_steps:  # Split per device.
    raise config_checks.ConfigError(f"config.grad_accum_steps={config.grad_accum_steps}: expected a "
                                    f"divisor of the per-device batch ({per_device}) under pmap")
  return layout


def run_length(config: ml_collections.ConfigDict, train_examples: int) -> tuple[float, int]:
  """(steps per epoch, total steps): `num_train_steps` when set, else `num_epochs`' worth."""
  steps_per_epoch = train_examples / config.batch_size
  total_steps = (config.num_train_steps if config.num_train_steps > 0
                 else int(math.ceil(config.num_epochs * steps_per_epoch)))
  return steps_per_epoch, total_steps


def compile_steps(config: ml_collections.ConfigDict, spec: spec_lib.ModelSpec,
                  layout: sharding.Layout, steps_per_epoch: float, total_steps: int) -> Compiled:
  schedule = schedule_from_config(config, steps_per_epoch, total_steps)
  tx = optimizer_from_config(config, schedule)
  synced = config.parallelism == "pmap" and config.sync_batch_norm
  model = spec.build(dtype=models.compute_dtype(config.dtype),
                     axis_name=sharding.PMAP_AXIS if synced else None)
  bound = dict(model=model, mean=tuple(config.mean), std=tuple(config.std))
  train_fn, eval_fn = layout.compile(
      functools.partial(steps.train_step, tx=tx, schedule=schedule,
                        label_smoothing=config.label_smoothing, loss=config.loss,
                        bce_target_threshold=(config.bce_target_threshold
                                              if config.bce_target_threshold >= 0 else None),
                        mix=batch_mix(config),
                        mix_seed=config.seed,
                        ema_update=ema_from_config(config, steps_per_epoch, total_steps),
                        grad_accum_steps=config.grad_accum_steps,
                        average_batch_stats=config.parallelism == "pmap" and not synced, **bound),
      functools.partial(steps.eval_step, **bound))
  return Compiled(model, tx, train_fn, eval_fn)


def restore_or_initialize(config: ml_collections.ConfigDict, compiled: Compiled, data: Data,
                          spec: spec_lib.ModelSpec, ckpts: checkpoints.TrainCheckpoints,
                          batches: input_pipeline.DeviceIterator
                          ) -> tuple[steps.TrainState, Optional[int], list]:
  """(host state, the step it was restored from, the config keys changed since): the newest intact
  checkpoint, which also moves `batches` to its data position, refused when the config changed a
  key that may not change (config_checks.ON_RESUME); else `init_from`'s weights or a fresh state,
  None and []."""
  state = initial_state(compiled.model, compiled.tx, data.image_shape, config.seed, config.model_ema)
  workdir = os.path.dirname(ckpts.directory)
  check = lambda found: changes.extend(resumed_config_changes(config, found.meta, workdir, data))
  changes = []
  restored = ckpts.restore_latest(serialization.to_state_dict(state), batches,
                                  checkpoints.training_meta(spec), check=check)
  if restored is not None:
    state = serialization.from_state_dict(state, restored[0])
    log.info("resumed from the checkpoint of step %d in %s", int(state.step), workdir)
    for key, old, new in changes:
      log.info("config.%s changed on resume: %r -> %r", key, old, new)
    return state, int(state.step), changes
  if config.init_from:
    state = load_pretrained(state, config.init_from, expected=spec)
    log.info("initialised from %s", config.init_from)
  return state, None, []


def run_record(config: ml_collections.ConfigDict, data: Data) -> dict:
  """What each checkpoint records of the run that saved it (checkpoints.training_meta's `run`)."""
  return {checkpoints.CONFIG_KEY: config_checks.as_json(config),
          checkpoints.DATA_KEY: {"train_examples": len(data.train),
                                 "class_names": list(data.class_names)}}


def resumed_config_changes(config: ml_collections.ConfigDict, meta: dict, workdir: str,
                           data: Optional[Data] = None) -> list[tuple[str, Any, Any]]:
  """`config_checks.resume_changes` against the config a checkpoint was saved with: its meta's, or
  for a checkpoint written before configs were saved there, WORKDIR/config.json (none: unchecked).
  With `data`, the training data must also be the one the checkpoint recorded (a `data_dir` may
  move, not point at other data)."""
  if data is not None and checkpoints.DATA_KEY in meta:
    _check_same_data(config, meta[checkpoints.DATA_KEY],
                     run_record(config, data)[checkpoints.DATA_KEY])
  trained = meta.get(checkpoints.CONFIG_KEY)
  if trained is None:
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
      log.warning("%s records no config: the resumed run's config is not checked", workdir)
      return []
    with open(path) as f:
      trained = json.load(f)
  return config_checks.resume_changes(trained, config)


def _check_same_data(config: ml_collections.ConfigDict, trained: dict, now: dict) -> None:
  names = trained.get("class_names"), now["class_names"]
  if trained.get("train_examples") != now["train_examples"] or (all(names) and names[0] != names[1]):
    describe = lambda d: (f"{d.get('train_examples')} training examples"
                          + (f", classes {', '.join(d['class_names'])}" if d.get("class_names") else ""))
    raise config_checks.ConfigError(
        f"config.data_dir={config.data_dir!r}: the data there is not the data this run was trained "
        f"on ({describe(trained)} then; {describe(now)} now). Point data_dir at that data, or use "
        "another workdir; nothing was changed")


# ----------------------------------------------------------------------------------------------
# What the loop does between steps.

def save_checkpoint(ckpts: checkpoints.TrainCheckpoints, layout: sharding.Layout,
                    spec: spec_lib.ModelSpec, run: dict,
                    batches: input_pipeline.DeviceIterator, state, step: int) -> None:
  """The state with the data position after its last batch, the spec naming this step and the
  `run_record` of the run that trained it."""
  host = serialization.to_state_dict(layout.get_state(state))
  spec = spec.replace(source=dict(spec.source, step=step))
  ckpts.save(step, host, batches.get_state(), checkpoints.training_meta(spec, run))


def eval_steps(eval_every_steps: int, steps_per_epoch: float, total_steps: int) -> set[int]:
  """The steps after which to evaluate: every `eval_every_steps`, or (0) at the end of each epoch,
  i.e. the first step past k epochs, and the last step. With whole epochs the last epoch's end is
  the last step, so the end of a run is evaluated once."""
  if eval_every_steps:
    due = set(range(eval_every_steps, total_steps + 1, eval_every_steps))
  else:
    due = {math.ceil(k * steps_per_epoch) for k in range(1, int(total_steps / steps_per_epoch) + 1)}
  return {s for s in due if s <= total_steps} | {total_steps}


def log_train(writer: MetricWriter, progress: logs.Progress, throughput: Throughput,
              layout: sharding.Layout, pending: list, step: int,
              last_checkpoint: Optional[int]) -> None:
  """Checks and writes the means of the steps since the last log (`pending`), with the throughput."""
  history = [layout.scalars(m) for m in pending]
  _check_finite(history, step - len(history), last_checkpoint)
  scalars = interval_means([{k: v for k, v in h.items() if k != "finite"} for h in history])
  rate = throughput.images_per_sec()  # None right after the compiling first step
  if rate is not None:
    scalars["images_per_sec"] = rate
  writer.write(step, "train", scalars)
  shown = {"loss": f"{scalars['loss']:.4f}",
           "top-1 error": f"{100.0 * (1.0 - scalars['accuracy']):.2f}%",
           "lr": f"{scalars['learning_rate']:.4g}"}
  if rate is not None:
    shown["img/s"] = f"{rate:.0f}"
  progress.show(step, shown)


EVAL_SPLITS = {"eval": "eval", "eval_ema": "EMA eval"}  # metrics.jsonl split: what the log calls it.


def evaluate_and_log(split: str, eval_fn: Callable, state, batches, layout: sharding.Layout,
                     writer: MetricWriter, progress: logs.Progress, step: int) -> dict:
  """`evaluate`, written to metrics.jsonl under `split` (an EVAL_SPLITS key) and shown."""
  result = evaluate(eval_fn, state, batches, layout)
  writer.write(step, split, result)
  progress.write(f"step {step}: {EVAL_SPLITS[split]} {describe_evaluation(result)}")
  return result


# ----------------------------------------------------------------------------------------------
# The loop.

def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains and evaluates as configured, resuming from the newest intact checkpoint in `workdir`.

  Train metrics are means over each logging interval; images/s leaves out the first step of the
  run (compilation), evaluations and checkpoints. Each (split, step) is written once, also across
  a crash and resume; a finished run, resumed, evaluates and writes nothing.

  Returns:
    The final evaluation metrics ('loss', 'top1', 'top5', 'count').

  Raises:
    NonFiniteLossError: the loss or the updated state became NaN or infinite; nothing after the
      last good checkpoint is saved (the policy: stop, keep the checkpoints, change the recipe).
  """
  initialize_distributed(config)
  validate_config(config)
  with contextlib.ExitStack() as cleanup:  # Undone in reverse: the lock is released last.
    lock = workdir_lock.own(workdir)  # Before anything in the workdir is read or written.
    if lock:
      cleanup.callback(lock.release)
    layout = create_layout(config)
    data = create_data(config)
    steps_per_epoch, total_steps = run_length(config, len(data.train))
    spec = model_spec(config, data, workdir)  # Validated before anything is written to the workdir.
    compiled = compile_steps(config, spec, layout, steps_per_epoch, total_steps)
    os.makedirs(workdir, exist_ok=True)
    ckpts = cleanup.enter_context(checkpoints.TrainCheckpoints(
        workdir, keep=config.keep_checkpoints, async_save=config.async_checkpoints))
    batches = train_batches(config, data, layout)
    cleanup.callback(batches.close)  # Stops config.data_processes' workers now, not at exit.
    # Restored before anything else is written, so a refused workdir is left as it was.
    state, last_checkpoint, changes = restore_or_initialize(config, compiled, data, spec, ckpts,
                                                            batches)
    state = layout.put_state(state)
    writer = MetricWriter(workdir)
    cleanup.callback(writer.close)
    start = last_checkpoint or 0
    progress = logs.Progress(total_steps, start,
                             enabled=config.progress_bar and jax.process_index() == 0)
    cleanup.callback(progress.close)
    evals = eval_steps(config.eval_every_steps, steps_per_epoch, total_steps)
    throughput = Throughput(config.batch_size)
    writer.start(start, config, changes)
    run = run_record(config, data)  # Saved with each checkpoint.
    new_eval_batches = functools.partial(eval_batches, config, data, layout)
    pending, result = [], {}
    for step in range(start + 1, total_steps + 1):
      state, metrics = compiled.train_fn(state, next(batches))
      pending.append(metrics)
      if step == start + 1:
        jax.block_until_ready(metrics)  # This step compiled: throughput is timed from its end.
        throughput.restart()
      else:
        throughput.step()
      progress.update(1)
      due_checkpoint = step % config.checkpoint_every_steps == 0 or step == total_steps
      due_log = step % config.log_every_steps == 0 or due_checkpoint or step in evals
      if due_log:
        log_train(writer, progress, throughput, layout, pending, step, last_checkpoint)
        pending = []
      if step in evals:
        result = evaluate_and_log("eval", compiled.eval_fn, state, new_eval_batches(), layout,
                                  writer, progress, step)
        if config.model_ema:
          evaluate_and_log("eval_ema", compiled.eval_fn, steps.ema_view(state), new_eval_batches(),
                           layout, writer, progress, step)
      if due_checkpoint:
        save_checkpoint(ckpts, layout, spec, run, batches, state, step)
        last_checkpoint = step
      if due_log:
        throughput.restart()  # Logging, evaluating and checkpointing are not training time.
    if not result:  # Resumed at the end: evaluate what was restored (already written).
      result = evaluate(compiled.eval_fn, state, new_eval_batches(), layout)
  return result
