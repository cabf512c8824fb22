"""Model-variable checkpoints (Orbax) with the metadata needed to rebuild the model."""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

VARIABLES = "variables"
METADATA = "model.json"


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


def load_variables(directory: str) -> tuple[dict, dict]:
  """Reads what `save_variables` wrote.

  Returns:
    (variables as numpy arrays, metadata).
  """
  directory = os.path.abspath(os.fspath(directory))
  meta_path = os.path.join(directory, METADATA)
  if not os.path.isfile(meta_path):
    raise FileNotFoundError(f"{directory} is not a complete model checkpoint (no {METADATA})")
  with open(meta_path) as f:
    metadata = json.load(f)
  with ocp.StandardCheckpointer() as checkpointer:
    try:
      variables = checkpointer.restore(os.path.join(directory, VARIABLES))
    except Exception as e:  # Orbax raises many types for damaged files; name the checkpoint.
      raise ValueError(f"corrupt or unreadable checkpoint in {directory}: {e}") from e
  return jax.tree.map(np.asarray, variables), metadata
