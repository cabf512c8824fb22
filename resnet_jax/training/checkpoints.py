"""Checkpoints: standalone model variables, and training checkpoints (Orbax `CheckpointManager`).

A model checkpoint (`save_variables`) is DIR/variables + DIR/model.json. A training workdir holds
WORKDIR/checkpoints/<step>/ with three items: 'state' (the whole `TrainState` as nested dicts),
'meta' (JSON: the `ModelSpec` under 'spec', step and a CRC32 of the state) and 'data' (each process's Grain
iterator position, sealed with a CRC32 bound to the step and the state's). Orbax writes each step
into a temporary directory and renames it when every item is written, so a run killed mid-write
leaves no step directory behind; the checksums catch a step directory damaged afterwards.

The policy, which never loses the newest good state: a damaged step is never restored; when
training resumes from an older one, the damaged newer steps are moved to
WORKDIR/checkpoints/damaged/<step>-<reason> (never deleted), so that none of them blocks a later
save. A checkpoint of another model or state layout is refused, not called damaged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import sys
import time
import traceback
import zlib
from typing import Any, Callable, Optional

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp

from resnet_jax.weights import convert
from resnet_jax.weights import spec as spec_lib

VARIABLES = "variables"
METADATA = "model.json"
CHECKPOINTS = "checkpoints"
log = logging.getLogger(__name__)


def save_variables(directory: str, variables: Any, spec: spec_lib.ModelSpec) -> str:
  """Writes `variables` ({'params', 'batch_stats'}) and their `spec` (DIR/model.json) to `directory`.

  The directory must not hold a checkpoint already: nothing saved is ever overwritten.

  Returns:
    The absolute path of the directory.
  """
  directory = os.path.abspath(os.fspath(directory))
  if os.path.exists(os.path.join(directory, VARIABLES)):
    raise FileExistsError(f"{directory} already holds a checkpoint; choose a new directory")
  if not isinstance(spec, spec_lib.ModelSpec):
    raise TypeError(f"spec must be a ModelSpec, got {type(spec).__name__}")
  outputs = convert.variables_classes(variables)  # `fc`, or a timm ResNetV2's 1x1-conv `head_fc`.
  if outputs != spec.num_classes:
    raise spec_lib.SpecError(f"the variables' classifier has {outputs} outputs, the spec "
                             f"{spec.num_classes} classes")
  os.makedirs(directory, exist_ok=True)
  variables = jax.tree.map(np.asarray, variables)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(os.path.join(directory, VARIABLES), variables)
    checkpointer.wait_until_finished()
  # The spec goes last: a directory with model.json is a complete checkpoint.
  spec_lib.write(os.path.join(directory, METADATA), spec)
  return directory


def load_variables(directory: str, ema: bool = False) -> tuple[dict, spec_lib.ModelSpec]:
  """Reads what `save_variables` wrote, or the latest intact checkpoint of a training workdir.

  With `ema`, a workdir's EMA weights (config.model_ema) instead of the raw model's.

  Returns:
    (variables {'params', 'batch_stats'} as numpy arrays, their `ModelSpec`; for a workdir its
    source names the workdir and the step).

  Raises:
    spec.SpecError: the model description is missing, foreign or from an older resnet_jax (naming
      the file and how to fix it).
  """
  directory = os.path.abspath(os.fspath(directory))
  if os.path.isdir(os.path.join(directory, CHECKPOINTS)):
    return _load_training_variables(directory, ema)
  if ema:
    raise ValueError(f"{directory} is a model checkpoint, which holds one set of weights; EMA "
                     "weights come from a training workdir run with config.model_ema=True")
  meta_path = os.path.join(directory, METADATA)
  if not os.path.isfile(meta_path):
    raise FileNotFoundError(f"{directory} is neither a model checkpoint (no {METADATA}) nor a "
                            f"training workdir (no {CHECKPOINTS}/)")
  spec = spec_lib.read(meta_path)
  with ocp.StandardCheckpointer() as checkpointer:
    try:
      variables = checkpointer.restore(os.path.join(directory, VARIABLES))
    except Exception as e:  # Orbax raises many types for damaged files; name the checkpoint.
      raise ValueError(f"corrupt or unreadable checkpoint in {directory}: {e}") from e
  return jax.tree.map(np.asarray, variables), spec


# A training checkpoint's meta also records the run that saved it, what a resumed run is compared
# with: its config (JSON) and what identifies its training data (size, class names).
CONFIG_KEY, DATA_KEY = "config", "data"



def load_model(source: str, revision: Optional[str] = None, *, ema: bool = False
               ) -> tuple[dict, spec_lib.ModelSpec]:
  """(variables, ModelSpec) of a directory written by `resnet-jax convert` or training, or of timm's
  weights by name ('resnet50.a1_in1k', fetched from the Hugging Face Hub): what `evaluate`,
  `init_from` and `resnet_jax.pretrained` read."""
  from resnet_jax.weights import hub_timm
  if not os.path.isdir(source) and hub_timm.is_timm_name(source):
    if ema:
      raise ValueError(f"ema: {source} is timm's published weights, which are one set")
    return hub_timm.load(source, revision)
  return load_variables(source, ema=ema)

def training_meta(spec: spec_lib.ModelSpec, run: Optional[dict] = None) -> dict:
  """The model part of a training checkpoint's meta (`TrainCheckpoints.save` adds step and CRC),
  with `run` ({CONFIG_KEY: ..., DATA_KEY: ...}) when given."""
  return {spec_lib.SPEC_KEY: spec.to_json(), **(run or {})}


# A reader beside a live trainer (keep_checkpoints=1, saving often) may see the step it reads
# deleted under it; it then starts over from the newest step, this many times at most.
READ_ATTEMPTS = 30


def _quiet_abandoned_read(record: logging.LogRecord) -> bool:
  """Drops asyncio's 'Task exception was never retrieved' for an Orbax read of a step that a
  trainer deleted under a reader: the reader has already handled it (a retry), and asyncio would
  print its traceback when the task is collected, possibly long after."""
  error = record.exc_info[1] if record.exc_info else None
  return not (record.getMessage().startswith("Task exception was never retrieved")
              and error is not None and f"{os.sep}{CHECKPOINTS}{os.sep}" in str(error))


logging.getLogger("asyncio").addFilter(_quiet_abandoned_read)


def _quiet_closed_loop(unraisable, previous=sys.unraisablehook) -> None:
  """Drops the 'Event loop is closed' that a TensorStore read still pending when a reader gave up
  on a deleted step raises from its completion callback (Python prints it as 'Exception ignored');
  every other unraisable exception goes to the hook that was there before."""
  error = unraisable.exc_value
  frames = traceback.extract_tb(error.__traceback__) if error is not None else []
  if not (isinstance(error, RuntimeError) and str(error) == "Event loop is closed"
          and any(f.name == "call_soon_threadsafe" for f in frames)):
    previous(unraisable)


sys.unraisablehook = _quiet_closed_loop


class _ListingChanged(Exception):
  """The workdir's steps changed while a reader read one of them (a trainer saved or deleted)."""


