"""torchvision <-> Flax ResNet variables: a key map, a transpose, and strict key/shape checks."""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import re
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from resnet_jax.models.resnet import Bottleneck, dense_kernel_init, get_model

log = logging.getLogger(__name__)

# The architectures torchvision ships; any registered name is accepted when given explicitly
# (a torchvision ResNet with a 3x3 stem loads into 'resnet18_cifar', say), but only these are inferred.
TORCHVISION_ARCHS = (
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d",
    "wide_resnet50_2", "wide_resnet101_2",
)

# (Flax collection, leaf name) -> torchvision parameter or buffer name.
_LEAVES = {
    ("params", "kernel"): "weight",
    ("params", "scale"): "weight",
    ("params", "bias"): "bias",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
}
_MODULES = {"downsample_conv": "downsample.0", "downsample_bn": "downsample.1"}
# Where training scripts keep the weights in a checkpoint: torchvision's reference train.py saves
# {'model', 'model_ema'?, 'optimizer', 'lr_scheduler', 'epoch', 'args'}, timm's train.py
# {'state_dict', 'state_dict_ema'?, 'optimizer', 'args', 'epoch', 'arch', 'version', 'metric'}.
# The first key present wins.
WEIGHTS_KEYS = ("model", "state_dict", "model_state_dict", "net")
EMA_KEYS = ("model_ema", "state_dict_ema", "ema", "ema_state_dict", "model_ema_state_dict")
# Key prefixes of wrapped modules: DataParallel/DDP and EMA wrappers ('module.'), torch.compile
# ('_orig_mod.'); removed in any order and number while every key carries one.
_PREFIXES = ("module.", "_orig_mod.")
# torch.optim.swa_utils.AveragedModel's counter (torchvision's ExponentialMovingAverage): not a weight.
_EMA_COUNTER = "n_averaged"
# Where `export` keeps the ModelSpec: a .safetensors file's metadata, a .pth state_dict's `_metadata`.
SPEC_METADATA_KEY = "resnet_jax.spec"
_LISTED = 20  # keys shown per kind in an error before "... and N more"
_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")  # terminal codes in torch's messages
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")  # what torch's weights-only refusal names


class ConversionError(ValueError):
  """A state_dict that does not fit the architecture.

  Attributes:
    missing: torchvision keys the architecture needs that the state_dict lacks.
    unexpected: keys of the state_dict the architecture does not have.
    misshaped: (key, expected shape, found shape) for keys present in both.
  """

  def __init__(self, message: str, missing=(), unexpected=(), misshaped=()):
    super().__init__(message)
    self.missing = list(missing)
    self.unexpected = list(unexpected)
    self.misshaped = list(misshaped)


class CheckpointError(ValueError):
  """A file that is not a readable checkpoint: truncated, of another format, or unsafe to unpickle."""


@dataclasses.dataclass(frozen=True)
class Inferred:
  """What `infer_arch` read from a state_dict: a registered name and the classifier size."""
  arch: str
  num_classes: Optional[int]

  def __str__(self):
    head = f"num_classes={self.num_classes}" if self.num_classes else "headless (no fc)"
    return f"{self.arch}, {head}"


# ----------------------------------------------------------------------------------------------
# Key map and layout.

def torch_key(path: tuple[str, ...]) -> str:
  """The torchvision key of a flattened Flax variable path.

  ('params', 'layer2_0', 'downsample_conv', 'kernel') -> 'layer2.0.downsample.0.weight'.
  """
  collection, *modules, leaf = path
  names = []
  for module in modules:
    if module.startswith("layer") and "_" in module:
      module = module.replace("_", ".", 1)
    names.append(_MODULES.get(module, module))
  if (collection, leaf) not in _LEAVES:
    raise ConversionError(f"no torchvision name for variable {'/'.join(path)}")
  return ".".join(names + [_LEAVES[collection, leaf]])


def state_dict_classes(state_dict: Mapping[str, Any]) -> Optional[int]:
  """The classifier outputs of torchvision weights (rows of `fc.weight`); None when headless."""
  fc = state_dict.get("fc.weight")
  return int(fc.shape[0]) if fc is not None else None


def variables_classes(variables: Mapping[str, Any]) -> Optional[int]:
  """The classifier outputs of Flax variables (last axis of the `fc` kernel and bias, or of timm
  ResNetV2's 1x1 conv `head_fc`); None when headless."""
  fc = variables["params"].get("fc") or variables["params"].get("head_fc")
  return int(np.shape(next(iter(fc.values())))[-1]) if fc else None


