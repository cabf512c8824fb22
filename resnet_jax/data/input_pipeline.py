"""Image-classification input: TFDS, image-folder, in-memory, synthetic sources -> Grain -> device batches.

Every source is a random-access sequence of `{'image': uint8 HWC, 'label': int}`, so one Grain
`MapDataset` pipeline serves them all: shuffle (a fresh order each epoch), augment with a per-example
seeded generator, take this process's shard, batch. Positions are plain integers, so the iterator's
state is tiny and a restarted run reads exactly the batches it would have read.

Preparing a TFDS dataset (once, on a machine with TensorFlow; training itself needs none)::

  pip install tensorflow tensorflow-datasets
  # cifar10 downloads itself; imagenet2012 needs ILSVRC2012_img_{train,val}.tar placed in
  # ~/tensorflow_datasets/downloads/manual/ first, see
  # https://www.tensorflow.org/datasets/catalog/imagenet2012
  tfds build cifar10 --data_dir ~/tensorflow_datasets
  tfds build imagenet2012 --data_dir ~/tensorflow_datasets --file_format=array_record

`--file_format=array_record` matters: `tfds.data_source` needs random access, which TFRecord
files do not offer. Then train with `--config.dataset=cifar10 --config.data_dir=~/tensorflow_datasets`.
"""

from __future__ import annotations

import collections
import functools
import glob
import json
import logging
import math
import os
import zlib
from typing import Any, Callable, Iterator, Optional, Sequence

import grain
import numpy as np
from absl import flags
from PIL import Image

from resnet_jax.data import image_ops, images, jpeg, protocols

Example = dict[str, Any]
# torchvision's IMG_EXTENSIONS, matched case-insensitively as its `has_file_allowed_extension` does.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def class_folders(root: str) -> list[str]:
  """The sorted names of `root`'s folders, links to folders included: torchvision's `find_classes`."""
  return sorted(entry.name for entry in os.scandir(root) if entry.is_dir())


def class_images(root: str, class_names: Sequence[str]) -> list[tuple[str, int]]:
  """(path, label) of every image under `root/<class>/` at any depth, the label the class's index in
  `class_names`: torchvision's `make_dataset` (classes in sorted order, each walked with
  followlinks=True, the walk's (folder, subfolders, files) tuples sorted, then each folder's files;
  an image is a file with an IMAGE_EXTENSIONS ending in any case, hidden or not). A class without a
  folder has no images."""
  found, labels = [], {name: i for i, name in enumerate(class_names)}
  for name in sorted(class_names):
    label, folder = labels[name], os.path.join(root, name)
    if not os.path.isdir(folder):
      continue
    for directory, _, files in sorted(os.walk(folder, followlinks=True)):
      found += [(os.path.join(directory, f), label) for f in sorted(files)
                if f.lower().endswith(IMAGE_EXTENSIONS)]
  return found


# ----------------------------------------------------------------------------------------------
# Sources: random-access sequences of {'image': uint8 (H, W, C), 'label': int}.

class InMemorySource:
  """Images and labels held in numpy arrays; `images` is (N, H, W, C) uint8."""

  def __init__(self, images: np.ndarray, labels: np.ndarray, num_classes: Optional[int] = None,
               class_names: Sequence[str] = ()):
    if images.ndim != 4 or images.dtype != np.uint8:
      raise ValueError(f"images must be uint8 of shape (N, H, W, C), got {images.dtype} {images.shape}")
    if len(images) != len(labels):
      raise ValueError(f"{len(images)} images but {len(labels)} labels")
    self.images, self.labels = images, np.asarray(labels, np.int64)
    self.num_classes = num_classes or int(self.labels.max()) + 1
    self.class_names = tuple(class_names)

  def __len__(self) -> int:
    return len(self.images)

  def __getitem__(self, index: int) -> Example:
    return {"image": self.images[index], "label": int(self.labels[index])}


