"""torchvision's official ResNet weights by name: downloaded once, hash-checked, converted to Flax."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
import tempfile
import urllib.error
import urllib.request
from typing import Any, NamedTuple, Optional

from resnet_jax.weights import convert
from resnet_jax.data import transforms
from resnet_jax.models.resnet import ResNet
from resnet_jax.weights.spec import ModelSpec

log = logging.getLogger(__name__)

_BASE_URL = "https://download.pytorch.org/models/"
_CHUNK = 1 << 20
# torch.hub's convention: "name-<first hex digits of the SHA-256>.ext".
_HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,64})\.")


@dataclasses.dataclass(frozen=True)
class Weights:
  """One of torchvision's published checkpoints.

  Attributes:
    arch: the model it belongs to.
    name: torchvision's enum name, e.g. 'IMAGENET1K_V2'.
    url: where to download it (https:// or file://).
    sha256: the published start of the file's SHA-256: the 8 hex digits in torchvision's file names,
      which is what `torch.hub` checks too.
    resize_size: the preprocessing's resize (256 for V1 recipes, 232 for V2).
  """
  arch: str
  name: str
  url: str
  sha256: str
  resize_size: int

  @property
  def filename(self) -> str:
    return self.url.rsplit("/", 1)[-1]

  def transforms(self) -> transforms.ImageClassification:
    return transforms.for_resize(self.resize_size)


# From torchvision 0.28's `<Arch>_Weights` enums: (arch, name, file, resize). IMAGENET1K_V1 is the
# original recipe; V2 the 2021 "training recipe" weights, evaluated at resize 232.
_TABLE = (
    ("resnet18", "IMAGENET1K_V1", "resnet18-f37072fd.pth", 256),
    ("resnet34", "IMAGENET1K_V1", "resnet34-b627a593.pth", 256),
    ("resnet50", "IMAGENET1K_V1", "resnet50-0676ba61.pth", 256),
    ("resnet50", "IMAGENET1K_V2", "resnet50-11ad3fa6.pth", 232),
    ("resnet101", "IMAGENET1K_V1", "resnet101-63fe2227.pth", 256),
    ("resnet101", "IMAGENET1K_V2", "resnet101-cd907fc2.pth", 232),
    ("resnet152", "IMAGENET1K_V1", "resnet152-394f9c45.pth", 256),
    ("resnet152", "IMAGENET1K_V2", "resnet152-f82ba261.pth", 232),
    ("resnext50_32x4d", "IMAGENET1K_V1", "resnext50_32x4d-7cdf4587.pth", 256),
    ("resnext50_32x4d", "IMAGENET1K_V2", "resnext50_32x4d-1a0047aa.pth", 232),
    ("resnext101_32x8d", "IMAGENET1K_V1", "resnext101_32x8d-8ba56ff5.pth", 256),
    ("resnext101_32x8d", "IMAGENET1K_V2", "resnext101_32x8d-110c445d.pth", 232),
    ("resnext101_64x4d", "IMAGENET1K_V1", "resnext101_64x4d-173b62eb.pth", 232),
    ("wide_resnet50_2", "IMAGENET1K_V1", "wide_resnet50_2-95faca4d.pth", 256),
    ("wide_resnet50_2", "IMAGENET1K_V2", "wide_resnet50_2-9ba9bcbe.pth", 232),
    ("wide_resnet101_2", "IMAGENET1K_V1", "wide_resnet101_2-32ee1156.pth", 256),
    ("wide_resnet101_2", "IMAGENET1K_V2", "wide_resnet101_2-d733dc28.pth", 232),
)
WEIGHTS: dict[tuple[str, str], Weights] = {
    (arch, name): Weights(arch, name, _BASE_URL + file, file.rsplit("-", 1)[1].split(".")[0], resize)
    for arch, name, file, resize in _TABLE
}


class DownloadError(OSError):
  """The weights could not be fetched, or the file fetched is not the one published."""


class Pretrained(NamedTuple):
  """What `pretrained` returns: `model.apply(variables, transform(images))` gives the logits."""
  model: ResNet
  variables: dict
  transform: transforms.ImageClassification


def list_weights(arch: Optional[str] = None) -> list[str]:
  """Weights names of `arch` ('IMAGENET1K_V1', ...), or 'arch.NAME' for all when arch is None."""
  if arch is None:
    return [f"{a}.{n}" for a, n in WEIGHTS]
  return [n for a, n in WEIGHTS if a == arch]


def get_weights(arch: str, name: str = "DEFAULT") -> Weights:
  """Looks up torchvision's weights `name` of `arch`.

  Args:
    arch: a torchvision architecture, e.g. 'resnet50'.
    name: 'IMAGENET1K_V1', 'IMAGENET1K_V2', torchvision's spelling 'ResNet50_Weights.IMAGENET1K_V2',
      or 'DEFAULT' (torchvision's: the best available, V2 where there is one).

  Raises:
    ValueError: no such weights, naming those there are.
  """
  name = name.rsplit(".", 1)[-1].upper()
  available = list_weights(arch)
  if not available:
    raise ValueError(f"torchvision publishes no weights for {arch!r}; architectures with weights: "
                     f"{', '.join(sorted({a for a, _ in WEIGHTS}))}")
  if name == "DEFAULT":
    name = max(available)  # V2 > V1
  if (arch, name) not in WEIGHTS:
    raise ValueError(f"unknown weights {name!r} for {arch}; known: {', '.join(available)}, DEFAULT, "
                     "or the path of a local .pth/.safetensors file")
  return WEIGHTS[arch, name]


def cache_dir() -> str:
  """$RESNET_JAX_CACHE, else $XDG_CACHE_HOME/resnet_jax, else ~/.cache/resnet_jax."""
  if os.environ.get("RESNET_JAX_CACHE"):
    return os.environ["RESNET_JAX_CACHE"]
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "resnet_jax")


def _torch_hub_dir() -> str:
  # Where torchvision itself caches these files; a user who ran torchvision already has them.
  torch_home = os.environ.get("TORCH_HOME") or os.path.join(
      os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "torch")
  return os.path.join(torch_home, "hub", "checkpoints")


def sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(_CHUNK), b""):
      digest.update(chunk)
  return digest.hexdigest()


def fetch(weights: Weights, directory: Optional[str] = None) -> str:
  """The local path of `weights`' file, downloading it into `directory` (`cache_dir()`) once.

  A file already in the cache, or in torch.hub's, is used after its hash is checked. A download goes
  to a temporary file that replaces the target only when its hash matches, so an interrupted or
  corrupt download never lands in the cache.

  Raises:
    DownloadError: no network (the message says how to pass a local file), or a hash mismatch.
  """
  directory = directory or cache_dir()
  target = os.path.join(directory, weights.filename)
  for path in (target, os.path.join(_torch_hub_dir(), weights.filename)):
    if os.path.isfile(path):
      digest = sha256(path)
      if not digest.startswith(weights.sha256):
        raise DownloadError(f"{path} has SHA-256 {digest}, but {weights.arch} {weights.name} is "
                            f"published with {weights.sha256}...; delete the file to download it again")
      return path
  os.makedirs(directory, exist_ok=True)
  log.info("downloading %s to %s", weights.url, target)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=weights.filename + ".", suffix=".part")
  try:
    digest = hashlib.sha256()
    try:
      with os.fdopen(fd, "wb") as out, urllib.request.urlopen(weights.url, timeout=60) as response:
        for chunk in iter(lambda: response.read(_CHUNK), b""):
          digest.update(chunk)
          out.write(chunk)
    except (urllib.error.URLError, OSError) as e:
      raise DownloadError(
          f"could not download {weights.arch} {weights.name} from {weights.url}: {e}.\n"
          f"Without network access: download {weights.filename} elsewhere (torchvision keeps it in "
          f"~/.cache/torch/hub/checkpoints) and pass its path, as "
          f"resnet_jax.pretrained({weights.arch!r}, weights='/path/to/{weights.filename}') or "
          f"`--weights /path/to/{weights.filename}`, or copy it to {target}") from e
    if not digest.hexdigest().startswith(weights.sha256):
      raise DownloadError(f"the file downloaded from {weights.url} has SHA-256 {digest.hexdigest()}, "
                          f"not the published {weights.sha256}...: corrupt download or changed "
                          "file; nothing was cached")
    os.replace(tmp, target)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return target


def _is_path(weights: str) -> bool:
  return os.path.exists(weights) or os.sep in weights or weights.endswith(
      (".pth", ".pt", ".safetensors"))


def _from_url(arch: str, url: str) -> Weights:
  filename = url.rsplit("/", 1)[-1]
  known = [w for w in WEIGHTS.values() if w.filename == filename]
  match = _HASH_IN_NAME.search(filename)
  if not match:
    raise DownloadError(f"{url} names no hash: download only files named like torch.hub's "
                        "'name-<sha256 prefix>.pth', or pass a local path")
  return Weights(arch, "url", url, match.group(1), known[0].resize_size if known else 256)


def resolve(arch: Optional[str], weights: str, directory: Optional[str] = None
            ) -> tuple[str, transforms.ImageClassification]:
  """The local checkpoint file for `weights` and its preprocessing.

  Args:
    arch: the architecture; may be None for a path or URL.
    weights: a torchvision weights name, a local path, or a URL (https://, file://) whose file name
      carries the start of its SHA-256 as torch.hub's do ('resnet50-11ad3fa6.pth').
    directory: the download cache.

  A file named like one of torchvision's gets that file's preprocessing; any other gets the V1
  recipe's (resize 256), which is logged.
  """
  if "://" in weights:
    w = _from_url(arch or "?", weights)
    return fetch(w, directory), w.transforms()
  if not _is_path(weights):
    if arch is None:
      raise ValueError(f"weights {weights!r} is not a file: name the architecture to look it up")
    w = get_weights(arch, weights)
    return fetch(w, directory), w.transforms()
  if not os.path.isfile(weights):
    if os.path.isdir(weights):
      raise FileNotFoundError(f"{weights} is a directory, not a weights file; a directory written by "
                              "`resnet-jax convert` or training is read with checkpoints.load_variables")
    raise FileNotFoundError(f"no weights file at {weights}")
  known = _published_file(weights)
  return weights, known.transforms() if known else transforms.ImageClassification()


def _published_file(path: str) -> Optional[Weights]:
  """torchvision's weights whose file name `path` has, or None."""
  return next((w for w in WEIGHTS.values() if w.filename == os.path.basename(path)), None)


def load_weights(arch: Optional[str], weights: str, cache: Optional[str] = None, *,
                 allow_nonfinite: bool = False, ema: bool = False, revision: Optional[str] = None
                 ) -> tuple[dict, ModelSpec]:
  """(Flax variables, ModelSpec) of a weights file, name or URL (see `resolve`), or of timm's
  weights by name ('resnet50.a1_in1k', 'timm/resnet50d.ra2_in1k@REV': see `hub_timm`; `revision`
  pins the Hub repository's revision).

  A file written by `resnet-jax export` (`.safetensors` or `.pth`) converts back as the model it
  describes (1 input channel, CIFAR stages...) with the preprocessing it was trained with;
  torchvision's weights get torchvision's published preprocessing, timm's the pretrained_cfg of their
  config.json. `arch` None: read from the export or timm's config, else inferred (logged). A
  training checkpoint's plain weights are read, or with `ema` its EMA weights (see
  `convert.unwrap_state_dict`).
  """
  from resnet_jax.weights import hub_timm
  if hub_timm.is_timm_name(weights):
    if ema:
      raise ValueError(f"--ema reads a training checkpoint's EMA weights; {weights} is timm's "
                       "published weights, which are one set")
    return hub_timm.load(weights, revision, arch=arch, allow_nonfinite=allow_nonfinite)
  if revision is not None:
    raise ValueError(f"--revision is for timm's weights on the Hugging Face Hub, not {weights!r}")
  path, transform = resolve(arch, weights, cache)
  state, exported = convert.read_checkpoint(path, ema)
  if exported is not None:
    if arch is not None and arch != exported.arch:
      raise ValueError(f"{path} holds a {exported.arch}, not a {arch}")
    variables = convert.from_torchvision(state, exported.arch, allow_nonfinite=allow_nonfinite,
                                         model=exported.build())
    source = {"kind": "export", "file": os.path.abspath(path), "sha256": sha256(path),
              "exported_from": exported.source}
    return variables, exported.replace(source=source)
  if _published_file(path) is None:
    log.info("%s is not one of torchvision's files: preprocessing with resize 256, crop 224", path)
  if arch is None:
    inferred = convert.infer_arch(state)
    log.info("inferred architecture: %s", inferred)
    arch = inferred.arch
  variables = convert.from_torchvision(state, arch, allow_nonfinite=allow_nonfinite)
  spec = torchvision_spec(arch, convert.variables_classes(variables), path, transform, weights)
  from resnet_jax.weights import convert_hf
  # A transformers model directory (its config.json says 'resnet'): its image processor's preprocessing.
  processor = (convert_hf.preprocessing_beside(path) if convert_hf.config_beside(path) is not None
               else None)
  if processor is not None:
    spec = spec.replace(**processor, source=dict(spec.source, kind="transformers"))
  return variables, spec.replace(source=dict(spec.source, ema=True)) if ema else spec


def torchvision_spec(arch: str, num_classes: Optional[int], path: str,
                     transform: transforms.ImageClassification, weights: str) -> ModelSpec:
  """The ModelSpec of torchvision weights read from `path`: torchvision's published preprocessing
  (`transform`'s resize) and, as the source, the weights' name and the file's SHA-256."""
  source = {"kind": "torchvision", "weights": weights, "file": os.path.abspath(path),
            "sha256": sha256(path)}
  return ModelSpec.for_torchvision(arch, num_classes, transform.resize_size, source)


def pretrained(arch: Optional[str], weights: str = "DEFAULT", *, cache: Optional[str] = None,
               allow_nonfinite: bool = False, ema: bool = False, revision: Optional[str] = None,
               **overrides: Any) -> Pretrained:
  """A ResNet with published weights (torchvision's or timm's) or a weights file: the part of
  `resnet_jax.pretrained` (the public entry, which also reads saved directories) below training.

  Args:
    arch: a registered architecture, e.g. 'resnet50'; or timm's weights name, e.g.
      'resnet50.a1_in1k' or 'timm/resnet50d.ra2_in1k' (with `weights` left 'DEFAULT').
    weights: torchvision's weights name ('IMAGENET1K_V1', 'IMAGENET1K_V2', 'DEFAULT'), downloaded
      once into the cache; the path of a local `.pth`/`.safetensors` file (no network needed); a
      URL whose file name carries its hash, like torchvision's. (A directory written by
      `resnet-jax convert` or training: `resnet_jax.pretrained`, which reads checkpoints.)
    cache: directory for torchvision's downloads (default `cache_dir()`); timm's weights use the
      Hugging Face cache ($HF_HUB_CACHE; $HF_HUB_OFFLINE=1 reads only from it).
    allow_nonfinite: convert weights holding NaN or infinity instead of refusing them.
    ema: the EMA weights of a training checkpoint file (torchvision's 'model_ema', timm's
      'state_dict_ema') or training workdir, instead of its plain weights (the default).
    revision: the Hub revision (branch, tag or commit) of timm's weights.
    **overrides: model options for `get_model`, e.g. dtype=jnp.bfloat16. num_classes is read from
      the weights.

  Returns:
    (model, variables, transform); `transform(images)` gives the NHWC batch the weights expect.
  """
  from resnet_jax.weights import hub_timm
  if arch is not None and weights == "DEFAULT" and hub_timm.is_timm_name(arch):
    arch, weights = None, arch
  if os.path.isdir(weights):
    raise ValueError(f"{weights} is a directory: resnet_jax.pretrained(None, DIR) reads converted "
                     "models and training workdirs")
  variables, spec = load_weights(arch, weights, cache, allow_nonfinite=allow_nonfinite, ema=ema,
                                 revision=revision)
  return Pretrained(spec.build(**overrides), variables, spec.transform())