def _listed_steps(directory: str) -> tuple:
  """The renamed-into-place step directories, straight from the file system (Orbax caches)."""
  try:
    return tuple(sorted(int(n) for n in os.listdir(directory) if n.isdigit()))
  except FileNotFoundError:
    return ()


def _load_training_variables(workdir: str, ema: bool = False) -> tuple[dict, spec_lib.ModelSpec]:
  """The newest step that is intact while it is read. A step that fails to read while the listing
  changes (a trainer deleting it, a new step renamed into place) is not damaged: the read starts
  over, after a short pause, at most READ_ATTEMPTS times."""
  directory = os.path.join(workdir, CHECKPOINTS)
  for attempt in range(READ_ATTEMPTS):
    try:
      return _read_newest_intact(workdir, ema)
    except _ListingChanged:
      time.sleep(min(0.01 * 2 ** attempt, 0.5))
  now = list(_listed_steps(directory))
  raise CheckpointError(f"training workdir {workdir}: its steps changed under every one of "
                        f"{READ_ATTEMPTS} reads ({directory} now lists {now}); try again, or read "
                        "a copy")


def _read_newest_intact(workdir: str, ema: bool) -> tuple[dict, spec_lib.ModelSpec]:
  # Read-only: a reader (predict, export, evaluate) never moves or deletes anything, even a damaged
  # step; it skips what the trainer's `read` would refuse, so both agree on what is intact.
  directory = os.path.join(workdir, CHECKPOINTS)
  listed = _listed_steps(directory)
  try:
    return _read_listed(workdir, ema, directory, listed)
  except _ListingChanged:
    raise
  except Exception:  # Orbax lists each step's metadata: one deleted meanwhile fails it.
    if _listed_steps(directory) != listed:
      raise _ListingChanged() from None
    raise


