"""`resnet-jax evaluate`: a checkpoint's top-1/top-5 error under the paper's testing protocols.

A converted model (`resnet-jax convert --out DIR`) or a training workdir is scored on a dataset
split with one of `resnet_jax.data.protocols`' views: 'center' (one crop), 'ten_crop' (AlexNet's 10
crops) or 'multi_scale' (the fully-convolutional form: whole images at 5 scales and their mirrors),
the scores averaged over the views. Views go to the devices in fixed-size calls split across every
local device; each process scores its own share of the split (examples p, p + P, ...), and the
counts are summed over processes, so every example counts exactly once.

The model, its input size s, normalisation and class names come from its `ModelSpec`. The crop is s;
the resize before it is the spec's for 'center' (what training evaluated with, or torchvision's
published 256/232) and round(s * 256 / 224) for 'ten_crop'; the multi-scale sides are
round(s * {224, 256, 384, 480, 640} / 224).
JAX is imported inside the functions, so that `resnet-jax --help` stays instant.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np

from resnet_jax.data import input_pipeline, protocols

# The paper's test resize for a 224 crop; other input sizes keep the ratio.
PAPER_RESIZE_RATIO = protocols.TEST_RESIZE / protocols.PAPER_CROP


@dataclasses.dataclass
class Result:
  """What `evaluate` measured. `scores`, `labels` and `indices` are this process's examples only.

  Attributes:
    errors: {1: top-1 error, 5: top-5 error} in percent, over every example of the split.
    count: number of examples scored, over all processes.
    views: views per image (of the first image; multi-scale on mixed sizes varies in shape only).
    scores: (local examples, classes) averaged softmax probabilities or logits.
    labels, indices: each local example's label and index in the split.
    split: the split evaluated ('' for a source object).
  """
  errors: dict
  count: int
  views: int
  scores: np.ndarray
  labels: np.ndarray
  indices: np.ndarray
  split: str = ""


@dataclasses.dataclass
class Preprocessing:
  """How the model expects its input: normalisation and the input (crop) size it was trained at."""
  mean: tuple
  std: Optional[tuple]
  image_size: int


# ----------------------------------------------------------------------------------------------
# What the checkpoint and the user say about the input.

def preprocessing(spec, *, mean: Optional[Sequence[float]] = None,
                  std: Optional[Sequence[float]] = None,
                  image_size: Optional[int] = None) -> Preprocessing:
  """The normalisation and input size to evaluate with: the model's `ModelSpec`, unless overridden."""
  mean = spec.mean_255 if mean is None else mean
  std = spec.std_255 if std is None else std
  return Preprocessing(mean=tuple(float(m) for m in mean),
                       std=None if std is None else tuple(float(s) for s in std),
                       image_size=int(spec.image_size if image_size is None else image_size))


def view_sizes(protocol: str, image_size: int, *, resize_size: Optional[int] = None,
               scales: Optional[Sequence[int]] = None) -> dict:
  """The size keywords of `protocols.get_protocol(protocol, ...)` for a model of `image_size` input."""
  if protocol in ("center", "ten_crop"):
    resize = resize_size or int(round(image_size * PAPER_RESIZE_RATIO))
    if resize < image_size:
      raise ValueError(f"resize size {resize} is smaller than the crop {image_size}")
    return {"resize_size": resize, "crop_size": image_size}
  if protocol == "multi_scale":
    scales = scales or [int(round(s * image_size / protocols.PAPER_CROP)) for s in protocols.MULTI_SCALES]
    return {"scales": tuple(int(s) for s in scales)}
  raise ValueError(f"unknown protocol {protocol!r}; known protocols: {', '.join(protocols.PROTOCOLS)}")


# Datasets read from --data-dir as training's config.source reads them: image folders and the
# ArrayRecord copies `resnet-jax prepare --format array_record` writes.
DATA_DIR_SOURCES = ("folder", "array_record")


def default_split(dataset: str, data_dir: str = "") -> str:
  """The split the paper reports on: 'validation' for ImageNet and for data read from a directory
  (the name `prepare` and the README use; a directory holding 'val' and no 'validation', as
  torchvision's ImageNet layout, gives 'val'), else 'test'."""
  if dataset in DATA_DIR_SOURCES:
    root = os.path.expanduser(data_dir)
    if not os.path.isdir(os.path.join(root, "validation")) and os.path.isdir(os.path.join(root, "val")):
      return "val"
    return "validation"
  return "validation" if dataset.startswith("imagenet") else "test"