class ImageFolderSource:
  """`root/<class_name>/**/*.jpg`, ImageNet's usual layout; the images and their order are those of
  torchvision's `ImageFolder(root).samples` (`class_folders`, `class_images`).

  The classes are the sorted folder names of the training split, and every other split takes them
  from there (`class_names`): a validation folder that lacks a class keeps every label right, and one
  with a class training never saw is an error. Images are decoded by `images.load_image` with
  `channels` channels (16-bit and float images scaled, errors naming the file).
  """

  def __init__(self, root: str, class_names: Optional[Sequence[str]] = None, channels: int = 3):
    if not os.path.isdir(root):
      raise FileNotFoundError(f"image folder {root!r} does not exist (expected root/<class>/*.jpg)")
    folders = class_folders(root)
    if class_names is None:
      if len(folders) < 2:
        raise ValueError(f"image folder {root!r} has {len(folders)} class folder(s) "
                         f"{folders}; a classifier needs at least 2 classes")
      class_names = folders
    unknown = sorted(set(folders) - set(class_names))
    if unknown:
      raise ValueError(f"image folder {root!r} has class folder {unknown[0]!r} that the training "
                       f"split does not have (its classes: {', '.join(class_names)})")
    self.classes = self.class_names = list(class_names)
    self.channels = channels
    self.files = class_images(root, self.classes)
    if not self.files:
      raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {root!r}/<class>/")
    self.num_classes = len(self.classes)

  def __len__(self) -> int:
    return len(self.files)

  def __getitem__(self, index: int) -> Example:
    path, label = self.files[index]
    return {"image": images.load_image(path, self.channels), "label": label}

  def undecoded(self, index: int) -> Example:
    """{'data': the file's bytes, 'label'}, for training's reduced-size JPEG decoding
    (`train_dataset(fast_decode=True)`)."""
    path, label = self.files[index]
    with open(path, "rb") as f:
      return {"data": f.read(), "label": label}


class ArrayRecordSource:
  """A split written by `resnet-jax prepare --format array_record`: `root` is OUT/<split>, holding
  ArrayRecord shards of {"jpeg", "class"} records and classes.json (resnet_jax/data/prepare.py).

  Classes, labels and decoding are those of ImageFolderSource on the same images: the training
  split's sorted class names, given to the other splits as `class_names`; `images.decode_image`
  with `channels` channels; `undecoded` for training's reduced-size JPEG decoding.
  """

  def __init__(self, root: str, class_names: Optional[Sequence[str]] = None, channels: int = 3):
    shards = sorted(glob.glob(os.path.join(glob.escape(root), "*.array_record")))
    classes_file = os.path.join(root, "classes.json")
    if not shards or not os.path.exists(classes_file):
      raise FileNotFoundError(f"no ArrayRecord shards and classes.json in {root!r} (write them with "
                              f"`resnet-jax prepare SRC OUT --format array_record`)")
    with open(classes_file) as f:
      own = json.load(f)
    class_names = own if class_names is None else list(class_names)
    unknown = sorted(set(own) - set(class_names))
    if unknown:
      raise ValueError(f"{root!r} has class {unknown[0]!r} that the training split does not have "
                       f"(its classes: {', '.join(class_names)})")
    self.root, self.channels = root, channels
    self.classes = self.class_names = list(class_names)
    self.num_classes = len(self.classes)
    self._labels = {name: i for i, name in enumerate(self.classes)}
    self._records = grain.sources.ArrayRecordDataSource(shards)

  def __len__(self) -> int:
    return len(self._records)

  def undecoded(self, index: int) -> Example:
    import msgpack
    # surrogateescape: as prepare packs a class folder's name that is not UTF-8.
    record = msgpack.unpackb(self._records[index], unicode_errors="surrogateescape")
    return {"data": record["jpeg"], "label": self._labels[record["class"]]}

  def __getitem__(self, index: int) -> Example:
    example = self.undecoded(index)
    image = images.decode_image(example["data"], f"{self.root} record {index}", self.channels)
    return {"image": image, "label": example["label"]}


class SyntheticSource:
  """Random images, for throughput benchmarks: each example is generated from its index."""

  DEFAULT_CLASSES = 1000  # ImageNet's, the size the benchmarked models have, when 0 is given.

  def __init__(self, num_examples: int, image_shape: Sequence[int], num_classes: int = 0,
               seed: int = 0):
    self.num_examples, self.image_shape = num_examples, tuple(image_shape)
    self.num_classes, self.seed = num_classes or self.DEFAULT_CLASSES, seed

  def __len__(self) -> int:
    return self.num_examples

  def __getitem__(self, index: int) -> Example:
    rng = np.random.default_rng((self.seed, index))
    return {"image": rng.integers(0, 256, self.image_shape, np.uint8),
            "label": int(rng.integers(self.num_classes))}