def _read_listed(workdir: str, ema: bool, directory: str, listed: tuple):
  with TrainCheckpoints(workdir, keep=None, async_save=False, read_only=True) as checkpoints:
    for step in reversed(checkpoints.steps()):
      try:
        found = checkpoints.read(step)
      except DamagedStepError as e:
        if _listed_steps(directory) != listed or step not in listed:
          raise _ListingChanged() from None
        log.warning("skipping it: %s", e)
        continue
      state = found.state
      if ema and "ema" not in state:
        raise ValueError(f"{workdir} holds no EMA weights (it was trained without config.model_ema)")
      source = state["ema"] if ema else state
      variables = {"params": source["params"], "batch_stats": source["batch_stats"]}
      spec = spec_lib.from_training_meta(found.meta, f"checkpoint {step} of {workdir}")
      return variables, spec
  raise FileNotFoundError(f"training workdir {workdir} holds no complete checkpoint")


def fingerprint(tree: Any) -> int:
  """CRC32 of every leaf's bytes, in tree order: detects a checkpoint changed after it was written."""
  crc = 0
  for leaf in jax.tree.leaves(tree):
    crc = zlib.crc32(np.ascontiguousarray(leaf).tobytes(), crc)
  return crc


class CheckpointError(ValueError):
  """A workdir's checkpoints cannot be used as asked; the message says what to do."""


class DamagedStepError(CheckpointError):
  """One step directory that is not an intact checkpoint; `reason` is a short slug for its new name."""

  def __init__(self, path: str, reason: str, detail: str):
    super().__init__(f"checkpoint {path} is damaged ({reason}): {detail}")
    self.path, self.reason = path, reason


class WorkdirMismatchError(CheckpointError):
  """The workdir holds a run of another model or state layout than the config describes."""


@dataclasses.dataclass
class Step:
  """An intact checkpoint: host state, metadata, and each process's data position."""
  step: int
  state: dict
  meta: dict
  positions: list  # bytes per process index.


# Each process's data position is written by Grain's handler in its own file, which process 0's
# metadata cannot cover in a multi-process run; so each position carries its own checksum, bound to
# the step and the state's fingerprint (a position copied from another step or edited is refused).
_POSITION_FORMAT = "resnet_jax.DataPosition"
_POSITION_FILE = re.compile(r"process_(\d+)-of-(\d+)\.json$")


def _position_crc(body: dict) -> int:
  return zlib.crc32(json.dumps({k: body[k] for k in ("format", "step", "state_fingerprint",
                                                      "position")}, sort_keys=True).encode())


@dataclasses.dataclass(frozen=True)
class _SealedPosition:
  """What Grain's Orbax handler writes for this process: the position at save time, sealed. An
  async save must record the position at the time of the save, not when the write runs."""
  text: str

  @classmethod
  def seal(cls, step: int, state_fingerprint: int, position: bytes) -> "_SealedPosition":
    body = {"format": _POSITION_FORMAT, "step": int(step), "state_fingerprint": state_fingerprint,
            "position": position.decode()}
    return cls(json.dumps(dict(body, crc=_position_crc(body)), sort_keys=True))

  def get_state(self) -> bytes:
    return self.text.encode()


def _unseal(text: str, step: int, state_fingerprint: int) -> bytes:
  """The position in a sealed file; ValueError when it does not belong to this step's state."""
  try:
    body = json.loads(text)
    crc = _position_crc(body)
  except (ValueError, KeyError, TypeError) as e:
    raise ValueError(f"not a sealed data position ({type(e).__name__})") from None
  if body["format"] != _POSITION_FORMAT or crc != body.get("crc"):
    raise ValueError("it does not match the checksum written with it")
  if body["step"] != step or body["state_fingerprint"] != state_fingerprint:
    raise ValueError(f"it was written with step {body['step']}'s state, not this one")
  return body["position"].encode()


