"""`resnet-jax prepare`: a copy of an image dataset as JPEG image folders with the shorter side at most N px.

Training decodes every image once per epoch; ImageNet's originals average ~400x350 px but run to
several thousand, and a 224 crop needs no more than ~256-320 px on the shorter side (fast ImageNet
recipes and FFCV store them so). The copy is an ordinary image folder (`config.source='folder'`):

  resnet-jax prepare ~/imagenet ~/imagenet-320 --max-size 320        # root/[split/]class/*.jpg
  resnet-jax prepare cifar10 ~/cifar10-folder --tfds-splits train,test  # a prepared TFDS dataset

The copy trains as the source does:
- The images are those training finds (`input_pipeline.class_images`, torchvision's ImageFolder:
  any depth under a class folder, links followed), and every class folder is copied, empty ones
  included, so that no label shifts. SOURCE is read as root/SPLIT/CLASS/** when none of its folders
  holds an image itself and one of them holds folders, else as root/CLASS/** (`--layout` says which
  when a split's classes themselves only hold folders).
- Every image is decoded whole, as training decodes it (`images.decoded`, `images.to_uint8`: 16-bit
  and float images scaled); one that cannot be becomes a line of `OUT/unreadable.txt` (path and
  reason) and the run exits 1. A JPEG small enough is then copied byte for byte; the rest are
  resized (torchvision's Resize) and encoded as JPEG, greyscale ones as greyscale.
- A non-JPEG keeps its name with '.jpg' appended. Names that would meet in one folder (x.png and
  x.png.jpg, or x.jpg and x.JPG on a file system that ignores case) are kept apart by a '~N' before
  the extension: a JPEG copied under its own name keeps it, then the first in the source's order;
  `OUT/renamed.txt` lists the renamed.
  The copy holds the same images and labels; its listing follows its own names, so where '.jpg'
  or '~N' reorders two names (x.png.jpg then sorts before x.png's copy) a seeded shuffle draws
  those images in another order than on the source.
- Any name the file system gives (spaces, unicode, bytes that are not UTF-8) is copied as it is;
  the lists write such bytes unchanged.
`OUT/prepare.json` records the counts and settings. Outputs are written under a temporary name and
renamed, so an interrupted run leaves only whole files, and running the same command again skips
them and does the rest; a failure removes its temporary file.

`--format array_record` writes the same images as ArrayRecord shards instead, for file systems
where a million small files are slow (`config.source='array_record'` reads them):
OUT/<split>/<split>-SSSSS-of-NNNNN.array_record, SHARD_SIZE images each in the order of the source
listing, every record `msgpack.packb({"jpeg": bytes, "class": class folder name})`; beside each
shard a .json with its record count and unreadable images, and OUT/<split>/classes.json with the
split's sorted class names, empty classes included (labels are indices into the training split's,
as for image folders). Class names that are not UTF-8 are packed with Python's surrogateescape, as
the reader unpacks them.
A shard is renamed into place whole, so a resumed run redoes only the shards it had not finished.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import io
import json
import os
from typing import Callable, Iterable, Iterator, Optional, Sequence, Union

import numpy as np
from PIL import Image

from resnet_jax.data import image_ops, images, input_pipeline

UNREADABLE = "unreadable.txt"
RENAMED = "renamed.txt"
LAYOUTS = ("auto", "splits", "classes")
MANIFEST = "prepare.json"
FORMATS = ("folder", "array_record")
SHARD_SIZE = 1024  # Images per ArrayRecord shard (~25 MB at 320 px).
CLASSES = "classes.json"


@dataclasses.dataclass(frozen=True)
class Item:
  """One source image: where it comes from (for messages), where it goes, how to read it."""
  name: str
  out: str  # Relative path of the output JPEG.
  read: Callable[[], Union[bytes, np.ndarray]]  # The file's bytes, or decoded uint8 (H, W, C) pixels.
  split: str = "."  # The split folder under OUT ('.': OUT itself) and the class of the image.
  class_name: str = ""


@dataclasses.dataclass
class Listing:
  """What `prepare` copies: the images, and each split's classes (empty ones included)."""
  items: list
  classes: dict  # split -> sorted class names
  renamed: list = dataclasses.field(default_factory=list)  # (source, output path) kept apart