def _to_torch_layout(value: np.ndarray) -> np.ndarray:
  if value.ndim == 4:  # conv kernel HWIO -> OIHW; grouped convs keep I = in_channels / groups in both
    return np.transpose(value, (3, 2, 0, 1))
  if value.ndim == 3:  # 1-D conv kernel (width, in, out) -> (out, in, width)
    return np.transpose(value, (2, 1, 0))
  if value.ndim == 2:  # nn.Dense (in, out) -> nn.Linear (out, in)
    return value.T
  return value


def to_flax_layout(value: np.ndarray) -> np.ndarray:
  """A torch tensor's array in Flax's layout: conv OIHW -> HWIO, linear (out, in) -> (in, out)."""
  if value.ndim == 4:
    return np.transpose(value, (2, 3, 1, 0))
  if value.ndim == 3:
    return np.transpose(value, (2, 1, 0))
  if value.ndim == 2:
    return value.T
  return value


def _torch_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
  if len(shape) == 4:
    return (shape[3], shape[2], shape[0], shape[1])
  if len(shape) == 3:
    return tuple(reversed(shape))
  return tuple(reversed(shape)) if len(shape) == 2 else tuple(shape)


@functools.lru_cache(maxsize=None)
def torchvision_layout(arch: str, num_classes: Optional[int]) -> dict[str, tuple[tuple, tuple]]:
  """torchvision key -> (Flax path, torchvision shape) of every variable of `arch`, in model order.

  Traced from the Flax model itself (`jax.eval_shape`, no computation), so the expected layout can
  never drift from `models.py`. `num_batches_tracked` buffers are not listed: they hold no weights.
  """
  return layout_of(get_model(arch, num_classes=num_classes))


def layout_of(model, key=torch_key) -> dict[str, tuple[tuple, tuple]]:
  """`torchvision_layout` of a built model (any overrides, e.g. 1 input channel); `key` maps a Flax
  path to its PyTorch name (another library's key map, e.g. `convert_timm`'s)."""
  x = jnp.zeros((1, 64, 64, model.in_channels), jnp.float32)
  shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), x)
  flat = traverse_util.flatten_dict(shapes)
  return {key(path): (path, _torch_shape(s.shape)) for path, s in flat.items()}


# ----------------------------------------------------------------------------------------------
# Reading state_dicts.

def _safe_globals() -> list:
  """What `torch.load(weights_only=True)` may build besides tensors and plain containers: the
  `argparse.Namespace` of hyper-parameters that torchvision's and timm's train.py save as 'args'.
  A Namespace only receives attributes (its values are unpickled under the same rule); no code runs.
  Optimizer, LR-scheduler and GradScaler states are plain dicts, lists and numbers already."""
  import argparse
  return [argparse.Namespace]


def _one_line(error: Exception, limit: int = 300) -> str:
  """The first line of an error's message, without terminal escape codes, at most `limit` chars."""
  text = _ESCAPES.sub("", str(error))
  line = next((l.strip() for l in text.splitlines() if l.strip()), type(error).__name__)
  return line if len(line) <= limit else line[:limit] + "..."


def _legacy_globals(path: str) -> list[str]:
  """The classes and functions named by the pickles at the start of a legacy (non-zip) torch file,
  from its opcodes alone (pickletools runs nothing). Raw tensor bytes follow; they end the scan."""
  import io
  import pickletools
  names = set()
  try:
    with open(path, "rb") as f:
      stream = io.BytesIO(f.read(1 << 24))  # the pickles precede the tensor data
    for _ in range(4):  # magic number, protocol, system info, the object
      for op, arg, _ in pickletools.genops(stream):
        if op.name == "GLOBAL":
          names.add(arg.replace(" ", "."))
  except Exception:  # the tensor bytes, or a damaged file: what was found so far
    pass
  return sorted(names)


def _refusal(path: str, torch, error: Exception) -> CheckpointError:
  """One line for a pickle that names objects `weights_only` does not build: a whole model gets how
  to save its state_dict; anything else the objects it names."""
  # torch names the first object it refused: the outermost, e.g. the model's own class.
  first = _GLOBAL.findall(_ESCAPES.sub("", str(error)))[:1]
  try:
    with torch.serialization.safe_globals(_safe_globals()):
      others = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
  except Exception:  # a legacy (non-zip) file: its pickles are read as opcodes, never run
    others = _legacy_globals(path)
  names = first + [n for n in others if n not in first]
  if any(n.startswith("torch.nn.") for n in names):  # torch.save(model): classes and layers pickled
    return CheckpointError(
        f"{path} holds a whole pickled model ({names[0]}), which only running its code could read; "
        "save its weights instead, with torch.save(model.state_dict(), PATH)")
  shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
  return CheckpointError(
      f"{path} holds pickled objects other than tensors and plain containers ({shown or 'unknown'}), "
      "which resnet_jax does not unpickle (torch.load weights_only=True); save the state_dict alone, "
      "e.g. torch.save(model.state_dict(), PATH)")