CHECKPOINT_VERSION = 2  # 2: data positions sealed. Version 1 (no key) positions are not checked.
DAMAGED = "damaged"  # CHECKPOINTS/damaged/<step>-<reason>: step directories set aside, never deleted.


def _quiet_read_only(record: logging.LogRecord) -> bool:
  return not record.getMessage().startswith("Given directory is read only")


class TrainCheckpoints:
  """The training checkpoints of one workdir: save every so often, keep the last `keep`, restore the
  newest intact one. States are host (numpy) trees of nested dicts.

  Saves run in the background when `async_save` (Orbax copies the arrays first, so the caller may
  donate or overwrite its buffers as soon as `save` returns). `read_only` (readers such as
  `load_variables`) never creates, saves, moves or deletes anything.
  """

  def __init__(self, workdir: str, *, keep: Optional[int], async_save: bool = True,
               read_only: bool = False):
    self.directory = os.path.join(os.path.abspath(workdir), CHECKPOINTS)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, save_interval_steps=0 if read_only else 1, read_only=read_only,
        enable_async_checkpointing=async_save, create=not read_only,
        # Every `save` call is meant: one that Orbax would skip is an error below, never silent.
        enable_should_save_is_saving_in_progress_check=False)
    absl_log = logging.getLogger("absl")
    absl_log.addFilter(_quiet_read_only)  # Orbax warns that read-only means read-only.
    try:
      self._manager = ocp.CheckpointManager(self.directory, options=options)
    finally:
      absl_log.removeFilter(_quiet_read_only)

  def __enter__(self) -> "TrainCheckpoints":
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def steps(self) -> list[int]:
    """Steps of the renamed-into-place step directories (intact or not), oldest first."""
    self._manager.reload()
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: dict, data_position: bytes, metadata: dict) -> None:
    """Saves `state`, `metadata` and this process's `data_position` as `step`.

    Raises:
      CheckpointError: Orbax would skip the save (the workdir holds a step >= `step`).
    """
    state = jax.tree.map(np.asarray, state)
    state_fingerprint = fingerprint(state)
    meta = dict(metadata, step=int(step), fingerprint=state_fingerprint,
                checkpoint_version=CHECKPOINT_VERSION)
    position = _SealedPosition.seal(step, state_fingerprint, data_position)
    with self._naming_write_errors():  # This step's, or an earlier asynchronous one's.
      saved = self._manager.save(step, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta),
          data=grain.checkpoint.CheckpointSave(position)))
    if not saved:
      raise CheckpointError(f"the checkpoint of step {step} was not saved: {self.directory} already "
                            f"holds step {self._manager.latest_step()}")

  def read(self, step: int) -> Step:
    """The checkpoint of `step`, fully checked: the one definition of "intact" that the trainer
    and `load_variables` share.

    Raises:
      DamagedStepError: the directory is empty, unreadable, of another step, or fails a checksum.
    """
    path = os.path.join(self.directory, str(step))
    if not os.path.isdir(path) or not os.listdir(path):
      raise DamagedStepError(path, "empty", "the step directory is empty")
    try:
      out = self._manager.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()))
    except Exception as e:  # Orbax/TensorStore raise many types; their messages can hold whole trees.
      raise DamagedStepError(path, "unreadable", f"{type(e).__name__}: {_first_line(e)}") from None
    meta, state = out["meta"], jax.tree.map(np.asarray, out["state"])
    if not isinstance(meta, dict) or meta.get("step") != step or not isinstance(state, dict) \
        or int(np.asarray(state.get("step", -1))) != step:
      raise DamagedStepError(path, "foreign", "its metadata or state is not of this step")
    if fingerprint(state) != meta.get("fingerprint"):
      raise DamagedStepError(path, "checksum", "the state does not match the checksum written with it")
    return Step(step, state, meta, self._positions(path, meta))

  def _positions(self, path: str, meta: dict) -> list:
    data = os.path.join(path, "data")
    found = {}
    for name in os.listdir(data) if os.path.isdir(data) else ():
      match = _POSITION_FILE.match(name)
      if match:
        found[(int(match[1]), int(match[2]))] = os.path.join(data, name)
    counts = {count for _, count in found}
    count = counts.pop() if len(counts) == 1 else 0
    if not count or set(found) != {(i, count) for i in range(count)}:
      raise DamagedStepError(path, "data-missing", f"incomplete data positions in {data}")
    positions = []
    for index in range(count):
      with open(found[(index, count)]) as f:
        text = f.read()
      if meta.get("checkpoint_version", 1) < 2:
        positions.append(text.encode())
        continue
      try:
        positions.append(_unseal(text, meta["step"], meta["fingerprint"]))
      except ValueError as e:
        raise DamagedStepError(path, "data-checksum",
                               f"data position {found[(index, count)]}: {e}") from None
    return positions

  def restore_state(self, step: int, target: Optional[dict] = None) -> tuple[dict, dict]:
    """(state, metadata) of `step`; DamagedStepError if it is not intact, WorkdirMismatchError if
    its state does not have `target`'s layout."""
    found = self.read(step)
    if target is not None:
      _check_layout(found, target, self.directory)
    return found.state, found.meta

  def restore_latest(self, target: dict, data_iterator, metadata: Optional[dict] = None,
                     check: Optional[Callable[[Step], None]] = None) -> Optional[tuple[dict, dict]]:
    """Restores the newest intact checkpoint into `data_iterator`; the damaged steps newer than it
    are first moved to CHECKPOINTS/damaged/, so that they can never block a later save.

    Args:
      target: a state of the layout this run trains (checked, not filled in).
      metadata: the model metadata this run would save; the checkpoint's must describe the same
        model (None: not checked).
      check: called with the newest intact step before anything is moved or restored; it raises
        to refuse the resume (e.g. a config key that may not change).

    Returns:
      (state, metadata), or None when the workdir holds no checkpoint.

    Raises:
      WorkdirMismatchError: the newest intact step is of another model, state layout or number of
        processes; nothing was moved or changed.
      CheckpointError: there are checkpoints but none is intact (starting over instead would
        silently discard the run); nothing was moved or changed.
    """
    damaged = []
    for step in reversed(self.steps()):
      try:
        found = self.read(step)
      except DamagedStepError as e:
        log.warning("%s; trying an older one", e)
        damaged.append(e)
        continue
      if metadata is not None:
        _check_model(found, metadata, self.directory)
      if check is not None:
        check(found)
      _check_layout(found, target, self.directory)
      if len(found.positions) != jax.process_count():
        raise WorkdirMismatchError(
            f"checkpoint {step} in {self.directory} was written by {len(found.positions)} "
            f"process(es); this run has {jax.process_count()}")
      self._set_aside(damaged)
      data_iterator.set_state(found.positions[jax.process_index()])
      return found.state, found.meta
    if damaged:
      raise CheckpointError(
          f"none of the {len(damaged)} checkpoints in {self.directory} is intact (newest: "
          f"{damaged[0]}); nothing was changed: move them away to start over, or use another workdir")
    return None

  def _set_aside(self, damaged: list) -> None:
    """Moves damaged step directories to CHECKPOINTS/damaged/<step>-<reason>[-n]: kept for
    inspection, out of Orbax's sight (it never saves a step <= the newest one it sees)."""
    if not damaged:
      return
    if jax.process_index() == 0:  # The workdir is shared: one process moves, the others wait.
      aside = os.path.join(self.directory, DAMAGED)
      os.makedirs(aside, exist_ok=True)
      for error in damaged:
        base = os.path.join(aside, f"{os.path.basename(error.path)}-{error.reason}")
        target, n = base, 1
        while os.path.exists(target):
          n += 1
          target = f"{base}-{n}"
        os.rename(error.path, target)
        log.warning("moved the damaged checkpoint %s to %s", error.path, target)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      multihost_utils.sync_global_devices("resnet_jax.training.checkpoints.set_aside")
    self._manager.reload()

  def close(self) -> None:
    try:
      with self._naming_write_errors():
        self._manager.wait_until_finished()
    finally:
      self._manager.close()

  @contextlib.contextmanager
  def _naming_write_errors(self):
    """A failed write (a full disk, no permission) as one OSError naming this directory."""
    try:
      yield
    except OSError as e:
      raise OSError(e.errno, f"writing a checkpoint in {self.directory} failed "
                             f"({e.strerror or e}); the earlier steps are intact") from e