def load_source(dataset: str, split: Optional[str] = None, data_dir: str = "",
                class_names: Optional[Sequence[str]] = None, channels: int = 3):
  """A raw-image source of the input pipeline: 'digits', 'folder' (DATA_DIR/SPLIT/<class>/**, as
  training reads it), 'array_record' (DATA_DIR/SPLIT/, a `prepare --format array_record` copy), the
  last two labelled by `class_names`, the model's classes; or a prepared TFDS dataset by name (e.g.
  'cifar10', 'imagenet2012')."""
  split = split or default_split(dataset, data_dir)
  if dataset == "digits":
    return input_pipeline.get_source("digits", split)
  if dataset in DATA_DIR_SOURCES:
    if not data_dir:
      raise ValueError(f"--dataset {dataset} needs --data-dir ROOT (images in ROOT/SPLIT/)")
    if not class_names:
      raise ValueError("the checkpoint records no class names: the folder's labels cannot be matched "
                       "to the model's outputs")
    _check_classes(dataset, os.path.join(os.path.expanduser(data_dir), split), class_names)
    return input_pipeline.get_source(dataset, split, data_dir=data_dir, class_names=class_names,
                                     image_shape=(0, 0, channels))
  return input_pipeline.get_source("tfds", split, dataset=dataset, data_dir=data_dir)


def _check_classes(dataset: str, root: str, class_names: Sequence[str]) -> None:
  """Refuses, in one line, data whose classes the model does not have (labels would be wrong)."""
  if dataset == "folder":
    own = input_pipeline.class_folders(root) if os.path.isdir(root) else []
  else:
    path = os.path.join(root, "classes.json")
    own = []
    if os.path.exists(path):
      with open(path) as f:
        own = json.load(f)
  unknown = [name for name in own if name not in set(class_names)]
  if unknown:
    raise ValueError(f"{root} has {len(own)} classes, {len(unknown)} of them not among the model's "
                     f"{len(class_names)} (e.g. {unknown[0]!r}; the model's begin "
                     f"{', '.join(map(repr, class_names[:3]))}): evaluate a model trained on these "
                     f"classes")


def check_fit(spec, source, where: str) -> None:
  """Refuses, in one line naming both, a model whose class count or input channels are not the
  data's (a 1000-class RGB model on 10-class grey digits would score nonsense, not an error rate).

  Raises:
    ValueError: the mismatch.
  """
  classes = getattr(source, "num_classes", None)
  channels = np.asarray(source[0]["image"]).shape[-1] if len(source) else spec.in_channels
  if (classes is not None and classes != spec.num_classes) or channels != spec.in_channels:
    raise ValueError(f"the model ({spec.arch}) has {spec.num_classes} classes and takes "
                     f"{spec.in_channels}-channel images, but {where} has "
                     f"{classes if classes is not None else 'unknown'} classes and "
                     f"{channels}-channel images: evaluate a model trained on this data")


# ----------------------------------------------------------------------------------------------
# The model.

def build_model(spec, dtype: str = "float32"):
  """The model a `ModelSpec` describes, in the compute dtype."""
  from resnet_jax import models
  if not spec.num_classes:
    raise ValueError(f"the checkpoint's {spec.arch} has no classifier: nothing to evaluate")
  return spec.build(dtype=models.compute_dtype(dtype))


# ----------------------------------------------------------------------------------------------
# Evaluation.

def _read(source, indices: Sequence[int], pool) -> tuple[list, np.ndarray]:
  examples = list(pool.map(source.__getitem__, indices))
  return [e["image"] for e in examples], np.array([e["label"] for e in examples], np.int64)


def _sum_over_processes(values: np.ndarray) -> np.ndarray:
  import jax
  if jax.process_count() == 1:
    return values
  from jax.experimental import multihost_utils
  return np.asarray(multihost_utils.process_allgather(values)).sum(axis=0)