def _read(path: str) -> Any:
  """What the file holds: a safetensors dict of arrays, or the object torch.save pickled."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"no checkpoint file at {path}")
  if path.endswith(".safetensors"):
    from safetensors.numpy import load_file
    try:
      return load_file(path)
    except Exception as e:  # safetensors raises its own error types for bad headers and short files
      raise CheckpointError(f"{path} is not a readable .safetensors file (truncated or another "
                            f"format?): {_one_line(e)}") from e
  try:
    import torch
  except ImportError as e:
    from resnet_jax._torchvision import INSTALL_HINT
    raise ImportError(f"reading {path} needs PyTorch: {INSTALL_HINT}; or convert the file to "
                      ".safetensors, which loads without it") from e
  try:
    # weights_only: tensors, plain containers and `_safe_globals()` only; a pickle that names any
    # other object fails here instead of running its code.
    with torch.serialization.safe_globals(_safe_globals()):
      return torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # torch raises RuntimeError, UnpicklingError, EOFError... depending on damage
    if "weights only load failed" in str(e).lower():
      raise _refusal(path, torch, e) from e
    raise CheckpointError(f"{path} is not a readable PyTorch checkpoint (truncated or another "
                          f"format?): {_one_line(e)}") from e


def load_state_dict(path: str | os.PathLike, ema: bool = False) -> dict[str, Any]:
  """The state_dict in a `.safetensors` file (no torch needed) or a `.pth`/`.pt` file (weights only,
  no code), unwrapped from a training checkpoint as `unwrap_state_dict` does.

  Raises:
    FileNotFoundError: no such file.
    CheckpointError: the file is truncated, not a checkpoint, would need arbitrary code to unpickle,
      or holds no state_dict (no EMA one, with `ema`).
    ImportError: a `.pth` file without torch installed.
  """
  path = os.fspath(path)
  return unwrap_state_dict(_read(path), path, ema)


def read_checkpoint(path: str | os.PathLike, ema: bool = False):
  """(numpy state_dict, the ModelSpec `resnet-jax export` stored with it or None) of a file, read
  once. See `load_state_dict` and `embedded_spec`."""
  path = os.fspath(path)
  obj = _read(path)
  if path.endswith(".safetensors"):
    spec = embedded_spec(path)
  else:  # export keeps it in the state_dict's `_metadata`, which torch's load_state_dict ignores
    text = (getattr(obj, "_metadata", None) or {}).get(SPEC_METADATA_KEY)
    spec = None if text is None else _parse_spec(text, path)
  from resnet_jax.weights import convert_hf  # transformers' layout under torchvision's keys
  state = convert_hf.torchvision_keys(unwrap_state_dict(obj, path, ema), path)
  return {k: _numpy(v) for k, v in state.items()}, spec


def _parse_spec(text: str, path: str):
  from resnet_jax.weights.spec import ModelSpec, SpecError
  try:
    return ModelSpec.from_json(json.loads(text), where=f"the model description in {path}")
  except (json.JSONDecodeError, TypeError, SpecError) as e:
    raise CheckpointError(_one_line(e)) from None


def embedded_spec(path: str | os.PathLike):
  """The ModelSpec that `resnet-jax export` stores in a `.safetensors` file's metadata, or None
  (a torchvision file; a `.pth`'s is read by `read_checkpoint`). Exported models of other shapes
  (1 input channel, CIFAR nets) convert back with their preprocessing this way.

  Raises:
    CheckpointError: the file's metadata holds a description that cannot be read.
  """
  path = os.fspath(path)
  if not path.endswith(".safetensors") or not os.path.isfile(path):
    return None
  from safetensors import safe_open
  try:
    with safe_open(path, "np") as f:
      text = (f.metadata() or {}).get(SPEC_METADATA_KEY)
  except Exception as e:  # safetensors raises its own error types for bad headers and short files
    raise CheckpointError(f"{path} is not a readable .safetensors file: {_one_line(e)}") from e
  return None if text is None else _parse_spec(text, path)


def _is_state_dict(obj: Any) -> bool:
  return (isinstance(obj, Mapping) and len(obj) > 0
          and all(hasattr(v, "shape") for v in obj.values()))


def _select(obj: Mapping, where: str, ema: bool) -> Mapping:
  """The state_dict under one of `WEIGHTS_KEYS` (`EMA_KEYS` with `ema`) of a training checkpoint."""
  held = [k for k in (*WEIGHTS_KEYS, *EMA_KEYS) if _is_state_dict(obj.get(k))]
  wanted = [k for k in held if k in (EMA_KEYS if ema else WEIGHTS_KEYS)]
  if wanted:
    log.info("%s: using the %s stored under %r", where, "EMA weights" if ema else "weights",
             wanted[0])
    return obj[wanted[0]]
  if ema:
    raise CheckpointError(f"{where} holds no EMA weights (no state_dict under any of "
                          f"{', '.join(EMA_KEYS)}); convert it without --ema (ema=False)")
  if held:
    raise CheckpointError(f"{where} holds only EMA weights (under {held[0]!r}); convert them with "
                          "--ema (ema=True)")
  if not obj:
    raise CheckpointError(f"{where} holds an empty mapping, no weights")
  others = [k for k, v in obj.items() if not hasattr(v, "shape")]
  raise CheckpointError(f"{where} is not a state_dict: {', '.join(map(repr, others[:5]))} are not "
                        f"tensors, and none of {', '.join(WEIGHTS_KEYS + EMA_KEYS)} holds one")


def _strip_prefixes(state: Mapping, where: str) -> dict:
  """`state` without the key prefixes of wrapped modules ('module.', '_orig_mod.', in any order and
  number while every key has one) and without an AveragedModel's `n_averaged` counter."""
  bad = [k for k in state if not isinstance(k, str)]
  if bad:
    raise CheckpointError(f"{where} is not a state_dict: its keys {bad[:5]} are not strings")
  state = dict(state)
  if _EMA_COUNTER in state and all(k.startswith("module.") for k in state if k != _EMA_COUNTER):
    del state[_EMA_COUNTER]
  removed = []
  while state:
    prefix = next((p for p in _PREFIXES if all(k.startswith(p) for k in state)), None)
    if prefix is None:
      break
    removed.append(prefix)
    state = {k[len(prefix):]: v for k, v in state.items()}
  if removed:
    log.info("%s: removing the key prefix %r (DataParallel/DDP, EMA wrappers, torch.compile)", where,
             "".join(removed))
  return state


def unwrap_state_dict(obj: Any, where: str, ema: bool = False) -> dict[str, Any]:
  """The flat state_dict inside what a training script saved.

  Accepts a state_dict, or a checkpoint holding one under one of `WEIGHTS_KEYS` (torchvision's
  reference 'model', timm's 'state_dict') and its EMA under one of `EMA_KEYS` ('model_ema',
  'state_dict_ema', 'ema'); keys prefixed by DataParallel/DDP or EMA wrappers ('module.') and
  torch.compile ('_orig_mod.'), in any order.

  Args:
    obj: what `torch.load` or safetensors gave, or a mapping.
    where: the file or object, for messages.
    ema: take the EMA weights; a file without them is an error. Without `ema`, the plain weights;
      a file holding only EMA weights is an error (the user chooses).

  Raises:
    CheckpointError: no state_dict, or not the one asked for, naming `where`.
  """
  if not isinstance(obj, Mapping):
    raise CheckpointError(f"{where} does not hold a state_dict (a mapping of names to tensors); "
                          f"found {type(obj).__name__}")
  if _is_state_dict(obj):
    if ema:
      raise CheckpointError(f"{where} holds one set of weights (a state_dict), no EMA weights "
                            "beside them; convert it without --ema (ema=False)")
  else:
    obj = _select(obj, where, ema)
  return _strip_prefixes(obj, where)


def _numpy(value: Any) -> np.ndarray:
  if hasattr(value, "detach"):  # a torch.Tensor; numpy has no bfloat16, so floats go via float32
    value = value.detach().cpu()
    return (value.float() if value.is_floating_point() else value).numpy()
  return np.asarray(value)


def state_dict_of(source: Any, ema: bool = False) -> dict[str, np.ndarray]:
  """The flat numpy state_dict of a mapping (a state_dict or a training checkpoint), a torch module
  or a checkpoint path; with `ema`, the checkpoint's EMA weights (see `unwrap_state_dict`); under
  torchvision's keys when it is in transformers' layout (`convert_hf`)."""
  from resnet_jax.weights import convert_hf
  if isinstance(source, (str, os.PathLike)):
    state = load_state_dict(source, ema)
  elif hasattr(source, "state_dict") and callable(source.state_dict):
    state = unwrap_state_dict(dict(source.state_dict()), f"the given {type(source).__name__}", ema)
  else:
    state = unwrap_state_dict(source, "the given object", ema)
  state = convert_hf.torchvision_keys(state, source)
  return {k: _numpy(v) for k, v in state.items()}


# ----------------------------------------------------------------------------------------------
# Conversion.

def count_blocks(state_dict: Mapping[str, Any], key: str, first_stage: int = 0) -> tuple[int, ...]:
  """Blocks per stage, read from which `key.format(stage=, block=)` names a state_dict holds."""
  sizes = []
  while key.format(stage=first_stage + len(sizes), block=0) in state_dict:
    stage, blocks = first_stage + len(sizes), 0
    while key.format(stage=stage, block=blocks) in state_dict:
      blocks += 1
    sizes.append(blocks)
  return tuple(sizes)


def infer_arch(state_dict: Mapping[str, Any]) -> Inferred:
  """Names the architecture a state_dict belongs to, from its keys and shapes: torchvision's when
  they are one of torchvision's ResNets exactly (timm's resnet18, resnet50... share them), else the
  timm ResNet they fit (`convert_timm.infer_timm_arch`: deep stems, average-pool shortcuts, SE/ECA,
  ResNetV2...), else the torchvision ResNet of the same depth, so that `check_state_dict` lists
  how the keys differ from it. timm's anti-aliased twins of torchvision's names (resnetblur18,
  resnetaa50) have the same keys: such a file is taken for torchvision's; pass their name.

  Raises:
    ConversionError: not a ResNet of either kind, or several timm names fit alike (naming them).
  """
  from resnet_jax.weights import convert_timm
  try:
    inferred = infer_torchvision_arch(state_dict)
  except ConversionError as error:
    inferred, refusal = None, error
  if inferred is not None and _fits(state_dict, torchvision_layout(inferred.arch,
                                                                   inferred.num_classes)):
    return inferred
  candidates = convert_timm.timm_candidates(state_dict)
  # timm's structure of torchvision's name (plus its anti-aliased twins, which no key tells apart):
  # torchvision's name, whose keys `check_state_dict` then lists where they differ.
  if inferred is not None and (inferred.arch in candidates or not candidates):
    return inferred
  if candidates:
    return convert_timm.infer_timm_arch(state_dict)  # One name, or an error naming them all.
  raise refusal


def _fits(state_dict: Mapping[str, Any], layout: Mapping[str, tuple]) -> bool:
  """Whether the state_dict has exactly the layout's keys, with its shapes."""
  return not any(_differences(state_dict, layout))


def _differences(state_dict: Mapping[str, Any], expected: Mapping[str, tuple]
                 ) -> tuple[list, list, list]:
  """(missing keys, unexpected keys, (key, expected shape, found shape) of mis-shaped ones) of a
  state_dict against a layout; BatchNorm's `num_batches_tracked` is not compared."""
  found = {k: tuple(v.shape) for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
  missing = [k for k in expected if k not in found]
  unexpected = [k for k in found if k not in expected]
  misshaped = [(k, expected[k][1], found[k]) for k in expected
               if k in found and found[k] != expected[k][1]]
  return missing, unexpected, misshaped


def infer_torchvision_arch(state_dict: Mapping[str, Any]) -> Inferred:
  """Names the torchvision architecture of a state_dict's depth and widths, from its keys and shapes.

  Reads the block type (a `conv3` means Bottleneck), the number of blocks per stage, the grouping and
  width of the first 3x3 convolution (ResNeXt, Wide ResNet) and the classifier's size.

  Raises:
    ConversionError: no torchvision ResNet has that structure.
  """
  if "layer1.0.conv1.weight" not in state_dict:
    some = ", ".join(list(state_dict)[:8])
    raise ConversionError(f"not a ResNet state_dict (no 'layer1.0.conv1.weight'); keys start: {some}")
  bottleneck = "layer1.0.conv3.weight" in state_dict
  sizes = count_blocks(state_dict, "layer{stage}.{block}.conv1.weight", first_stage=1)
  groups, width_per_group = 1, 64
  if bottleneck:
    if "layer1.0.conv2.weight" not in state_dict:
      raise ConversionError("cannot infer the architecture: no 'layer1.0.conv2.weight'; pass arch= "
                            "to have every missing key listed")
    width, in_per_group = state_dict["layer1.0.conv2.weight"].shape[:2]
    planes = state_dict["layer1.0.conv3.weight"].shape[0] // Bottleneck.expansion
    groups = width // in_per_group
    width_per_group = width // groups * 64 // planes
  num_classes = state_dict_classes(state_dict)
  found = ("Bottleneck" if bottleneck else "BasicBlock", tuple(sizes), groups, width_per_group)
  for arch in TORCHVISION_ARCHS:
    m = get_model(arch)
    if (m.block.__name__, tuple(m.stage_sizes), m.groups, m.width_per_group) == found:
      return Inferred(arch, num_classes)
  raise ConversionError(
      f"no torchvision ResNet has {found[0]} blocks {found[1]}, groups={groups} and "
      f"width_per_group={width_per_group}; pass arch= one of {', '.join(TORCHVISION_ARCHS)}")


def check_state_dict(state_dict: Mapping[str, Any], arch: str, num_classes: Optional[int],
                     model=None, *, layout=None, infer=None) -> None:
  """Raises `ConversionError` listing every missing, unexpected and mis-shaped key, if any; against
  `layout` (another key map's, e.g. timm's) when given, else `model` (a built `ResNet` with its
  overrides), else `arch`'s defaults. `infer` (default `infer_arch`) names a better-fitting arch."""
  if layout is not None:
    expected = layout
  else:
    expected = torchvision_layout(arch, num_classes) if model is None else layout_of(model)
  missing, unexpected, misshaped = _differences(state_dict, expected)
  if not (missing or unexpected or misshaped):
    return
  head = f"num_classes={num_classes}" if num_classes else "no classifier"
  lines = [f"the state_dict does not fit {arch} ({head}):"]
  for title, items in (("missing keys", missing), ("unexpected keys", unexpected),
                       ("mis-shaped keys (expected vs found)", misshaped)):
    if items:
      lines.append(f"  {title} ({len(items)}):")
      for item in items[:_LISTED]:
        lines.append(f"    {item[0]}: {item[1]} vs {item[2]}" if isinstance(item, tuple)
                     else f"    {item}")
      if len(items) > _LISTED:
        lines.append(f"    ... and {len(items) - _LISTED} more")
  try:
    guess = (infer or infer_arch)(state_dict)
    if guess.arch != arch:
      lines.append(f"  its keys and shapes look like {guess.arch}; pass arch={guess.arch!r}")
  except ConversionError:
    pass
  raise ConversionError("\n".join(lines), missing, unexpected, misshaped)


def _is_float(dtype: np.dtype) -> bool:
  # ml_dtypes' bfloat16 (what safetensors gives for BF16) is not a numpy floating subtype.
  return np.issubdtype(dtype, np.floating) or np.dtype(dtype).name == "bfloat16"


def check_values(state_dict: Mapping[str, np.ndarray], keys, allow_nonfinite: bool = False) -> None:
  """Raises `ConversionError` naming the `keys` whose values are not floating point (an int64
  tensor would silently become a zero or garbage weight) or, unless `allow_nonfinite`, hold NaN or
  infinity (a model that outputs NaN)."""
  not_float = [f"{k} ({state_dict[k].dtype})" for k in keys if not _is_float(state_dict[k].dtype)]
  if not_float:
    raise ConversionError(f"weights must be floating point; {len(not_float)} tensor(s) are not: "
                          f"{', '.join(not_float[:5])}{' ...' if len(not_float) > 5 else ''}")
  if allow_nonfinite:
    return
  bad = [f"{k} ({int(np.size(v) - np.count_nonzero(np.isfinite(v)))} of {np.size(v)})"
         for k in keys for v in [state_dict[k]] if not np.all(np.isfinite(v))]
  if bad:
    raise ConversionError(f"{len(bad)} tensor(s) hold NaN or infinite values: "
                          f"{', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}; pass "
                          "allow_nonfinite=True (--allow-nonfinite) to convert them anyway")


def from_torchvision(source: Any, arch: Optional[str] = None, *, ema: bool = False,
                     allow_nonfinite: bool = False, model=None) -> dict[str, dict]:
  """Converts torchvision ResNet weights to Flax variables for `models.get_model(arch)`.

  The classifier size is read from `fc.weight` (a state_dict without `fc` gives a headless model's
  variables: build it with `get_model(arch, num_classes=None)`). Floating-point values become float32.
  `num_batches_tracked` is dropped: Flax's BatchNorm uses a fixed momentum and does not count.

  Args:
    source: a state_dict (of torch tensors or numpy arrays), a training checkpoint (torchvision's
      or timm's train.py, see `unwrap_state_dict`), a torch module, or the path of a `.pth`/`.pt`
      file (loaded with `weights_only=True`) or of a `.safetensors` file (no torch needed).
    arch: a registered model name; inferred from the keys and shapes when None, and logged (INFO).
    ema: convert the checkpoint's EMA weights ('model_ema', 'state_dict_ema', 'ema') instead of
      its plain ones ('model', 'state_dict'), the default; an error when it holds none.
    allow_nonfinite: convert NaN and infinite values instead of refusing them.
    model: the built `ResNet` the weights are for, when it has overrides `arch` alone does not
      describe (1 input channel, other stage sizes...); its classifier size is used.

  Returns:
    {'params': ..., 'batch_stats': ...} as nested dicts of numpy arrays.

  Raises:
    ConversionError: the weights do not fit `arch` (listing missing, unexpected and mis-shaped keys),
      a tensor is not floating point, or (unless `allow_nonfinite`) holds NaN or infinity.
    CheckpointError: `source` is a file that cannot be read as a checkpoint.
  """
  from resnet_jax.weights import convert_timm
  state = state_dict_of(source, ema)
  if arch in convert_timm.TIMM_ONLY:  # timm's names that are not torchvision's use timm's keys
    return convert_timm.from_timm(state, arch, allow_nonfinite=allow_nonfinite, model=model)
  if model is not None:
    arch, num_classes = arch or "the given model", model.num_classes or None
  elif arch is None:
    inferred = infer_arch(state)
    log.info("inferred architecture: %s", inferred)
    arch, num_classes = inferred.arch, inferred.num_classes
  else:
    num_classes = state_dict_classes(state)
    if num_classes is None:
      log.info("no fc.weight: converting %s without a classifier", arch)
  check_state_dict(state, arch, num_classes, model=model)
  layout = torchvision_layout(arch, num_classes) if model is None else layout_of(model)
  check_values(state, layout, allow_nonfinite)
  return variables_from(state, layout)


def variables_from(state: Mapping[str, np.ndarray], layout) -> dict[str, dict]:
  """Flax variables (float32 numpy, Flax layouts) from a checked state_dict and its `layout`."""
  flat = {}
  for key, (path, _) in layout.items():
    value = state[key].astype(np.float32, copy=False)
    # A copy, always: a torch module's arrays share memory with it, and torch updates in place.
    flat[path] = np.array(to_flax_layout(value), order="C", copy=True)
  return traverse_util.unflatten_dict(flat)


def to_torchvision(variables: Mapping[str, Any], arch: Optional[str] = None, *,
                   as_numpy: bool = False, model=None) -> dict[str, Any]:
  """Converts Flax variables to a state_dict that torchvision's model loads with `strict=True`.

  Adds each BatchNorm's `num_batches_tracked` (0: Flax does not count batches). Values are float32.

  Args:
    variables: {'params', 'batch_stats'} of a ResNet from `models.get_model`.
    arch: when given, the variables are checked against it (keys and shapes) first.
    as_numpy: return numpy arrays instead of torch tensors (for safetensors, and without torch).
    model: the built model the variables belong to (e.g. `spec.build()`), to check them against its
      overrides (input channels, stage sizes) rather than `arch`'s defaults.

  Returns:
    An ordered dict from torchvision key to tensor (or array).
  """
  from resnet_jax.weights import convert_timm
  if arch in convert_timm.TIMM_ONLY:
    return convert_timm.to_timm(variables, arch, as_numpy=as_numpy, model=model)
  state = state_dict_from(variables, torch_key)
  if arch is not None:
    check_state_dict(state, arch, state_dict_classes(state), model)
  return _as_torch(state, as_numpy)


def _as_torch(state: dict[str, np.ndarray], as_numpy: bool) -> dict[str, Any]:
  if as_numpy:
    return state
  import torch
  return {k: torch.from_numpy(v) for k, v in state.items()}


def state_dict_from(variables: Mapping[str, Any], key) -> dict[str, np.ndarray]:
  """The float32 numpy state_dict of Flax `variables` under the key map `key` (Flax path -> name),
  with a zero `num_batches_tracked` for each BatchNorm."""
  flat = traverse_util.flatten_dict({k: variables[k] for k in ("params", "batch_stats")
                                     if k in variables})
  state = {}
  for path, value in flat.items():
    value = np.asarray(value)
    if value.dtype != np.float32 and (np.issubdtype(value.dtype, np.floating)
                                      or value.dtype.kind == "V"):  # V: ml_dtypes' bfloat16
      value = value.astype(np.float32)
    state[key(path)] = np.array(_to_torch_layout(value), order="C", copy=True)
    if path[0] == "batch_stats" and path[-1] == "var":
      module = key(path).rsplit(".", 1)[0]
      state[f"{module}.num_batches_tracked"] = np.zeros((), np.int64)
  return state


# ----------------------------------------------------------------------------------------------
# Verification against torchvision (tests, `resnet-jax verify`, benchmarks/verify_gpu.py).

def replace_head(variables: Mapping[str, Any], arch: str, num_classes: Optional[int],
                 seed: int = 0) -> dict:
  """The same variables with a new classifier of `num_classes` outputs (none for 0 or None).

  The new `fc` is initialised as `models.ResNet` (and torch's nn.Linear) initialise theirs, for
  fine-tuning on another label set; a timm ResNetV2's 1x1-conv `head_fc` as timm does (N(0, 0.01), 0).
  """
  from resnet_jax.models.timm_models import ResNetV2
  params = {k: v for k, v in variables["params"].items() if k not in ("fc", "head_fc")}
  if num_classes and isinstance(get_model(arch), ResNetV2):
    features = params["norm"]["scale"].shape[0]
    kernel = jax.random.normal(jax.random.key(seed), (1, 1, features, num_classes), jnp.float32)
    params["head_fc"] = {"kernel": np.asarray(0.01 * kernel),
                         "bias": np.zeros((num_classes,), np.float32)}
  elif num_classes:
    features = torchvision_layout(arch, num_classes)["fc.weight"][1][1]
    kernel_key, bias_key = jax.random.split(jax.random.key(seed))
    limit = 1.0 / np.sqrt(features)
    params["fc"] = {
        "kernel": np.asarray(dense_kernel_init(kernel_key, (features, num_classes), jnp.float32)),
        "bias": np.asarray(jax.random.uniform(bias_key, (num_classes,), jnp.float32, -limit, limit)),
    }
  return {**variables, "params": params}


# ----------------------------------------------------------------------------------------------
# Writing state_dicts (`resnet-jax export`).

EXPORT_SUFFIXES = (".pth", ".pt", ".safetensors")


def check_export_path(path: str | os.PathLike) -> None:
  """Raises unless `save_state_dict` can write a new file at `path`: before any work is done.

  Raises:
    ValueError: another suffix (a torch pickle named .npz would be read as something else).
    FileNotFoundError: the folder of `path` does not exist.
    FileExistsError: `path` exists; nothing is overwritten.
  """
  path = os.fspath(path)
  if not path.endswith(EXPORT_SUFFIXES):
    raise ValueError(f"{path}: unknown format; name the file .pth or .pt (torch.save, needs torch) "
                     "or .safetensors")
  folder = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(folder):
    raise FileNotFoundError(f"{path}: no folder {folder}; create it first")
  if os.path.lexists(path):
    raise FileExistsError(f"{path} exists; choose a new file")


def save_state_dict(state: Mapping[str, np.ndarray], path: str | os.PathLike, spec=None) -> None:
  """Writes a torchvision state_dict (numpy arrays) to a new `.pth`/`.pt` (torch.save) or
  `.safetensors` file, with `spec` (a ModelSpec) where `read_checkpoint` finds it again.

  The file gets the permissions of any new file (0666 less the umask) whatever the format, and
  appears whole or not at all: it is written beside `path` and renamed.

  Raises:
    As `check_export_path`.
  """
  path = os.fspath(path)
  check_export_path(path)
  text = None if spec is None else json.dumps(spec.to_json())
  if path.endswith(".safetensors"):
    from safetensors.numpy import save
    metadata = {} if spec is None else {"arch": spec.arch, SPEC_METADATA_KEY: text}
    data = save(dict(state), metadata=metadata)
    write = lambda f: f.write(data)  # noqa: E731
  else:
    import collections
    import torch
    tensors = collections.OrderedDict((k, torch.from_numpy(np.asarray(v))) for k, v in state.items())
    # What torch's load_state_dict reads of `_metadata` is module-name keys: ours is none of them.
    tensors._metadata = {} if spec is None else {SPEC_METADATA_KEY: text}
    write = lambda f: torch.save(tensors, f)  # noqa: E731
  partial = f"{path}.{os.getpid()}.partial"
  # os.open applies the umask to 0o666, as open() does; safetensors' own writer would not.
  fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
  try:
    with os.fdopen(fd, "wb") as f:
      write(f)
    os.replace(partial, path)
  finally:
    if os.path.exists(partial):
      os.remove(partial)