def _first_line(error: Exception, limit: int = 300) -> str:
  text = str(error).strip().splitlines()
  return (text[0] if text else "")[:limit]


# What makes two runs the same model, as training has written it from the first version on: the
# config's fields at the top level of the metadata (mean/std on the 0-255 scale, in_channels inside
# model_overrides), or a ModelSpec under 'spec'.
_RUNTIME_FIELDS = ("in_channels", "num_classes", "dtype", "param_dtype", "axis_name")


def _model_fields(meta: dict) -> dict:
  """The fields that change the variables or their input, in one form for both kinds of metadata."""
  as_json = lambda x: json.loads(json.dumps(x))  # Tuples and lists compare equal.
  if isinstance(meta.get("spec"), dict):
    spec = meta["spec"]
    overrides, in_channels = spec.get("model_overrides") or {}, spec.get("in_channels", 3)
    mean, std = spec.get("mean_255"), spec.get("std_255")
  else:
    overrides = dict(meta.get("model_overrides") or {})
    in_channels = overrides.get("in_channels", 3)
    mean, std = meta.get("mean"), meta.get("std")
    spec = meta
  return as_json({"arch": spec.get("arch"), "num_classes": spec.get("num_classes"),
                  "in_channels": in_channels, "image_size": spec.get("image_size"), "mean": mean,
                  "std": std, "model_overrides": {k: v for k, v in overrides.items()
                                                  if k not in _RUNTIME_FIELDS}})


