"""`resnet-jax prepare`: a copy of an image dataset as JPEG image folders with the shorter side at most N px.

Training decodes every image once per epoch; ImageNet's originals average ~400x350 px but run to
several thousand, and a 224 crop needs no more than ~256-320 px on the shorter side (fast ImageNet
recipes and FFCV store them so). The copy is an ordinary image folder (`config.source='folder'`):

  resnet-jax prepare ~/imagenet ~/imagenet-320 --max-size 320        # root/[split/]class/*.jpg
  resnet-jax prepare cifar10 ~/cifar10-folder --tfds-splits train,test  # a prepared TFDS dataset

Every image is accounted for: each source image becomes one output file, or one line of
`OUT/unreadable.txt` (path and reason); `OUT/prepare.json` records the counts and settings. Outputs
are written under a temporary name and renamed, so an interrupted run leaves only whole files, and
running the same command again skips them and does the rest.

`--format array_record` writes the same images as ArrayRecord shards instead, for file systems
where a million small files are slow (`config.source='array_record'` reads them):
OUT/<split>/<split>-SSSSS-of-NNNNN.array_record, SHARD_SIZE images each in the order of the source
listing, every record `msgpack.packb({"jpeg": bytes, "class": class folder name})`; beside each
shard a .json with its record count and unreadable images, and OUT/<split>/classes.json with the
split's sorted class names (labels are indices into the training split's, as for image folders).
A shard is renamed into place whole, so a resumed run redoes only the shards it had not finished.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import io
import json
import os
from typing import Callable, Iterable, Iterator, Optional, Sequence

import numpy as np
from PIL import Image

from resnet_jax import image_ops
from resnet_jax.input_pipeline import IMAGE_EXTENSIONS

UNREADABLE = "unreadable.txt"
MANIFEST = "prepare.json"
FORMATS = ("folder", "array_record")
SHARD_SIZE = 1024  # Images per ArrayRecord shard (~25 MB at 320 px).
CLASSES = "classes.json"


@dataclasses.dataclass(frozen=True)
class Item:
  """One source image: where it comes from (for messages), where it goes, how to read it."""
  name: str
  out: str  # Relative path of the output JPEG.
  read: Callable[[], tuple[Image.Image, Optional[bytes]]]  # (image, its file's bytes if any)


@dataclasses.dataclass
class Summary:
  images: int = 0
  written: int = 0
  already_done: int = 0
  unreadable: list = dataclasses.field(default_factory=list)  # (name, reason)

  def line(self, out: str, max_size: int, quality: int) -> str:
    text = (f"{self.images} images in {out} (shorter side <= {max_size}, JPEG quality {quality}): "
            f"{self.written} written, {self.already_done} already there")
    if self.unreadable:
      text += f", {len(self.unreadable)} unreadable (listed in {os.path.join(out, UNREADABLE)})"
    return text


def _read_file(path: str) -> tuple[Image.Image, bytes]:
  with open(path, "rb") as f:
    data = f.read()
  image = Image.open(io.BytesIO(data))
  return image, data


def folder_items(root: str, out: Optional[str] = None) -> list[Item]:
  """Every image file under `root` (any depth, e.g. root/train/<class>/x.jpg), output at the same
  relative path; a non-JPEG keeps its name with '.jpg' appended, so a.png and a.jpg cannot collide.
  `out`, the output folder, must not lie inside `root` (a second run would copy the copy)."""
  if not os.path.isdir(root):
    raise FileNotFoundError(f"image folder {root!r} does not exist")
  if out is not None:
    root_abs, out_abs = os.path.realpath(root), os.path.realpath(out)
    if os.path.commonpath([root_abs, out_abs]) == root_abs:
      raise ValueError(f"the output folder {out!r} is inside the image folder {root!r}")
  items = []
  for directory, subdirs, files in os.walk(root):
    subdirs.sort()
    for name in sorted(files):
      if not name.lower().endswith(IMAGE_EXTENSIONS):
        continue
      path = os.path.join(directory, name)
      rel = os.path.relpath(path, root)
      out = rel if name.lower().endswith((".jpg", ".jpeg")) else rel + ".jpg"
      items.append(Item(path, out, lambda path=path: _read_file(path)))
  if not items:
    raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {root!r}")
  return items


def tfds_items(name: str, splits: Sequence[str], data_dir: Optional[str] = None) -> list[Item]:
  """Each example of the TFDS splits, output as <split>/<class name>/<index>.jpg. Without TensorFlow
  the examples come decoded, so reading the labels (for the folder names) decodes each image once
  more than a folder source does."""
  import tensorflow_datasets as tfds
  from resnet_jax.input_pipeline import TfdsSource
  items = []
  for split in splits:
    source = TfdsSource(name, split, data_dir)  # Says how to prepare the dataset when it is missing.
    names = tfds.builder(name, data_dir=data_dir).info.features["label"].names
    for i in _progress(range(len(source)), len(source), True, f"labels of {split}"):
      def read(source=source, i=i):
        image = source[i]["image"]
        return Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image), None
      out = os.path.join(split, names[source[i]["label"]], f"{i:08d}.jpg")
      items.append(Item(f"{name}:{split}[{i}]", out, read))
  return items


def shrink(image: Image.Image, data: Optional[bytes], max_size: int, quality: int) -> bytes:
  """JPEG bytes of `image` with the shorter side at most `max_size` (torchvision's Resize rounding,
  bilinear with antialiasing). A JPEG already small enough is kept byte for byte (no re-encoding)."""
  if (data is not None and image.format == "JPEG" and image.mode in ("RGB", "L")
      and min(image.size) <= max_size):
    return data
  short = min(image.size)
  if short > max_size:
    # Decode at the smallest DCT scale that keeps the result at least the target size.
    scale = max_size / short
    image.draft("RGB", (int(image.width * scale), int(image.height * scale)))
  pixels = np.asarray(image.convert("RGB"))
  if min(pixels.shape[:2]) > max_size:
    pixels = image_ops.resize_shorter_side(pixels, max_size)
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
  return buffer.getvalue()


def _convert(item: Item, max_size: int, quality: int) -> bytes:
  image, data = item.read()
  with image:
    return shrink(image, data, max_size, quality)


def _write(path: str, data: bytes) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  temporary = f"{path}.partial"
  with open(temporary, "wb") as f:
    f.write(data)
  os.replace(temporary, path)  # Atomic: a path that exists holds a whole image.


def _check_manifest(out: str, settings: dict) -> None:
  path = os.path.join(out, MANIFEST)
  if os.path.exists(path):
    with open(path) as f:
      before = {"format": "folder", **json.load(f)}  # Copies from before formats were folders.
    changed = {k: before.get(k) for k, v in settings.items() if before.get(k) != v}
    if changed:
      raise ValueError(f"{out} was prepared with {changed} (see {path}); use a new directory "
                       f"or the same settings to resume")


def prepare(items: Sequence[Item], out: str, *, max_size: int = 320, quality: int = 90,
            workers: int = 1, source: str = "", progress: bool = True,
            format: str = "folder") -> Summary:
  """Writes every item to `out` as an image folder or ArrayRecord shards (`format`, see FORMATS);
  returns the counts. Items (or shards) already written are skipped.

  Raises:
    ValueError: bad settings, or `out` was prepared with other settings.
    OSError: an output cannot be written (nothing already written is touched).
  """
  if max_size < 1 or not 1 <= quality <= 100:
    raise ValueError(f"--max-size must be >= 1 and --quality in 1..100, got {max_size}, {quality}")
  if format not in FORMATS:
    raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {format!r}")
  settings = {"source": source, "max_size": max_size, "quality": quality, "format": format}
  _check_manifest(out, settings)
  os.makedirs(out, exist_ok=True)
  if not os.path.exists(os.path.join(out, MANIFEST)):  # Settings first, so a resume can check them.
    with open(os.path.join(out, MANIFEST), "w") as f:
      json.dump({**settings, "complete": False}, f, indent=1)
  if format == "array_record":
    return _prepare_shards(items, out, max_size, quality, workers, progress, settings)
  summary = Summary(images=len(items))
  todo = [item for item in items if not os.path.exists(os.path.join(out, item.out))]
  summary.already_done = len(items) - len(todo)

  for item, data, error in _progress(_converted(todo, max_size, quality, workers), len(todo),
                                     progress):
    if error is None:
      _write(os.path.join(out, item.out), data)
      summary.written += 1
    else:
      summary.unreadable.append((item.name, error))
  _finish(out, items, summary, settings)
  return summary


def _converted(todo: Sequence[Item], max_size: int, quality: int,
               workers: int) -> Iterator[tuple[Item, Optional[bytes], Optional[str]]]:
  """(item, its JPEG bytes or None, None or why it is unreadable) of each item, in order."""
  def run(item):
    try:
      return item, _convert(item, max_size, quality), None
    except Exception as e:  # Any failure to read one image is recorded against it, never fatal.
      return item, None, f"{type(e).__name__}: {e}".replace("\n", " ")

  # In chunks, so that memory stays bounded and an interrupt waits for one chunk, not the dataset.
  chunk = 64 * max(1, workers)
  with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
    for start in range(0, len(todo), chunk):
      yield from pool.map(run, todo[start:start + chunk])


def _split_and_class(out: str) -> tuple[str, str]:
  """('train', 'cat') of an item's output path 'train/cat/x.jpg'; ('.', 'cat') of 'cat/x.jpg'."""
  parts = out.replace(os.sep, "/").split("/")
  if len(parts) < 2:
    raise ValueError("not inside a class folder")
  return "/".join(parts[:-2]) or ".", parts[-2]


