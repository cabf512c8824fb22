"""Device layouts: where the state, the batches and evaluation's views live, and how steps compile.

'jit' is one program over a mesh of every device, with the batch split along 'data'; 'pmap' is one
program per device with explicit collectives over 'batch'. Training and `resnet-jax evaluate` both
place their arrays through `Layout`.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Callable, Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

PMAP_AXIS = "batch"  # The pmap axis name; BatchNorm averages its statistics over it when synced.
MESH_AXIS = "data"   # The mesh axis the batch is split along in 'jit' mode.
LAYOUTS = ("jit", "pmap")  # config.parallelism's choices.


@dataclasses.dataclass
class Layout:
  """'jit': one program over a mesh of every device, the batch split along 'data', the state
  replicated; XLA inserts the cross-device reductions, so BatchNorm statistics and gradients cover
  the global batch. 'pmap': one program per device, explicit `pmean`s in the step."""
  mode: str
  devices: Optional[list] = None  # Default: all devices (jit) or this process's (pmap).

  def __post_init__(self):
    if self.mode not in LAYOUTS:
      raise ValueError(f"parallelism must be one of {LAYOUTS}, got {self.mode!r}")
    devices = self.devices or (jax.devices() if self.mode == "jit" else jax.local_devices())
    self.mesh = Mesh(np.asarray(devices), (MESH_AXIS if self.mode == "jit" else PMAP_AXIS,))
    self.replicated = NamedSharding(self.mesh, PartitionSpec())
    self.split = NamedSharding(self.mesh, PartitionSpec(self.mesh.axis_names[0]))

  def check_batch_size(self, global_batch_size: int) -> None:
    n = self.mesh.size * (jax.process_count() if self.mode == "pmap" else 1)
    if global_batch_size % n:
      raise ValueError(f"the global batch size {global_batch_size} is not divisible by the {n} "
                       f"devices; use a multiple of {n} (e.g. {max(n, global_batch_size // n * n)})")

  def put_state(self, state):
    """Host state -> the devices (replicated; under pmap with a leading device axis)."""
    if self.mode == "jit":
      return jax.tree.map(lambda x: jax.make_array_from_callback(
          np.shape(x), self.replicated, lambda index: np.asarray(x)[index]), state)
    n = len(self.mesh.devices)
    return jax.tree.map(lambda x: jax.device_put(np.broadcast_to(x, (n, *np.shape(x))),
                                                 self.split), state)

  def get_state(self, state):
    """Device state -> host numpy (the first replica)."""
    if self.mode == "jit":
      return jax.tree.map(lambda x: np.asarray(x.addressable_data(0)), state)
    return jax.tree.map(lambda x: np.asarray(x.addressable_data(0))[0], state)

  def put_batch(self, batch: dict) -> dict:
    """This process's numpy batch -> device arrays (under jit: this process's part of a global array)."""
    if self.mode == "jit":
      return jax.tree.map(lambda x: jax.make_array_from_process_local_data(self.split, x), batch)
    n = len(self.mesh.devices)
    return jax.tree.map(lambda x: jax.device_put(x.reshape(n, -1, *x.shape[1:]), self.split), batch)

  def scalars(self, metrics: dict) -> dict:
    """Replicated device metrics -> host floats."""
    get = (lambda x: np.asarray(x.addressable_data(0))) if self.mode == "jit" else (
        lambda x: np.asarray(x.addressable_data(0))[0])
    return {k: float(get(v)) for k, v in metrics.items()}

  def compile(self, train_fn: Callable, eval_fn: Callable) -> tuple[Callable, Callable]:
    """Compiles the steps; `train_fn` and `eval_fn` take an `axis_name` keyword. The state is donated."""
    if self.mode == "jit":
      train = jax.jit(functools.partial(train_fn, axis_name=None),
                      in_shardings=(self.replicated, self.split),
                      out_shardings=(self.replicated, self.replicated), donate_argnums=0)
      evaluate = jax.jit(functools.partial(eval_fn, axis_name=None),
                         in_shardings=(self.replicated, self.split), out_shardings=self.replicated)
      return train, evaluate
    train = jax.pmap(functools.partial(train_fn, axis_name=PMAP_AXIS), axis_name=PMAP_AXIS,
                     donate_argnums=0)
    evaluate = jax.pmap(functools.partial(eval_fn, axis_name=PMAP_AXIS), axis_name=PMAP_AXIS)
    return train, evaluate


def sharded_logits_fn(model, variables: dict, devices: Optional[Sequence] = None) -> Callable:
  """`logits_fn(views_nhwc float32) -> numpy logits`, the views split over `devices` (default: all
  local devices) and the variables replicated on them ('jit' layout). Views must come in multiples
  of the device count; one compilation per view shape."""
  layout = Layout("jit", list(devices or jax.local_devices()))
  on_devices = jax.device_put(variables, layout.replicated)

  @jax.jit
  def apply(variables, views):
    return model.apply(variables, views.astype(model.dtype), train=False)

  def logits_fn(views: np.ndarray) -> np.ndarray:
    # Explicit placement: the views arrive from the host, split along the batch, and the output
    # is gathered back whole.
    return np.asarray(apply(on_devices, jax.device_put(np.asarray(views, np.float32), layout.split)))

  return logits_fn
