"""Tests of `resnet-jax prepare` (resnet_jax/data/prepare.py): counts, sizes, unreadable files, resumption, TFDS."""

import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from resnet_jax import cli
from resnet_jax.data import input_pipeline, prepare


def _jpeg(path, h, w, seed):
  rng = np.random.default_rng(seed)
  small = rng.integers(0, 256, (h // 8 + 1, w // 8 + 1, 3), np.uint8)
  Image.fromarray(small).resize((w, h), Image.BICUBIC).save(path, quality=90)


def _folder(root):
  """train/{cat,dog}: 5 large JPEGs, 2 small ones, 1 PNG, 1 broken file, 1 text file."""
  sizes = [(90, 120), (120, 70), (64, 64), (200, 41), (50, 300), (20, 30), (32, 25)]
  for i, (h, w) in enumerate(sizes):
    d = root / "train" / ("cat" if i % 2 else "dog")
    d.mkdir(parents=True, exist_ok=True)
    _jpeg(d / f"{i}.jpg", h, w, i)
  Image.fromarray(np.full((80, 60), 7, np.uint8)).save(root / "train" / "cat" / "gray.png")
  (root / "train" / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
  (root / "train" / "dog" / "notes.txt").write_text("not an image")
  return 9  # image files, the broken one included


def test_prepare_accounts_for_every_image(tmp_path, capsys):
  count = _folder(tmp_path / "src")
  out = tmp_path / "out"
  code = cli.main(["prepare", str(tmp_path / "src"), str(out), "--max-size", "32", "--workers", "2"])
  assert code == 1  # One image could not be read: the run says so in its exit status.
  line = capsys.readouterr().out.strip().splitlines()[-1]
  assert line.startswith(f"{count} images in {out}") and "8 written" in line and "1 unreadable" in line
  listed = (out / prepare.UNREADABLE).read_text().splitlines()
  assert len(listed) == 1 and listed[0].startswith(str(tmp_path / "src" / "train" / "dog" / "broken.jpg"))
  outputs = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.jpg"))
  assert len(outputs) == count - 1 and "train/cat/gray.png.jpg" in outputs
  for path in out.rglob("*.jpg"):
    with Image.open(path) as image:
      assert image.format == "JPEG" and min(image.size) <= 32
  # Sizes as torchvision's Resize(32): shorter side 32, longer side truncated.
  with Image.open(out / "train" / "cat" / "3.jpg") as image:
    assert image.size == (32, int(32 * 200 / 41))
  # A JPEG already small enough is copied, not re-encoded.
  assert (out / "train/cat/5.jpg").read_bytes() == (tmp_path / "src/train/cat/5.jpg").read_bytes()
  manifest = json.loads((out / prepare.MANIFEST).read_text())
  assert manifest["complete"] and (manifest["images"], manifest["unreadable"]) == (count, 1)
  source = input_pipeline.get_source("folder", "train", data_dir=str(out))
  assert len(source) == count - 1 and source.classes == ["cat", "dog"]
  assert cli.main(["prepare", str(tmp_path / "src"), str(tmp_path / "src" / "small")]) == 2
  assert "inside the image folder" in capsys.readouterr().err


def test_prepare_resumes_after_an_interruption(tmp_path, monkeypatch):
  _folder(tmp_path / "src")
  items = prepare.folder_items(str(tmp_path / "src"))
  reference = tmp_path / "whole"
  prepare.prepare(items, str(reference), max_size=32, workers=1, progress=False)

  out = tmp_path / "out"
  write, calls = prepare._write, []

  def interrupted(path, data):
    calls.append(path)
    if len(calls) == 4:  # As a Ctrl-C or kill after three images: the fourth is half-written.
      with open(f"{path}.partial", "wb") as f:
        f.write(data[:10])
      raise KeyboardInterrupt
    write(path, data)

  monkeypatch.setattr(prepare, "_write", interrupted)
  with pytest.raises(KeyboardInterrupt):
    prepare.prepare(items, str(out), max_size=32, workers=1, progress=False)
  monkeypatch.setattr(prepare, "_write", write)
  assert len(list(out.rglob("*.jpg"))) == 3

  with pytest.raises(ValueError, match="prepared with .*'max_size': 32"):
    prepare.prepare(items, str(out), max_size=64, workers=1, progress=False)
  summary = prepare.prepare(items, str(out), max_size=32, workers=2, progress=False)
  assert (summary.images, summary.already_done, summary.written, len(summary.unreadable)) == (9, 3, 5, 1)
  for path in reference.rglob("*.jpg"):  # The same files as a run that was never interrupted.
    assert (out / path.relative_to(reference)).read_bytes() == path.read_bytes()
  assert len(list(out.rglob("*.jpg"))) == 8


def test_prepare_from_a_tfds_dataset(tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=6):
    items = prepare.tfds_items("cifar10", ["train"])
    labels = [input_pipeline.get_source("tfds", "train", dataset="cifar10")[i]["label"]
              for i in range(6)]
    images = [input_pipeline.get_source("tfds", "train", dataset="cifar10")[i]["image"]
              for i in range(6)]
  summary = prepare.prepare(items, str(tmp_path), max_size=16, progress=False)
  assert (summary.images, summary.written) == (6, 6)
  for i, (label, image) in enumerate(zip(labels, images)):
    path = tmp_path / "train" / str(label) / f"{i:08d}.jpg"  # mock cifar10's class names are '0'..'9'
    with Image.open(path) as out:
      assert out.size == (16, 16)
      # JPEG of a 2x bilinear shrink of the same image: far closer to it than to another image.
      want = np.asarray(Image.fromarray(image).resize((16, 16), Image.BILINEAR), np.float64)
      assert np.abs(np.asarray(out, np.float64) - want).mean() < 20
  records = tmp_path / "records"
  summary = prepare.prepare(items, str(records), max_size=16, progress=False, format="array_record")
  assert (summary.images, summary.written) == (6, 6)
  source = input_pipeline.get_source("array_record", "train", data_dir=str(records))
  folder = input_pipeline.get_source("folder", "train", data_dir=str(tmp_path))
  # Every class of the dataset, those 6 examples lack included: the labels are the dataset's.
  assert source.class_names == folder.class_names == [str(d) for d in range(10)]
  assert sorted(folder[i]["label"] for i in range(len(folder))) == sorted(labels)
  assert [source.class_names[source.undecoded(i)["label"]] for i in range(6)] == [str(l) for l in labels]


def test_array_record_copy_holds_what_the_folder_copy_holds(tmp_path, monkeypatch, capsys):
  """The same images, labels, classes and counts as the image-folder output; shards resume whole;
  a 1-channel source decodes grey; a missing split is one line naming its path."""
  count = _folder(tmp_path / "src")
  val = tmp_path / "src" / "val" / "dog"  # A validation split with one of the two classes.
  val.mkdir(parents=True)
  _jpeg(val / "v.jpg", 40, 50, 99)
  folder, records = tmp_path / "folder", tmp_path / "records"
  prepare.prepare(prepare.folder_items(str(tmp_path / "src")), str(folder), max_size=32,
                  progress=False)
  monkeypatch.setattr(prepare, "SHARD_SIZE", 3)  # train: 9 images in 3 shards.
  items = prepare.folder_items(str(tmp_path / "src"))
  writer_class = __import__("array_record.python.array_record_module",
                            fromlist=["ArrayRecordWriter"]).ArrayRecordWriter
  written = []

  class Interrupted:  # As a kill during the second shard: its .partial file is left behind.
    def __init__(self, path, options):
      self.inner = writer_class(path, options)
      written.append(path)

    def write(self, record):
      if len(written) == 2:
        raise KeyboardInterrupt
      self.inner.write(record)

    def close(self):
      self.inner.close()

  import array_record.python.array_record_module as arm
  monkeypatch.setattr(arm, "ArrayRecordWriter", Interrupted)
  with pytest.raises(KeyboardInterrupt):
    prepare.prepare(items, str(records), max_size=32, progress=False, format="array_record")
  monkeypatch.setattr(arm, "ArrayRecordWriter", writer_class)
  assert len(list((records / "train").glob("*.array_record"))) == 1
  assert list((records / "train").glob("*.partial"))
  with pytest.raises(ValueError, match="prepared with .*'format': 'array_record'"):
    prepare.prepare(items, str(records), max_size=32, progress=False)  # Folder output over it.
  summary = prepare.prepare(items, str(records), max_size=32, progress=False, format="array_record")
  assert (summary.images, summary.already_done, summary.written, len(summary.unreadable)) == (
      count + 1, 3, count + 1 - 3 - 1, 1)
  assert summary.unreadable[0][0].endswith("broken.jpg")
  assert (records / prepare.UNREADABLE).read_text().startswith(str(tmp_path / "src" / "train"))

  for split, class_names in (("train", None), ("val", ["cat", "dog"])):
    theirs = input_pipeline.get_source("folder", split, data_dir=str(folder), class_names=class_names)
    ours = input_pipeline.get_source("array_record", split, data_dir=str(records),
                                     class_names=class_names)
    assert (len(ours), ours.class_names) == (len(theirs), theirs.class_names)
    pairs = sorted((theirs.undecoded(i)["data"], theirs.undecoded(i)["label"]) for i in range(len(theirs)))
    assert sorted((ours.undecoded(i)["data"], ours.undecoded(i)["label"]) for i in range(len(ours))) == pairs
    by_bytes = {theirs.undecoded(i)["data"]: theirs[i]["image"] for i in range(len(theirs))}
    for i in range(len(ours)):  # Decoded as the folder source decodes them.
      np.testing.assert_array_equal(ours[i]["image"], by_bytes[ours.undecoded(i)["data"]])
  grey = input_pipeline.get_source("array_record", "train", data_dir=str(records),
                                   image_shape=(8, 8, 1))
  assert grey[0]["image"].ndim == 3 and grey[0]["image"].shape[-1] == 1

  assert cli.main(["train", "--config", "digits", "--workdir", str(tmp_path / "run"),
                   "--config.source=array_record", f"--config.data_dir={records}",
                   "--config.train_split=nowhere"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and str(records / "nowhere") in err[0]


def test_training_reads_an_array_record_copy(tmp_path, tiny_config):
  """A short run on the prepared records, RGB and the fast JPEG path, as on an image folder."""
  from resnet_jax.training import train_lib
  _folder(tmp_path / "src")
  records = tmp_path / "records"
  prepare.prepare(prepare.folder_items(str(tmp_path / "src")), str(records), max_size=32,
                  progress=False, format="array_record")
  (records / "val").symlink_to(records / "train")  # Evaluate on the training images.
  config = tiny_config(source="array_record", data_dir=str(records), train_split="train",
                       eval_split="val", batch_size=8, num_train_steps=2, mean=(120.0,) * 3,
                       std=(60.0,) * 3, image_size=16, augment="torchvision")
  config.model_overrides.in_channels = 3
  result = train_lib.train_and_evaluate(config, str(tmp_path / "run"))
  assert result["count"] == 8


# ----------------------------------------------------------------------------------------------
# The copy trains as the source does: one folder holding every case that once changed the copy.

def _smooth(h, w, seed, channels=3):
  """A smooth random image (JPEG-friendly), distinct per seed so that an overwritten copy shows."""
  rng = np.random.default_rng(seed)
  small = rng.integers(0, 256, (h // 8 + 2, w // 8 + 2, channels), np.uint8)
  image = Image.fromarray(small[..., 0] if channels == 1 else small)
  return np.asarray(image.resize((w, h), Image.BICUBIC))


def _awkward_source(root):
  """root/train and root/val (a link to a folder elsewhere): JPEGs (one truncated, one grey, one in
  a nested folder, one hidden), a 16-bit PNG, a float TIFF, an RGBA PNG, an empty class folder, a
  class folder that is a link, names that collide once '.jpg' is appended or case ignored, and file
  and class names with spaces, unicode and bytes that are not UTF-8."""
  seed = iter(range(1000))
  train = root / "train"

  def save(path, pixels, **kwargs):
    path = os.fsencode(path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(pixels).save(path, **kwargs)

  def jpeg(path, h=24, w=30):
    save(path, _smooth(h, w, next(seed)), format="JPEG", quality=90)

  jpeg(train / "cat" / "plain.jpg")
  jpeg(train / "cat" / "nested" / "deeper" / "x.jpg")
  jpeg(train / "cat" / ".hidden.jpg")
  save(train / "cat" / "grey.jpg", _smooth(20, 26, next(seed), 1), format="JPEG")
  whole = io.BytesIO()
  Image.fromarray(_smooth(40, 40, next(seed))).save(whole, "JPEG")
  (train / "cat" / "truncated.jpg").write_bytes(whole.getvalue()[:len(whole.getvalue()) // 2])
  sixteen = (_smooth(22, 18, next(seed), 1).astype(np.uint16) * 257 + 100).clip(0, 65535)
  save(train / "dog" / "sixteen.png", sixteen.astype(np.uint16))
  with Image.open(os.fsencode(train / "dog" / "sixteen.png")) as check:
    assert check.mode.startswith("I")  # Truly 16-bit: PIL's convert('RGB') would clip it.
  save(train / "dog" / "float.tif", _smooth(16, 20, next(seed), 1).astype(np.float32) / 255.0)
  rgba = np.concatenate([_smooth(18, 18, next(seed)), np.full((18, 18, 1), 90, np.uint8)], -1)
  save(train / "dog" / "alpha.png", rgba)
  # Names that meet: x.png / x.PNG / x.png.jpg; y.jpg / Y.JPG (one file system ignores case).
  save(train / "dog" / "x.png", _smooth(20, 20, next(seed)))
  save(train / "dog" / "x.PNG", _smooth(20, 20, next(seed)))
  jpeg(train / "dog" / "x.png.jpg")
  jpeg(train / "dog" / "y.jpg")
  jpeg(train / "dog" / "Y.JPG")
  jpeg(train / "dog" / "y.jpeg")
  (train / "empty class").mkdir()
  (train / "notes.txt").write_text("not part of any class")
  elsewhere = root.parent / f"{root.name}-elsewhere"
  jpeg(elsewhere / "linked class" / "l.jpg")
  (train / "linked class").symlink_to(elsewhere / "linked class", target_is_directory=True)
  jpeg(train / "ünïcödé" / "名前 with space.jpg")
  odd = os.fsdecode(b"caf\xe9")  # Latin-1 bytes: not UTF-8, as old archives hold.
  jpeg(train / odd / f"{odd}.jpg")
  save(train / odd / f"{odd} 2.png", _smooth(20, 24, next(seed)))
  jpeg(elsewhere / "val" / "cat" / "v.jpg")
  save(elsewhere / "val" / "dog" / "v.png", _smooth(12, 40, next(seed)))
  (root / "val").symlink_to(elsewhere / "val", target_is_directory=True)


def _expected(path, quality):
  """What the copy of `path` decodes to, made with PIL's own JPEG encoder from what training decodes
  (`images.load_image`): the file's own pixels for a JPEG (copied as is), else their JPEG at
  `quality`, greyscale for one-channel images."""
  from resnet_jax.data import images
  with Image.open(path) as image:
    if image.format == "JPEG":
      return images.load_image(path)
    grey = image.mode in ("L", "I", "F") or image.mode.startswith("I;16")
  pixels = images.load_image(path, 1 if grey else 3)
  buffer = io.BytesIO()
  Image.fromarray(pixels[..., 0] if grey else pixels).save(buffer, "JPEG", quality=quality)
  return images.decode_image(buffer.getvalue(), path)


@pytest.mark.parametrize("format", ["folder", "array_record"])
def test_the_copy_holds_every_image_as_training_reads_it(tmp_path, capsys, format):
  """Classes, labels and decoded pixels of EVERY image of the source and its copy.

  --max-size is larger than every image, so nothing is resized and the comparison is exact: a
  JPEG's copy decodes to the source's pixels; any other image's copy to PIL's JPEG (same quality)
  of the pixels training decodes from the source, which holds 16-bit and float images to their
  scaled values (a clipped copy would be mostly white) and is within JPEG noise of them (checked
  too, so that the reference itself cannot drift)."""
  from resnet_jax.data import images
  from resnet_jax._torchvision import import_torchvision
  datasets = import_torchvision().datasets
  src, out = tmp_path / "src", tmp_path / "out"
  _awkward_source(src)
  code = cli.main(["prepare", str(src), str(out), "--max-size", "1000", "--quality", "95",
                   "--workers", "2", "--format", format])
  unreadable = []
  for split in ("train", "val"):
    for path, _ in datasets.ImageFolder(str(src / split), allow_empty=True).samples:
      try:
        images.load_image(path)
      except images.ImageError:
        unreadable.append(path)
  assert unreadable == [str(src / "train" / "cat" / "truncated.jpg")]
  assert code == 1  # An image could not be decoded: the exit status says so.
  listed = (out / prepare.UNREADABLE).read_bytes().decode("utf-8", "surrogateescape").splitlines()
  assert [line.split("\t")[0] for line in listed] == unreadable
  assert not list(out.rglob("*.partial"))
  assert "renamed to keep names apart" in capsys.readouterr().out

  listing = prepare.folder_items(str(src))
  copies = {item.name: item.out for item in listing.items}
  assert len(set(o.casefold() for o in copies.values())) == len(copies)  # Nothing overwritten.
  for split in ("train", "val"):
    theirs = datasets.ImageFolder(str(src / split), allow_empty=True)
    if format == "folder":
      ours = datasets.ImageFolder(str(out / split), allow_empty=True)
      assert ours.classes == theirs.classes  # The empty class folder too: no label shifts.
      copied = {path: label for path, label in ours.samples}
      decode = lambda path: images.load_image(path)
    else:
      records = input_pipeline.get_source("array_record", split, data_dir=str(out))
      assert records.class_names == theirs.classes
      # Records are in the source's order, the unreadable image left out.
      readable = [p for p, _ in theirs.samples if p not in unreadable]
      copied = {str(out / copies[p]): records.undecoded(i)["label"] for i, p in enumerate(readable)}
      pixels = {str(out / copies[p]): records[i]["image"] for i, p in enumerate(readable)}
      decode = pixels.__getitem__
    assert len(copied) == len(theirs.samples) - sum(p in unreadable for p, _ in theirs.samples)
    for path, label in theirs.samples:
      if path in unreadable:
        continue
      copy = str(out / copies[path])
      assert copied[copy] == label, path
      got, want = decode(copy), _expected(path, 95)
      np.testing.assert_array_equal(got, want, err_msg=path)
      # Within JPEG noise of the pixels training reads from the source (q95, smooth images).
      # Within JPEG noise of the pixels training reads from the source: measured 0 (JPEGs), 0.5-0.7
      # (grey) and 3.5-5.3 (RGB, chroma at half resolution) here; a clipped 16-bit copy is ~100 off.
      assert np.abs(got.astype(np.float64) - images.load_image(path)).mean() < 8, ascii(path)


@pytest.mark.parametrize("format", ["folder", "array_record"])
def test_a_failed_write_leaves_no_partial_file(tmp_path, monkeypatch, capsys, format):
  """A write that fails (a full disk, say) is one line, and no unfinished file is left behind."""
  _folder(tmp_path / "src")
  if format == "folder":
    monkeypatch.setattr(os, "replace", _raise_no_space)  # Fails once the partial file is written.
  else:
    import array_record.python.array_record_module as arm
    writer_class = arm.ArrayRecordWriter

    class Full(writer_class):
      def write(self, record):
        _raise_no_space()

    monkeypatch.setattr(arm, "ArrayRecordWriter", Full)
  code = cli.main(["prepare", str(tmp_path / "src"), str(tmp_path / "out"), "--format", format])
  err = [line for line in capsys.readouterr().err.splitlines()
         if line.strip() and not line.startswith("prepare:")]  # Less the progress bar.
  assert code == 2 and err == ["resnet-jax prepare: error: [Errno 28] No space left on device"]
  assert not list((tmp_path / "out").rglob("*.partial"))


def _raise_no_space(*args):
  raise OSError(28, "No space left on device")


def test_split_folders_follow_the_documented_layout_rule(tmp_path):
  def tree(name, files):
    for f in files:
      (tmp_path / name / f).parent.mkdir(parents=True, exist_ok=True)
      (tmp_path / name / f).write_bytes(b"")
    return str(tmp_path / name)

  splits = tree("splits", ["train/cat/a.jpg", "train/dog/sub/b.png", "val/cat/c.jpg"])
  one = tree("one", ["cat/a.jpg", "dog/sub/b.png"])
  nested = tree("nested", ["cat/indoor/a.jpg", "dog/outdoor/b.jpg"])  # Ambiguous: read as splits.
  assert prepare.split_folders(splits) == ["train", "val"]
  assert prepare.split_folders(one) == ["."]
  assert prepare.split_folders(nested) == ["cat", "dog"]
  assert prepare.split_folders(nested, "classes") == ["."]
  assert prepare.split_folders(one, "splits") == ["cat", "dog"]
  listing = prepare.folder_items(nested, layout="classes")
  assert listing.classes == {".": ["cat", "dog"]}
  assert [(i.out, i.class_name) for i in listing.items] == [
      (os.path.join("cat", "indoor", "a.jpg"), "cat"), (os.path.join("dog", "outdoor", "b.jpg"), "dog")]
  with pytest.raises(ValueError, match="--layout must be one of"):
    prepare.split_folders(one, "flat")


def test_array_record_refuses_a_split_name_that_is_not_utf8(tmp_path, capsys):
  """ArrayRecord opens its files by UTF-8 path: such a split is one line, before anything is
  written (the folder format, above, copies it)."""
  split = os.fsdecode(b"tr\xe9in")
  for name in ("a", "b"):
    os.makedirs(os.path.join(tmp_path, "src", split, name))
    Image.new("RGB", (8, 8)).save(os.path.join(tmp_path, "src", split, name, "x.png"))
  code = cli.main(["prepare", str(tmp_path / "src"), str(tmp_path / "out"), "--format", "array_record"])
  err = capsys.readouterr().err.strip().splitlines()
  assert code == 2 and len(err) == 1 and "not UTF-8" in err[0] and "--format folder" in err[0]
  assert not (tmp_path / "out").exists()