def model_differences(saved: dict, expected: dict) -> list[str]:
  """'field: saved -> expected' for each model field that differs between two checkpoint metadata
  (`ModelSpec.differences` when both hold a spec)."""
  if isinstance(saved.get("spec"), dict) and isinstance(expected.get("spec"), dict):
    from resnet_jax.weights import spec
    return spec.ModelSpec.from_json(saved["spec"], "the checkpoint's model spec").differences(
        spec.ModelSpec.from_json(expected["spec"], "this run's model spec"))
  ours, theirs = _model_fields(saved), _model_fields(expected)
  return [f"{key}: {ours[key]!r} -> {theirs[key]!r}" for key in ours if ours[key] != theirs[key]]


def _check_model(found: Step, expected: dict, directory: str) -> None:
  differences = model_differences(found.meta, expected)
  if differences:
    arch, asked = _model_fields(found.meta)["arch"], _model_fields(expected)["arch"]
    raise WorkdirMismatchError(
        f"{os.path.dirname(directory)} was trained with {arch}; you asked for {asked}, and they "
        f"differ in {'; '.join(differences)} (trained -> asked). Resume with the config it was "
        "trained with, or use another workdir; nothing was changed")


def _check_layout(found: Step, target: dict, directory: str) -> None:
  """The saved state must have the target's tree, shapes and dtypes (e.g. not another optimizer)."""
  theirs = {jax.tree_util.keystr(p): x for p, x in jax.tree_util.tree_leaves_with_path(found.state)}
  ours = {jax.tree_util.keystr(p): x for p, x in jax.tree_util.tree_leaves_with_path(target)}
  problems = [f"{k} missing from the checkpoint" for k in ours if k not in theirs]
  problems += [f"{k} not in this run's state" for k in theirs if k not in ours]
  problems += [f"{k}: saved {np.shape(theirs[k])} {np.asarray(theirs[k]).dtype}, this run "
               f"{np.shape(ours[k])} {np.asarray(ours[k]).dtype}" for k in ours if k in theirs
               and (np.shape(theirs[k]) != np.shape(ours[k])
                    or np.asarray(theirs[k]).dtype != np.asarray(ours[k]).dtype)]
  if problems:
    more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
    raise WorkdirMismatchError(
        f"checkpoint {found.step} in {directory} holds a training state of another layout than this "
        f"config builds (another model or optimizer?): {'; '.join(problems[:3])}{more}. Resume with "
        "the config it was trained with, or use another workdir; nothing was changed")