class TfdsSource:
  """A prepared TFDS dataset read through `tfds.data_source` (ArrayRecord files, no TensorFlow)."""

  def __init__(self, name: str, split: str, data_dir: Optional[str] = None):
    import tensorflow_datasets as tfds  # Imported here: it is slow to import and only this needs it.
    where = data_dir or "~/tensorflow_datasets"
    prepare = (f"prepare it once with TensorFlow installed: `tfds build {name} --data_dir {where} "
               "--file_format=array_record` (see resnet_jax/data/input_pipeline.py)")
    absl_log = logging.getLogger("absl")
    level = absl_log.level
    absl_log.setLevel(logging.ERROR)  # TFDS warns of each missing folder; the error below says it.
    try:
      try:
        builder = tfds.builder(name, data_dir=data_dir or None)
      except tfds.core.registered.DatasetNotFoundError:  # Its message lists every dataset (250 lines).
        raise FileNotFoundError(f"{name!r} is not a TFDS dataset name (the catalog: "
                                "https://www.tensorflow.org/datasets/catalog)") from None
      try:
        self._source = tfds.data_source(name, split=split, data_dir=data_dir or None,
                                        download=False)
      except Exception as e:  # TFDS raises several types; the causes users meet are named.
        if not builder.is_prepared():  # TFDS itself then wrongly says it is, in TFRecord format.
          raise FileNotFoundError(f"TFDS dataset {name!r} is not prepared in {where}: "
                                  f"{prepare}") from None
        fmt = str(getattr(builder.info.file_format, "value", builder.info.file_format))
        if "array_record" not in fmt and "parquet" not in fmt:
          raise FileNotFoundError(
              f"TFDS dataset {name!r} is prepared in {builder.data_dir} as {fmt} files, which "
              f"cannot be read at random; {prepare} (into another data_dir, or after deleting "
              "that one)") from None
        if split not in builder.info.splits:
          raise FileNotFoundError(f"TFDS dataset {name!r} has no split {split!r} (its splits: "
                                  f"{', '.join(sorted(builder.info.splits))})") from None
        first = (str(e).strip().splitlines() or [""])[0]
        raise FileNotFoundError(f"TFDS dataset {name!r} (split {split!r}) in {where} cannot be "
                                f"read: {type(e).__name__}: {first}") from e
    finally:
      absl_log.setLevel(level)
    self.num_classes = builder.info.features["label"].num_classes
    self.class_names = tuple(builder.info.features["label"].names)

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> Example:
    example = self._source[index]
    return {"image": np.asarray(example["image"]), "label": int(example["label"])}