def score_examples(logits_fn: Callable, source, indices: Sequence[int], views_fn: Callable,
                   prep: Preprocessing, *, average: str, chunk: int, images_per_call: int,
                   num_classes: int, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
  """(averaged scores, labels) of `source[indices]`, `images_per_call` images at a time, each once."""
  from tqdm import tqdm
  scores, labels = [np.zeros((0, num_classes))], [np.zeros((0,), np.int64)]
  std = None if prep.std is None else np.array(prep.std)
  with concurrent.futures.ThreadPoolExecutor(8) as pool, tqdm(
      total=len(indices), desc="evaluate", unit="img", disable=not progress) as bar:
    for start in range(0, len(indices), images_per_call):
      images, block_labels = _read(source, indices[start:start + images_per_call], pool)
      scores.append(protocols.averaged_scores(logits_fn, images, views_fn, mean=np.array(prep.mean),
                                              std=std, average=average, chunk=chunk))
      labels.append(block_labels)
      bar.update(len(images))
  return np.concatenate(scores), np.concatenate(labels)


def _global_errors(scores: np.ndarray, labels: np.ndarray) -> tuple[dict, int]:
  """Top-1/top-5 errors (%) and the example count over every process's examples.

  With fewer than 5 classes, the "top-5" entry is the top-(number of classes) error, 0.
  """
  ks = (1, min(5, scores.shape[-1]))
  hits = [int(np.sum(np.asarray(protocols.topk_correct(scores, labels, k)))) if len(labels) else 0
          for k in ks]
  totals = _sum_over_processes(np.array(hits + [len(labels)], np.int64))
  count = int(totals[-1])
  return {k: 100.0 * (1.0 - h / count) for k, h in zip((1, 5), totals[:-1])}, count


def evaluate(variables_dir: Union[str, tuple], dataset: Union[str, Any], protocol: str = "center", *,
             split: Optional[str] = None, data_dir: str = "", average: str = "softmax",
             mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None,
             image_size: Optional[int] = None, resize_size: Optional[int] = None,
             scales: Optional[Sequence[int]] = None,
             per_device_batch: int = 16, images_per_call: int = 64, dtype: str = "float32",
             limit: Optional[int] = None, progress: bool = False) -> Result:
  """Top-1/top-5 error of a checkpoint on a dataset split under a testing protocol.

  Args:
    variables_dir: a `save_variables` directory (e.g. converted weights) or a training workdir; or
      a `(variables, ModelSpec)` pair as `checkpoints.load_variables` returns.
    dataset: 'digits', 'folder', 'array_record' or a TFDS name (see `load_source`), or a source object
      (a sequence of {'image': uint8 HWC, 'label': int}).
    protocol: 'center', 'ten_crop' or 'multi_scale'.
    split, data_dir: which split (default: `default_split`), and where the data lives (see
      `load_source`).
    average: average softmax probabilities ('softmax') or logits ('logits') over the views.
    mean, std, image_size: override the input the model's spec records (see `preprocessing`).
    resize_size, scales: override the view sizes (see `view_sizes`); 'center' resizes to the
      spec's resize (training's center evaluation, or torchvision's published 256/232).
    per_device_batch: views per device per call; calls hold `per_device_batch * local devices`
      views, zero-padded. Smaller wastes less padding on multi-scale views of mixed-size images.
    images_per_call: images whose views are made and scored together (host memory).
    dtype: compute dtype ('float32', 'bfloat16' or 'auto').
    limit: score only the first `limit` examples (quick checks).
    progress: show a progress bar.

  Returns:
    A `Result`.
  """
  import jax
  from resnet_jax.training import checkpoints
  from resnet_jax.training import sharding
  variables, spec = (checkpoints.load_model(variables_dir)
                     if isinstance(variables_dir, (str, os.PathLike)) else variables_dir)
  prep = preprocessing(spec, mean=mean, std=std, image_size=image_size)
  if protocol == "center" and resize_size is None and image_size is None:
    # The resize the model was evaluated or published with (232 for torchvision's V2 weights).
    resize_size = spec.resize_size
  # The resize filter the model was trained or published with (bicubic for most of timm's).
  views_fn = protocols.get_protocol(protocol, interpolation=spec.interpolation,
                                    **view_sizes(protocol, prep.image_size,
                                                 resize_size=resize_size, scales=scales))
  if isinstance(dataset, str):
    split = split or default_split(dataset, data_dir)
    source = load_source(dataset, split, data_dir, spec.class_names, spec.in_channels)
    check_fit(spec, source, f"{dataset}/{split}")
  else:
    source = dataset
    check_fit(spec, source, "the data")
  model = build_model(spec, dtype)
  logits_fn = sharding.sharded_logits_fn(model, variables)

  n = len(source) if limit is None else min(limit, len(source))
  if n == 0:
    raise ValueError("the split is empty: nothing to evaluate")
  indices = np.arange(jax.process_index(), n, jax.process_count())
  scores, labels = score_examples(
      logits_fn, source, indices, views_fn, prep, average=average,
      chunk=per_device_batch * jax.local_device_count(), images_per_call=images_per_call,
      progress=progress, num_classes=spec.num_classes)
  errors, count = _global_errors(scores, labels)
  first = source[int(indices[0])]["image"] if len(indices) else source[0]["image"]
  return Result(errors=errors, count=count, views=protocols.num_views(views_fn, first),
                scores=scores, labels=labels, indices=indices,
                split=split if isinstance(dataset, str) else "")


# How reports name the protocols.
PROTOCOL_NAMES = {"center": "center crop", "ten_crop": "10-crop", "multi_scale": "multi-scale"}