@dataclasses.dataclass
class Summary:
  images: int = 0
  written: int = 0
  already_done: int = 0
  unreadable: list = dataclasses.field(default_factory=list)  # (name, reason)
  renamed: int = 0

  def line(self, out: str, max_size: int, quality: int) -> str:
    text = (f"{self.images} images in {out} (shorter side <= {max_size}, JPEG quality {quality}): "
            f"{self.written} written, {self.already_done} already there")
    if self.renamed:
      text += (f", {self.renamed} renamed to keep names apart (listed in "
               f"{os.path.join(out, RENAMED)})")
    if self.unreadable:
      text += f", {len(self.unreadable)} unreadable (listed in {os.path.join(out, UNREADABLE)})"
    # A path that is not UTF-8 is shown escaped rather than failing the print.
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _read_file(path: str) -> bytes:
  with open(path, "rb") as f:
    return f.read()


def _holds_images(folder: str) -> bool:
  return any(e.name.lower().endswith(input_pipeline.IMAGE_EXTENSIONS) and not e.is_dir()
             for e in os.scandir(folder))


def split_folders(root: str, layout: str = "auto") -> list[str]:
  """The split folders of `root` ('.' when `root` is one split); see the module docstring."""
  if layout not in LAYOUTS:
    raise ValueError(f"--layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
  top = input_pipeline.class_folders(root)
  if layout == "auto":
    folders = [os.path.join(root, t) for t in top]
    splits = (not any(_holds_images(f) for f in folders)
              and any(input_pipeline.class_folders(f) for f in folders))
    layout = "splits" if splits else "classes"
  return top if layout == "splits" else ["."]


def folder_items(root: str, out: Optional[str] = None, layout: str = "auto") -> Listing:
  """Every image of every split of `root` (see the module docstring), output at the same relative
  path, a non-JPEG with '.jpg' appended. `out`, the output folder, must not lie inside `root` (a
  second run would copy the copy)."""
  if not os.path.isdir(root):
    raise FileNotFoundError(f"image folder {root!r} does not exist")
  if out is not None:
    root_abs, out_abs = os.path.realpath(root), os.path.realpath(out)
    if os.path.commonpath([root_abs, out_abs]) == root_abs:
      raise ValueError(f"the output folder {out!r} is inside the image folder {root!r}")
  items, classes = [], {}
  for split in split_folders(root, layout):
    folder = os.path.normpath(os.path.join(root, split))
    classes[split] = input_pipeline.class_folders(folder)
    for path, label in input_pipeline.class_images(folder, classes[split]):
      rel = os.path.relpath(path, root)
      out_path = rel if rel.lower().endswith((".jpg", ".jpeg")) else rel + ".jpg"
      items.append(Item(path, out_path, functools.partial(_read_file, path), split,
                        classes[split][label]))
  if not items:
    raise FileNotFoundError(f"no images ({', '.join(input_pipeline.IMAGE_EXTENSIONS)}) in the class "
                            f"folders of {root!r}")
  own_name = [i for i, item in enumerate(items) if os.path.basename(item.out) ==
              os.path.basename(item.name)]
  return _kept_apart(items, classes, own_name)


def _kept_apart(items: list, classes: dict, first: Sequence[int] = ()) -> Listing:
  """`items` with distinct output names, compared ignoring case: the items `first` (JPEGs copied
  under their own name) claim theirs first, then the rest in order; a later claimant gets '~2',
  '~3'... before its extension."""
  taken, outs = set(), {}
  for i in list(first) + sorted(set(range(len(items))) - set(first)):
    directory, name = os.path.split(items[i].out)
    stem, extension = os.path.splitext(name)
    candidate, n = name, 1
    while (directory, candidate.casefold()) in taken:
      n += 1
      candidate = f"{stem}~{n}{extension}"
    taken.add((directory, candidate.casefold()))
    outs[i] = os.path.join(directory, candidate)
  renamed = [(item.name, outs[i]) for i, item in enumerate(items) if outs[i] != item.out]
  items = [dataclasses.replace(item, out=outs[i]) for i, item in enumerate(items)]
  return Listing(items, classes, renamed)


def tfds_items(name: str, splits: Sequence[str], data_dir: Optional[str] = None) -> Listing:
  """Each example of the TFDS splits, output as <split>/<class name>/<index>.jpg, every split given
  all of the dataset's classes (a split lacking one keeps the labels). Without TensorFlow the
  examples come decoded, so reading the labels (for the folder names) decodes each image once more
  than a folder source does."""
  import tensorflow_datasets as tfds
  from resnet_jax.data.input_pipeline import TfdsSource
  items, classes = [], {}
  names = list(tfds.builder(name, data_dir=data_dir).info.features["label"].names)
  for split in splits:
    source = TfdsSource(name, split, data_dir)  # Says how to prepare the dataset when it is missing.
    classes[split] = sorted(names)
    for i in _progress(range(len(source)), len(source), True, f"labels of {split}"):
      class_name = names[source[i]["label"]]
      items.append(Item(f"{name}:{split}[{i}]", os.path.join(split, class_name, f"{i:08d}.jpg"),
                        functools.partial(lambda s, i: s[i]["image"], source, i), split, class_name))
  return _kept_apart(items, classes)


# PIL modes of one channel: copied as greyscale JPEGs, which decode to what the source decodes to
# both as luma and as RGB.
_GREY_MODES = ("1", "L", "LA", "I", "F") + images.SIXTEEN_BIT_MODES


def encoded(item: Item, max_size: int, quality: int) -> bytes:
  """JPEG bytes of the item's image as training decodes it, the shorter side at most `max_size`
  (torchvision's Resize: bilinear with antialiasing, the longer side truncated). A JPEG already
  small enough is kept byte for byte, once it has decoded whole.

  Raises:
    images.ImageError: the image cannot be decoded (as training would fail on it).
  """
  data = item.read()
  if isinstance(data, np.ndarray):
    pixels = data
  else:
    try:
      with Image.open(io.BytesIO(data)) as header:  # Reads the header only.
        small_jpeg = (header.format == "JPEG" and header.mode in ("RGB", "L")
                      and min(header.size) <= max_size)
    except Exception:  # Not an image: `images.decoded` says so in its words.
      small_jpeg = False
    # A JPEG larger than needed decodes at the smallest DCT scale that keeps max_size.
    with images.decoded(io.BytesIO(data), item.name, shorter_side=max_size) as image:
      if small_jpeg:
        return data
      pixels = images.to_uint8(image, 1 if image.mode in _GREY_MODES else 3, where=item.name)
  if min(pixels.shape[:2]) > max_size:
    pixels = image_ops.resize_shorter_side(pixels, max_size)
  buffer = io.BytesIO()
  Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(buffer, "JPEG",
                                                                              quality=quality)
  return buffer.getvalue()


def _write(path: str, data: bytes) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  temporary = f"{path}.partial"
  try:
    with open(temporary, "wb") as f:
      f.write(data)
    os.replace(temporary, path)  # Atomic: a path that exists holds a whole image.
  except Exception:  # A disk error, say: no partial file is left (an interrupt, as a kill, may).
    _remove(temporary)
    raise


def _remove(path: str) -> None:
  try:
    os.remove(path)
  except FileNotFoundError:
    pass


def _check_manifest(out: str, settings: dict) -> None:
  path = os.path.join(out, MANIFEST)
  if os.path.exists(path):
    with open(path) as f:
      # Copies from before formats and layouts were folders read with the 'auto' rule.
      before = {"format": "folder", "layout": "auto", **json.load(f)}
    changed = {k: before.get(k) for k, v in settings.items() if before.get(k) != v}
    if changed:
      raise ValueError(f"{out} was prepared with {changed} (see {path}); use a new directory "
                       f"or the same settings to resume")


def prepare(listing: Union[Listing, Sequence[Item]], out: str, *, max_size: int = 320,
            quality: int = 90, workers: int = 1, source: str = "", progress: bool = True,
            format: str = "folder", layout: str = "auto") -> Summary:
  """Writes every item to `out` as an image folder or ArrayRecord shards (`format`, see FORMATS);
  returns the counts. Items (or shards) already written are skipped.

  Args:
    listing: `folder_items` or `tfds_items`; a plain sequence of items has the classes its items name.
    layout: the `folder_items` layout the listing was made with, recorded so that a resumed run
      with another is refused.

  Raises:
    ValueError: bad settings, or `out` was prepared with other settings.
    OSError: an output cannot be written (nothing already written is touched).
  """
  if max_size < 1 or not 1 <= quality <= 100:
    raise ValueError(f"--max-size must be >= 1 and --quality in 1..100, got {max_size}, {quality}")
  if format not in FORMATS:
    raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {format!r}")
  if not isinstance(listing, Listing):
    classes: dict = {}
    for item in listing:
      classes.setdefault(item.split, set()).add(item.class_name)
    listing = Listing(list(listing), {k: sorted(v) for k, v in classes.items()})
  if format == "array_record":
    _check_utf8_paths(out, listing.classes)
  settings = {"source": source, "max_size": max_size, "quality": quality, "format": format,
              "layout": layout}
  _check_manifest(out, settings)
  os.makedirs(out, exist_ok=True)
  if not os.path.exists(os.path.join(out, MANIFEST)):  # Settings first, so a resume can check them.
    with open(os.path.join(out, MANIFEST), "w") as f:
      json.dump({**settings, "complete": False}, f, indent=1)
  _write_list(os.path.join(out, RENAMED), listing.renamed)
  if format == "array_record":
    summary = _prepare_shards(listing, out, max_size, quality, workers, progress, settings)
    summary.renamed = len(listing.renamed)
    return summary
  items = listing.items
  for split, names in listing.classes.items():  # Every class, so that no label shifts.
    for name in names:
      os.makedirs(os.path.join(out, split, name), exist_ok=True)
  summary = Summary(images=len(items), renamed=len(listing.renamed))
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


def _check_utf8_paths(out: str, classes: dict) -> None:
  """ArrayRecord's reader and writer take paths as UTF-8: refuses, before anything is written, an
  output or split folder whose name is not (the folder format copies any name)."""
  for folder in [out] + [os.path.join(out, split) for split in classes]:
    try:
      folder.encode("utf-8")
    except UnicodeEncodeError:
      shown = folder.encode("utf-8", "backslashreplace").decode("utf-8")
      raise ValueError(f"ArrayRecord files cannot be written in {shown}, a name that is not UTF-8: "
                       f"rename the folder, or use --format folder") from None


def _converted(todo: Sequence[Item], max_size: int, quality: int,
               workers: int) -> Iterator[tuple[Item, Optional[bytes], Optional[str]]]:
  """(item, its JPEG bytes or None, None or why it is unreadable) of each item, in order."""
  def run(item):
    try:
      return item, encoded(item, max_size, quality), None
    except Exception as e:  # Any failure to read one image is recorded against it, never fatal.
      return item, None, f"{type(e).__name__}: {e}".replace("\n", " ")

  # In chunks, so that memory stays bounded and an interrupt waits for one chunk, not the dataset.
  chunk = 64 * max(1, workers)
  with concurrent.futures.ThreadPoolExecutor(max(1, workers)) as pool:
    for start in range(0, len(todo), chunk):
      yield from pool.map(run, todo[start:start + chunk])


def shard_name(split: str, index: int, count: int) -> str:
  name = "data" if split == "." else split.replace("/", "_")
  return f"{name}-{index:05d}-of-{count:05d}.array_record"


def _prepare_shards(listing: Listing, out: str, max_size: int, quality: int, workers: int,
                    progress: bool, settings: dict) -> Summary:
  """The ArrayRecord output of `prepare` (the module's docstring has the layout)."""
  summary = Summary(images=len(listing.items))
  shards = []  # (split, index, count, items)
  for split, names in listing.classes.items():
    os.makedirs(os.path.join(out, split), exist_ok=True)
    with open(os.path.join(out, split, CLASSES), "w") as f:
      json.dump(names, f)
    members = [item for item in listing.items if item.split == split]
    count = -(-len(members) // SHARD_SIZE)
    shards += [(split, i, count, members[i * SHARD_SIZE:(i + 1) * SHARD_SIZE]) for i in range(count)]
  bar = _progress(None, len(listing.items), progress)
  try:
    for split, index, count, members in shards:
      path = os.path.join(out, split, shard_name(split, index, count))
      if os.path.exists(path):  # Renamed into place whole: its sidecar says what it holds.
        with open(path + ".json") as f:
          done = json.load(f)
        summary.already_done += done["records"]
        summary.unreadable += [tuple(u) for u in done["unreadable"]]
      else:
        records, unreadable = _write_shard(path, members, max_size, quality, workers)
        summary.written += records
        summary.unreadable += unreadable
      if bar is not None:
        bar.update(len(members))
  finally:  # Ends the bar's line, so that an error message starts its own.
    if bar is not None:
      bar.close()
  _finish_shards(out, summary, settings)
  return summary


def _write_shard(path: str, members: Sequence[Item], max_size: int, quality: int,
                 workers: int) -> tuple[int, list]:
  """Writes one shard and its sidecar; returns (records, unreadable). A failure removes the
  unfinished shard; an interrupt, as a kill, may leave it (a resumed run overwrites it)."""
  import msgpack
  from array_record.python.array_record_module import ArrayRecordWriter
  writer = ArrayRecordWriter(path + ".partial", "group_size:1")
  records, unreadable = 0, []
  try:
    try:
      for item, data, error in _converted(members, max_size, quality, workers):
        if error is None:
          # surrogateescape: a class folder's name that is not UTF-8 keeps its bytes (the reader
          # unpacks with the same).
          writer.write(msgpack.packb({"jpeg": data, "class": item.class_name},
                                     unicode_errors="surrogateescape"))
          records += 1
        else:
          unreadable.append((item.name, error))
    finally:
      writer.close()
    with open(path + ".json", "w") as f:
      json.dump({"records": records, "unreadable": unreadable}, f)
  except Exception:
    _remove(path + ".partial")
    raise
  os.replace(path + ".partial", path)
  return records, unreadable


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
  _write_list(os.path.join(out, UNREADABLE), summary.unreadable)


def _write_list(path: str, rows: Sequence[tuple[str, str]]) -> None:
  """Tab-separated rows, names as the file system's bytes (surrogateescape); none: no file (one left
  by an earlier run, whose images have since been fixed, is removed)."""
  if rows:
    with open(path, "w", encoding="utf-8", errors="surrogateescape") as f:
      f.writelines(f"{a}\t{b}\n" for a, b in rows)
  else:
    _remove(path)


def _write_manifest(out: str, summary: Summary, settings: dict) -> None:
  with open(os.path.join(out, MANIFEST), "w") as f:
    json.dump({**settings, "complete": True, "images": summary.images, "written": summary.written,
               "already_done": summary.already_done, "unreadable": len(summary.unreadable)},
              f, indent=1)