def digits(split: str, test_fraction: float = 0.2, seed: int = 0) -> InMemorySource:
  """scikit-learn's 1797 handwritten digits (8x8, one channel), split 80/20 with stratification.

  The 0-16 ink levels are scaled to 0-255 uint8, so the digits go through the same pipeline as
  photographs.
  """
  from sklearn.datasets import load_digits
  from sklearn.model_selection import train_test_split
  data = load_digits()
  images = np.round(data.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
  train_x, test_x, train_y, test_y = train_test_split(
      images, data.target, test_size=test_fraction, random_state=seed, stratify=data.target)
  if split not in ("train", "test"):
    raise ValueError(f"digits has splits 'train' and 'test', not {split!r}")
  x, y = (train_x, train_y) if split == "train" else (test_x, test_y)
  return InMemorySource(x, y, num_classes=10, class_names=[str(d) for d in range(10)])


# get_source's kinds; config.source's choices.
SOURCES = ("tfds", "folder", "array_record", "digits", "synthetic")


def get_source(source: str, split: str, *, dataset: str = "", data_dir: str = "",
               image_shape: Sequence[int] = (224, 224, 3), num_classes: int = 0,
               synthetic_examples: int = 1281167, class_names: Optional[Sequence[str]] = None):
  """Builds a source by kind: 'tfds' (`dataset` by name), 'folder' (`data_dir/split/<class>/`,
  classes `class_names`, default the split's own folders; images with `image_shape[-1]` channels),
  'array_record' (`data_dir/split/`, written by `resnet-jax prepare --format array_record`; classes
  and channels as 'folder'),
  'digits', or 'synthetic' (`synthetic_examples` images of `image_shape` in `num_classes` classes,
  0 for SyntheticSource.DEFAULT_CLASSES).
  """
  if source == "tfds":
    return TfdsSource(dataset, split, os.path.expanduser(data_dir) if data_dir else None)
  if source == "folder":
    return ImageFolderSource(os.path.join(os.path.expanduser(data_dir), split), class_names,
                             channels=image_shape[-1])
  if source == "array_record":
    return ArrayRecordSource(os.path.join(os.path.expanduser(data_dir), split), class_names,
                             channels=image_shape[-1])
  if source == "digits":
    return digits(split)
  if source == "synthetic":
    # A different seed per split, so the eval images are not the training images.
    return SyntheticSource(synthetic_examples, image_shape, num_classes, seed=zlib.crc32(split.encode()))
  raise ValueError(f"unknown data source {source!r}; expected one of {SOURCES}")


# ----------------------------------------------------------------------------------------------
# Preprocessing on the host, in numpy/PIL, uint8 in and out: a uint8 batch is a quarter of the
# bytes of a float32 one on its way to the device, where `image_ops.normalize` runs inside the step.

def random_resized_crop_box(height: int, width: int, rng: np.random.Generator, scale=(0.08, 1.0),
                            ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
  """(top, left, crop height, crop width) drawn as torchvision's `RandomResizedCrop.get_params`:
  10 tries at a random area and log-uniform aspect ratio, then a center crop of the clamped ratio.
  Only the image's size is needed, so a JPEG's box is known before it is decoded."""
  area = height * width
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(10):
    target_area = area * rng.uniform(*scale)
    aspect = math.exp(rng.uniform(*log_ratio))
    cw = int(round(math.sqrt(target_area * aspect)))
    ch = int(round(math.sqrt(target_area / aspect)))
    if 0 < cw <= width and 0 < ch <= height:
      return int(rng.integers(0, height - ch + 1)), int(rng.integers(0, width - cw + 1)), ch, cw
  in_ratio = width / height
  if in_ratio < min(ratio):
    cw, ch = width, int(round(width / min(ratio)))
  elif in_ratio > max(ratio):
    cw, ch = int(round(height * max(ratio))), height
  else:
    cw, ch = width, height
  return (height - ch) // 2, (width - cw) // 2, ch, cw


def random_resized_crop(image: np.ndarray, rng: np.random.Generator, size: int,
                        scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), exact: bool = False) -> np.ndarray:
  """torchvision's RandomResizedCrop: a `random_resized_crop_box`, resized to size x size by
  `image_ops.resize_box` (PIL's `image_ops.resize` with `exact`: torchvision's bytes)."""
  top, left, ch, cw = random_resized_crop_box(*image.shape[:2], rng, scale, ratio)
  crop = image[top:top + ch, left:left + cw]
  return image_ops.resize(crop, size, size) if exact else image_ops.resize_box(crop, None, size, size)


def torchvision_augment(image: np.ndarray, rng: np.random.Generator, size: int,
                        exact: bool = False) -> np.ndarray:
  """RandomResizedCrop(size) + RandomHorizontalFlip, drawn as torchvision draws them; `exact`: its
  PIL path's bytes, else within the PSNR of `image_ops.resize_box`."""
  top, left, ch, cw = random_resized_crop_box(*image.shape[:2], rng)
  # image_ops.random_hflip's draw, before the resize (which draws nothing): the warp mirrors for free.
  flip = rng.random() < 0.5
  crop = image[top:top + ch, left:left + cw]
  if exact:
    out = image_ops.resize(crop, size, size)
    return image_ops.hflip(out) if flip else out
  return image_ops.resize_box(crop, None, size, size, flip=flip)


def pad_and_random_crop(image: np.ndarray, rng: np.random.Generator, size: int, pad: int = 4):
  """The paper's CIFAR scheme (sec. 4.2): zero-pad 4 pixels per side, take a random size x size crop."""
  padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
  top = rng.integers(0, padded.shape[0] - size + 1)
  left = rng.integers(0, padded.shape[1] - size + 1)
  return padded[top:top + size, left:left + size]


def resize_center_crop(image: np.ndarray, size: int, crop_fraction: float = 0.875,
                       interpolation: str = "bilinear") -> np.ndarray:
  """The 'center' evaluation: the shorter side resized to size / crop_fraction (256 for 224) with
  PIL's `interpolation` filter, then the central size x size."""
  return image_ops.resize_center_crop(image, int(round(size / crop_fraction)), size, interpolation)


# Training augmentations: fn(image, rng, size) -> image (those that resize, the FAST_AUGMENTATIONS'
# names, also take `exact`: `train_dataset(exact_input=...)`); evaluation protocols: fn(image, size,
# crop_fraction, interpolation) -> image (or (crops, H, W, C): `steps.eval_step` averages over crops).
# This is the one place `config.augment` and `config.eval_protocol` are resolved (the paper's are
# added below, from resnet_jax.data.protocols); config_checks reads these tables.
AUGMENTATIONS: dict[str, Callable] = {
    "torchvision": torchvision_augment,
    "cifar": lambda image, rng, size: image_ops.random_hflip(pad_and_random_crop(image, rng, size),
                                                             rng),
    "none": lambda image, rng, size: image_ops.resize(image, size, size),
}
EVAL_PROTOCOLS: dict[str, Callable] = {"center": resize_center_crop}


def paper_augment(image: np.ndarray, rng: np.random.Generator, size: int,
                  exact: bool = False) -> np.ndarray:
  """He et al. sec. 3.4: shorter side uniform in [256, 480] (scaled with `size`/224), a random
  size x size crop, flip, PCA lighting noise. float32 out (lighting is not integral); the step then
  normalises with `config.mean`/`config.std` as for every augmentation. `exact`: PIL's resize of the
  whole image, else `image_ops.resize_box` of the crop's box alone."""
  return protocols.paper_augment(image, rng, short_side=_paper_short_side(size), crop_size=size,
                                 mean=np.zeros(3), std=None, exact=exact)


def _paper_short_side(size: int) -> tuple[int, int]:
  """The paper's [256, 480] for 224-px crops, scaled with the crop size."""
  return round(size * 256 / 224), round(size * 480 / 224)


def ten_crop(image: np.ndarray, size: int, crop_fraction: float = 0.875,
             interpolation: str = "bilinear") -> np.ndarray:
  """The 10-crop protocol's views, (10, size, size, C); `steps.eval_step` averages them."""
  return protocols.ten_crop_views(image, resize_size=round(size / crop_fraction), crop_size=size,
                                  interpolation=interpolation)[0]


AUGMENTATIONS["paper"] = paper_augment
# multi_scale views differ in shape per scale, so they cannot share a batch: `resnet-jax evaluate`.
EVAL_PROTOCOLS["ten_crop"] = ten_crop


# ----------------------------------------------------------------------------------------------
# The same augmentations from undecoded JPEGs: the random draws happen first, in the same order and
# from the image's size alone, then only the blocks around the crop are decoded (`jpeg.region_pixels`)
# at a reduced DCT scale where the crop allows (`_dct_scale`: never fewer than twice the output's
# pixels across the crop), and the crop's box is resized from them by `image_ops.resize_box`. With
# `exact` the decode stays at full scale and PIL resizes: the 'torchvision' output is then the exact
# path's, byte for byte; tests/test_input_pipeline.py measures how close the default comes.

def _dct_scale(box_height: float, box_width: float, size: int) -> int:
  """The DCT scale for a box resized to size x size by `image_ops.resize_box`: one that leaves at least
  2x to resize, where the resize's own filter is most of the antialiasing. The DCT's 1/k is close to
  a k x k average, a box that differs from PIL's tent: left to shrink by less than 2x, 'paper' at
  32 px from the photos of tests/test_input_pipeline.py came within 33 dB of PIL's output at worst,
  against 43 dB with 2x left (2026-12-04)."""
  return jpeg.dct_scale(box_height / 2, box_width / 2, size, size)


def _covering(data: bytes, k: int, shape: tuple[int, int], box: Sequence[float],
              reach: float) -> tuple[np.ndarray, tuple[float, float, float, float]]:
  """(pixels, box within them): the pixels of the JPEG decoded at 1/k within `reach` of the
  fractional box (left, top, right, bottom) of the 1/k image (a resize's filter support) and the one
  beyond that rounding can touch."""
  sh, sw = -(-shape[0] // k), -(-shape[1] // k)  # The 1/k image's size (TJSCALED).
  x0, y0 = max(int(math.floor(box[0] - reach)) - 1, 0), max(int(math.floor(box[1] - reach)) - 1, 0)
  x1, y1 = min(math.ceil(box[2] + reach) + 1, sw), min(math.ceil(box[3] + reach) + 1, sh)
  pixels = jpeg.region_pixels(data, k, y0, x0, y1 - y0, x1 - x0)
  # Clipped for float round-off at the image's edges; resizing reads nothing outside the box's reach.
  return pixels, (max(box[0] - x0, 0.0), max(box[1] - y0, 0.0), min(box[2], sw) - x0,
                  min(box[3], sh) - y0)


def fast_random_resized_crop(data: bytes, rng: np.random.Generator, size: int,
                             exact: bool = False) -> np.ndarray:
  """`torchvision_augment` of a JPEG's bytes, decoded at 1/k where the crop allows (at full scale
  and resized by PIL with `exact`: torchvision's bytes)."""
  top, left, ch, cw = random_resized_crop_box(*jpeg.header_size(data), rng)
  # image_ops.random_hflip's draw, before the resize (which draws nothing): the warp mirrors for free.
  flip = rng.random() < 0.5
  if exact:
    out = jpeg.region_image(data, 1, top, left, ch, cw).resize((size, size), Image.BILINEAR)
    # Flipped by PIL, so that the batch is stacked from contiguous arrays.
    return np.asarray(out.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if flip else out)
  k = _dct_scale(ch, cw, size)
  # The crop's edges may fall inside decoded pixels: keep the decoded pixels that cover the crop,
  # then resize the fractional box within them, so that (as torchvision's crop) nothing outside
  # is read. At k = 1 that is the crop itself.
  y0, x0, y1, x1 = top / k, left / k, (top + ch) / k, (left + cw) / k
  iy0, ix0 = int(y0), int(x0)
  covering = jpeg.region_pixels(data, k, iy0, ix0, math.ceil(y1) - iy0, math.ceil(x1) - ix0)
  return image_ops.resize_box(covering, (x0 - ix0, y0 - iy0, x1 - ix0, y1 - iy0), size, size,
                              flip=flip)


def fast_paper_augment(data: bytes, rng: np.random.Generator, size: int,
                       exact: bool = False) -> np.ndarray:
  """`paper_augment` of a JPEG's bytes: the random crop of the rescaled image is resized straight
  from the (DCT-reduced) decode of the blocks around it, so the whole image is never rescaled.
  `exact`: full-scale decode and PIL's resize (within 2 levels of the exact path: see the tests)."""
  h, w = jpeg.header_size(data)
  lo, hi = _paper_short_side(size)
  short = int(rng.integers(lo, hi + 1))
  new_h, new_w = image_ops.resized_size(h, w, short)  # As resize_shorter_side's.
  top, left = int(rng.integers(0, new_h - size + 1)), int(rng.integers(0, new_w - size + 1))
  # image_ops.random_hflip's draw, before the resize (which draws nothing): the warp mirrors for free.
  flip = rng.random() < 0.5
  sy, sx = h / new_h, w / new_w  # Original pixels per rescaled pixel.
  k = 1 if exact else _dct_scale(size * sy, size * sx, size)
  if (new_h, new_w) == (h, w):
    out = jpeg.region_pixels(data, 1, top, left, size, size)
    out = image_ops.hflip(out) if flip else out
  else:
    # Output pixel j samples the rescaled image's pixel left + j, as resizing all and cropping does.
    box = (left * sx / k, top * sy / k, (left + size) * sx / k, (top + size) * sy / k)
    # The bilinear filter reaches 1 input pixel per output pixel, scaled up when downsampling.
    reach = max(1.0, (box[2] - box[0]) / size, (box[3] - box[1]) / size)
    pixels, box = _covering(data, k, (h, w), box, reach)
    if exact:
      out = np.asarray(Image.fromarray(pixels).resize((size, size), Image.BILINEAR, box=box))
      out = image_ops.hflip(out) if flip else out
    else:
      out = image_ops.resize_box(pixels, box, size, size, flip=flip)
  return protocols.lighting(out, rng, 0.1, 255.0)


# Augmentations of undecoded JPEG bytes, each drawing what its AUGMENTATIONS namesake draws.
FAST_AUGMENTATIONS: dict[str, Callable] = {
    "torchvision": fast_random_resized_crop, "paper": fast_paper_augment}


def _lookup(table: dict, name: str, what: str) -> Callable:
  if name not in table:
    raise ValueError(f"unknown {what} {name!r}; known: {', '.join(sorted(table))}")
  return table[name]


# ----------------------------------------------------------------------------------------------
# Grain pipelines.

def _local_batch_size(global_batch_size: int, process_count: int) -> int:
  if global_batch_size % process_count:
    raise ValueError(f"global batch size {global_batch_size} is not divisible by the "
                     f"{process_count} processes")
  return global_batch_size // process_count


class _Undecoded:
  """A source's examples as {'data': file bytes, 'index', 'label'}, for the FAST_AUGMENTATIONS."""

  def __init__(self, source):
    self.source = source

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, index: int) -> Example:
    return {**self.source.undecoded(index), "index": index}


def _fast_augment(source, augment: str, image_size: int, exact_input: bool) -> Callable:
  decoded, fast = AUGMENTATIONS[augment], FAST_AUGMENTATIONS[augment]

  def augmented(example, rng):
    state = rng.bit_generator.state
    try:
      image = (fast(example["data"], rng, image_size, exact=exact_input)
               if jpeg.is_jpeg(example["data"]) else None)
    except (OSError, ValueError, Image.DecompressionBombError):
      # Not a JPEG the fast path reads (CMYK, damaged, too large): the source's decoding decides.
      image = None
    if image is None:  # PNG and the rest go the exact way, with the same random draws.
      rng.bit_generator.state = state
      image = decoded(source[example["index"]]["image"], rng, image_size, exact=exact_input)
    return image

  return augmented


def train_dataset(source, *, global_batch_size: int, image_size: int, augment: str, seed: int,
                  process_index: int = 0, process_count: int = 1,
                  extra_augment: Optional[Callable] = None,
                  fast_decode: bool = False, exact_input: bool = False,
                  repeats: int = 1) -> grain.MapDataset:
  """An endless stream of this process's training batches.

  Global example k is the same on every process count: the order is one shuffled stream (a new
  shuffle per epoch), each example augmented with a generator seeded by (seed, k). Process p takes
  examples p, p + P, ...; global batch i is then examples [i*B, (i+1)*B) of the stream whatever P is,
  so one process and many compute the same steps.

  `extra_augment(image, rng)` (e.g. `autoaugment.train_policy`) runs after `augment` with the same
  per-example generator, so it too is the same on every process count and after a restart.

  `fast_decode`: for an augmentation in FAST_AUGMENTATIONS and a source with `undecoded` (image
  folders), only the blocks of each JPEG around the drawn crop are decoded, at a reduced DCT scale
  where the crop allows; the crops, flips and order stay those of the exact path.

  `exact_input`: the augmentations that resize ('torchvision', 'paper') resize with PIL, as
  torchvision's PIL path (its bytes for 'torchvision'; 'paper' with `fast_decode` within 2 levels),
  and `fast_decode` decodes at full scale; else with `image_ops.resize_box` (OpenCV, several times
  faster, tests/test_input_pipeline.py bounds its distance to torchvision's bytes).

  `repeats` > 1 is repeated augmentation, torchvision's RASampler: each epoch is the first
  1/repeats of its shuffle, each example `repeats` times in a row (with its own augmentation), so
  with P >= repeats processes the copies land on different processes, as RASampler deals them.
  RASampler also trims the epoch to a multiple of 256 examples; this does not.
  """
  fn = _lookup(AUGMENTATIONS, augment, "augmentation")
  local = _local_batch_size(global_batch_size, process_count)

  if augment in FAST_AUGMENTATIONS:  # The augmentations that resize: PIL's or OpenCV's.
    fn = functools.partial(fn, exact=exact_input)
  augmented = lambda example, rng: fn(example["image"], rng, image_size)
  # The fast decoders give RGB: a 1-channel folder keeps the exact path (images.load_image).
  if (fast_decode and augment in FAST_AUGMENTATIONS and hasattr(source, "undecoded")
      and getattr(source, "channels", 3) == 3):
    augmented, source = _fast_augment(source, augment, image_size, exact_input), _Undecoded(source)

  def transform(example, rng):
    image = augmented(example, rng)
    if extra_augment is not None:
      image = extra_augment(image, rng)
    return {"image": image, "label": np.int32(example["label"])}

  ds = grain.MapDataset.source(source).shuffle(seed=seed).repeat(None)
  if repeats > 1:
    ds = _repeated(ds, len(source), repeats)
  ds = ds.random_map(transform, seed=seed)
  return ds[process_index::process_count].batch(local, drop_remainder=True)


def _repeated(stream: grain.MapDataset, n: int, repeats: int) -> grain.MapDataset:
  """Position k of epoch e = k // n: element (k % n) // repeats of that epoch's shuffle."""
  positions = grain.MapDataset.range(n).repeat(None)
  return positions.map_with_index(lambda k, _: stream[(k // n) * n + (k % n) // repeats])


def eval_dataset(source, *, global_batch_size: int, image_size: int, eval_protocol: str,
                 crop_fraction: float, interpolation: str = "bilinear", process_index: int = 0,
                 process_count: int = 1) -> grain.MapDataset:
  """This process's evaluation batches: the split padded to whole global batches, with a 'mask'
  that is 1 for real examples and 0 for padding, so each example is counted exactly once.
  `interpolation`: PIL's filter for the protocol's resize ('bilinear', torchvision's; 'bicubic',
  timm's for most of its weights)."""
  fn = _lookup(EVAL_PROTOCOLS, eval_protocol, "evaluation protocol")
  local = _local_batch_size(global_batch_size, process_count)
  n = len(source)
  padded = -(-n // global_batch_size) * global_batch_size

  def load(index):
    example = source[index if index < n else 0]
    return {"image": fn(example["image"], image_size, crop_fraction, interpolation),
            "label": np.int32(example["label"]), "mask": np.float32(index < n)}

  ds = grain.MapDataset.range(padded).map(load)
  return ds[process_index::process_count].batch(local, drop_remainder=True)


class DeviceIterator:
  """Batches placed on the devices `prefetch` steps ahead, with the Grain position of each.

  `put` turns a local numpy batch into device arrays (train_lib knows the sharding). Device
  transfers are asynchronous, so keeping a few in flight hides them behind the step. Because the
  Grain iterator runs ahead of the training loop, `get_state` reports the position after the last
  batch *returned*, which is what a checkpoint must record.
  """

  def __init__(self, dataset: grain.MapDataset, put: Callable, prefetch: int = 2,
               num_threads: int = 4, num_processes: int = 0):
    ds = dataset.to_iter_dataset(
        grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=max(16, 4 * num_threads)))
    if num_processes:
      if not flags.FLAGS.is_parsed():
        # Grain reads an absl flag when it starts workers; outside an absl app (tests, notebooks,
        # benchmarks) the flags keep their defaults.
        flags.FLAGS.mark_as_parsed()
      # Each worker process makes whole batches (every num_processes-th one) with its own threads;
      # Grain's state records each worker's position, so a restart still resumes exactly.
      ds = ds.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_processes))
    self._iter = ds.__iter__()
    self._put, self._prefetch = put, prefetch
    self._queue: collections.deque = collections.deque()
    self._state = self._iter.get_state()

  def __iter__(self) -> Iterator:
    return self

  def __next__(self):
    while len(self._queue) <= self._prefetch:
      batch = next(self._iter, None)
      if batch is None:  # A finite split ran out; what is queued is still to be returned.
        break
      self._queue.append((self._put(batch), self._iter.get_state()))
    if not self._queue:
      raise StopIteration
    batch, self._state = self._queue.popleft()
    return batch

  def get_state(self) -> bytes:
    return json.dumps(self._state).encode()

  def close(self) -> None:
    """Stops Grain's worker processes (when `num_processes`); the garbage collector does it too, later."""
    if hasattr(self._iter, "close"):
      self._iter.close()

  def set_state(self, state: bytes) -> None:
    self._queue.clear()
    self._state = json.loads(state)
    self._iter.set_state(self._state)

  def start_prefetch(self) -> None:
    """Called by Grain's Orbax handler after a restore; the queue refills on the next batch."""
