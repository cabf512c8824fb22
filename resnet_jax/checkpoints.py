"""Checkpoints: standalone model variables, and training checkpoints (Orbax `CheckpointManager`).

A model checkpoint (`save_variables`) is DIR/variables + DIR/model.json. A training workdir holds
WORKDIR/checkpoints/<step>/ with three items: 'state' (the whole `TrainState` as nested dicts),
'meta' (JSON: model metadata, step and a CRC32 of the state) and 'data' (each process's Grain
iterator position). Orbax writes each step into a temporary directory and renames it when every
item is written, so a run killed mid-write leaves no step directory behind; the CRC catches a
step directory damaged afterwards. A damaged step is skipped with a warning, never restored.
"""

from __future__ import annotations

import json
import logging
import os
import zlib
from typing import Any, Optional

import grain
import jax
import numpy as np
import orbax.checkpoint as ocp

VARIABLES = "variables"
METADATA = "model.json"
CHECKPOINTS = "checkpoints"
log = logging.getLogger(__name__)


def save_variables(directory: str, variables: Any, metadata: dict) -> str:
  """Writes `variables` ({'params', 'batch_stats'}) and `metadata` (at least 'arch') to `directory`.

  The directory must not hold a checkpoint already: nothing saved is ever overwritten.

  Returns:
    The absolute path of the directory.
  """
  directory = os.path.abspath(os.fspath(directory))
  if os.path.exists(os.path.join(directory, VARIABLES)):
    raise FileExistsError(f"{directory} already holds a checkpoint; choose a new directory")
  if "arch" not in metadata:
    raise ValueError("metadata must name the architecture ('arch')")
  os.makedirs(directory, exist_ok=True)
  variables = jax.tree.map(np.asarray, variables)
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(os.path.join(directory, VARIABLES), variables)
    checkpointer.wait_until_finished()
  # The metadata goes last: a directory with model.json is a complete checkpoint.
  tmp = os.path.join(directory, METADATA + ".tmp")
  with open(tmp, "w") as f:
    json.dump(metadata, f, indent=2, sort_keys=True)
  os.replace(tmp, os.path.join(directory, METADATA))
  return directory


def load_variables(directory: str, ema: bool = False) -> tuple[dict, dict]:
  """Reads what `save_variables` wrote, or the latest intact checkpoint of a training workdir.

  With `ema`, a workdir's EMA weights (config.model_ema) instead of the raw model's.

  Returns:
    (variables {'params', 'batch_stats'} as numpy arrays, metadata with at least 'arch' and
    'num_classes'; for a workdir also 'step' and the model overrides).
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
  with open(meta_path) as f:
    metadata = json.load(f)
  with ocp.StandardCheckpointer() as checkpointer:
    try:
      variables = checkpointer.restore(os.path.join(directory, VARIABLES))
    except Exception as e:  # Orbax raises many types for damaged files; name the checkpoint.
      raise ValueError(f"corrupt or unreadable checkpoint in {directory}: {e}") from e
  return jax.tree.map(np.asarray, variables), metadata


def _load_training_variables(workdir: str, ema: bool = False) -> tuple[dict, dict]:
  with TrainCheckpoints(workdir, keep=None, async_save=False) as checkpoints:
    for step in reversed(checkpoints.steps()):
      try:
        state, meta = checkpoints.restore_state(step, target=None)
      except ValueError as e:
        log.warning("skipping checkpoint %d of %s: %s", step, workdir, e)
        continue
      if ema and "ema" not in state:
        raise ValueError(f"{workdir} holds no EMA weights (it was trained without config.model_ema)")
      source = state["ema"] if ema else state
      variables = {"params": source["params"], "batch_stats": source["batch_stats"]}
      return jax.tree.map(np.asarray, variables), meta
  raise FileNotFoundError(f"training workdir {workdir} holds no complete checkpoint")


def fingerprint(tree: Any) -> int:
  """CRC32 of every leaf's bytes, in tree order: detects a checkpoint changed after it was written."""
  crc = 0
  for leaf in jax.tree.leaves(tree):
    crc = zlib.crc32(np.ascontiguousarray(leaf).tobytes(), crc)
  return crc


class TrainCheckpoints:
  """The training checkpoints of one workdir: save every so often, keep the last `keep`, restore the
  newest intact one. States are host (numpy) trees of nested dicts.

  Saves run in the background when `async_save` (Orbax copies the arrays first, so the caller may
  donate or overwrite its buffers as soon as `save` returns).
  """

  def __init__(self, workdir: str, *, keep: Optional[int], async_save: bool = True):
    self.directory = os.path.join(os.path.abspath(workdir), CHECKPOINTS)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, save_interval_steps=1, enable_async_checkpointing=async_save, create=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def __enter__(self) -> "TrainCheckpoints":
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def steps(self) -> list[int]:
    """Steps of the complete (renamed into place) checkpoints, oldest first."""
    self._manager.reload()
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: dict, data_position: bytes, metadata: dict) -> None:
    state = jax.tree.map(np.asarray, state)
    meta = dict(metadata, step=int(step), fingerprint=fingerprint(state))
    from resnet_jax.input_pipeline import SavedPosition  # Avoids a cycle at import time.
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        meta=ocp.args.JsonSave(meta),
        data=grain.checkpoint.CheckpointSave(SavedPosition(data_position))))

  def restore_state(self, step: int, target: Optional[dict]) -> tuple[dict, dict]:
    """(state, metadata) of `step`; ValueError if it cannot be read or fails its fingerprint."""
    if target is not None:
      restore = ocp.args.StandardRestore(jax.tree.map(np.asarray, target))
    else:
      restore = ocp.args.StandardRestore()
    try:
      out = self._manager.restore(step, args=ocp.args.Composite(state=restore,
                                                                meta=ocp.args.JsonRestore()))
    except Exception as e:  # Orbax/TensorStore raise many types for damaged files.
      raise ValueError(f"unreadable: {type(e).__name__}: {e}") from e
    state = jax.tree.map(np.asarray, out["state"])
    if fingerprint(state) != out["meta"].get("fingerprint"):
      raise ValueError("the state does not match the fingerprint written with it")
    return state, out["meta"]

  def restore_latest(self, target: dict, data_iterator) -> Optional[tuple[dict, dict]]:
    """Restores the newest intact checkpoint into `target`'s structure and `data_iterator`.

    Returns:
      (state, metadata), or None when the workdir holds no checkpoint.

    Raises:
      ValueError: there are checkpoints but none can be restored. Starting over instead would
        silently discard the run (a changed config, e.g. another model, also ends here).
    """
    errors = []
    for step in reversed(self.steps()):
      try:
        state, meta = self.restore_state(step, target)
        self._manager.restore(step, args=ocp.args.Composite(
            data=grain.checkpoint.CheckpointRestore(data_iterator)))
      except Exception as e:  # A damaged step: fall back to the one before it.
        log.warning("checkpoint %d in %s is damaged, trying an older one: %s",
                        step, self.directory, e)
        errors.append(f"step {step}: {e}")
        continue
      return state, meta
    if errors:
      raise ValueError(f"none of the checkpoints in {self.directory} can be restored; fix or move "
                       "them, or use another workdir:\n" + "\n".join(errors))
    return None

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()