def shard_name(split: str, index: int, count: int) -> str:
  name = "data" if split == "." else split.replace("/", "_")
  return f"{name}-{index:05d}-of-{count:05d}.array_record"


def _prepare_shards(items: Sequence[Item], out: str, max_size: int, quality: int, workers: int,
                    progress: bool, settings: dict) -> Summary:
  """The ArrayRecord output of `prepare` (the module's docstring has the layout)."""
  import msgpack
  from array_record.python.array_record_module import ArrayRecordWriter
  summary = Summary(images=len(items))
  splits: dict[str, list] = {}
  for item in items:
    try:
      split, name = _split_and_class(item.out)
    except ValueError as e:
      summary.unreadable.append((item.name, str(e)))
      continue
    splits.setdefault(split, []).append((item, name))
  shards = []  # (split, index, count, [(item, class name)])
  for split, members in splits.items():
    os.makedirs(os.path.join(out, split), exist_ok=True)
    with open(os.path.join(out, split, CLASSES), "w") as f:
      json.dump(sorted({name for _, name in members}), f)
    count = -(-len(members) // SHARD_SIZE)
    shards += [(split, i, count, members[i * SHARD_SIZE:(i + 1) * SHARD_SIZE]) for i in range(count)]
  bar = _progress(None, len(items) - len(summary.unreadable), progress)
  for split, index, count, members in shards:
    path = os.path.join(out, split, shard_name(split, index, count))
    if os.path.exists(path):  # Renamed into place whole: its sidecar says what it holds.
      with open(path + ".json") as f:
        done = json.load(f)
      summary.already_done += done["records"]
      summary.unreadable += [tuple(u) for u in done["unreadable"]]
    else:
      names = {item.name: name for item, name in members}
      writer = ArrayRecordWriter(path + ".partial", "group_size:1")
      records, unreadable = 0, []
      try:
        for item, data, error in _converted([m[0] for m in members], max_size, quality, workers):
          if error is None:
            writer.write(msgpack.packb({"jpeg": data, "class": names[item.name]}))
            records += 1
          else:
            unreadable.append((item.name, error))
      finally:
        writer.close()
      with open(path + ".json", "w") as f:
        json.dump({"records": records, "unreadable": unreadable}, f)
      os.replace(path + ".partial", path)
      summary.written += records
      summary.unreadable += unreadable
    if bar is not None:
      bar.update(len(members))
  if bar is not None:
    bar.close()
  _finish_shards(out, summary, settings)
  return summary


def _finish_shards(out: str, summary: Summary, settings: dict) -> None:
  """Lists the unreadable images and checks the counts: every image is a record or listed."""
  _write_unreadable(out, summary)
  accounted = summary.written + summary.already_done + len(summary.unreadable)
  if accounted != summary.images:
    raise OSError(f"{summary.images} images but {accounted} records and unreadable ones in {out}")
  _write_manifest(out, summary, settings)


def _progress(results: Iterable, total: int, enabled: bool, desc: str = "prepare") -> Iterable:
  """`results` with a progress bar when `enabled` (None: the bar itself, to `update` by hand)."""
  if not enabled:
    return results
  from tqdm import tqdm
  return tqdm(results, total=total, unit="img", desc=desc)


def _finish(out: str, items: Sequence[Item], summary: Summary, settings: dict) -> None:
  """Lists the unreadable images and checks that every other image has its output."""
  _write_unreadable(out, summary)
  bad = {name for name, _ in summary.unreadable}
  missing = [i.name for i in items if i.name not in bad and not os.path.exists(os.path.join(out, i.out))]
  if missing:
    raise OSError(f"{len(missing)} images have no output in {out}, e.g. {missing[0]}")
  _write_manifest(out, summary, settings)


def _write_unreadable(out: str, summary: Summary) -> None:
  unreadable_path = os.path.join(out, UNREADABLE)
  if summary.unreadable:
    with open(unreadable_path, "w") as f:
      f.writelines(f"{name}\t{reason}\n" for name, reason in summary.unreadable)
  elif os.path.exists(unreadable_path):
    os.remove(unreadable_path)  # Left by an earlier run whose images have since been fixed.


def _write_manifest(out: str, summary: Summary, settings: dict) -> None:
  with open(os.path.join(out, MANIFEST), "w") as f:
    json.dump({**settings, "complete": True, "images": summary.images, "written": summary.written,
               "already_done": summary.already_done, "unreadable": len(summary.unreadable)},
              f, indent=1)
