"""ModelSpec: round trips, validation naming the field, refusal of foreign and other-version files."""

import json

import numpy as np
import pytest
from PIL import Image

from resnet_jax.weights import spec as spec_lib
from resnet_jax.data import transforms
from resnet_jax.weights.spec import ModelSpec, SpecError


def _digits_spec(**changes):
  fields = dict(arch="resnet20", num_classes=10, in_channels=1, image_size=16, resize_size=16,
                mean_255=(84.0,), std_255=(105.0,), class_names=[str(i) for i in range(10)],
                model_overrides={"stage_sizes": [1, 1, 1]},
                source={"kind": "training", "workdir": "/tmp/x", "step": 3})
  fields.update(changes)
  return ModelSpec(**fields)


def test_json_round_trip_is_equal(tmp_path):
  spec = _digits_spec()
  path = str(tmp_path / "model.json")
  spec_lib.write(path, spec)
  assert spec_lib.read(path) == spec


def test_build_gives_the_described_model():
  model = _digits_spec().build()
  assert (model.num_classes, model.in_channels, tuple(model.stage_sizes)) == (10, 1, (1, 1, 1))


def test_mean_std_rescales():
  mean, std = ModelSpec("resnet18", 1000).mean_std(scale=1.0)
  assert mean == pytest.approx((0.485, 0.456, 0.406))
  assert std == pytest.approx((0.229, 0.224, 0.225))


@pytest.mark.parametrize("changes, field", [
    (dict(arch="resnet_999"), "arch"),
    (dict(num_classes=0), "num_classes"),
    (dict(mean_255=(1.0, 2.0, 3.0)), "mean_255"),
    (dict(std_255=(0.0,)), "std_255"),
    (dict(std_255=(float("nan"),)), "std_255"),
    (dict(image_size=32), "resize_size"),
    (dict(class_names=["a"]), "class names"),
    (dict(model_overrides={"num_classes": 3}), "model_overrides"),
    (dict(model_overrides={"bogus": 3}), "bogus"),
], ids=["arch", "classes", "mean-length", "std-zero", "std-nan", "resize-below-crop",
        "names-count", "reserved-override", "unknown-override"])
def test_invalid_fields_are_named(changes, field):
  with pytest.raises(SpecError, match=field):
    _digits_spec(**changes)


def test_foreign_old_and_newer_files_are_refused_by_name(tmp_path):
  foreign = tmp_path / "foreign.json"
  foreign.write_text(json.dumps({"model": "resnet18"}))
  with pytest.raises(SpecError, match="foreign.json.*not a resnet_jax model description"):
    spec_lib.read(str(foreign))
  legacy = tmp_path / "legacy.json"
  legacy.write_text(json.dumps({"arch": "resnet18", "num_classes": 1000}))
  with pytest.raises(SpecError, match="legacy.json was written by an older resnet_jax.*convert the "
                                      "weights again"):
    spec_lib.read(str(legacy))
  newer = tmp_path / "newer.json"
  newer.write_text(json.dumps(dict(_digits_spec().to_json(), version=99)))
  with pytest.raises(SpecError, match="newer.json has ModelSpec version 99"):
    spec_lib.read(str(newer))
  broken = tmp_path / "broken.json"
  broken.write_text('{"format": ')
  with pytest.raises(SpecError, match="broken.json is not a readable"):
    spec_lib.read(str(broken))


def test_differences_name_what_changes_the_model():
  ours = _digits_spec()
  theirs = ours.replace(arch="resnet32", class_names=(), source={})
  assert ours.differences(theirs) == ["arch: 'resnet20' -> 'resnet32'"]


def test_an_older_conversion_is_translated_exactly(tmp_path):
  """What `resnet-jax convert` wrote before ModelSpec records everything a spec needs (the rest is
  torchvision's published preprocessing), so it is read, not refused."""
  old = {"arch": "resnet50", "num_classes": 1000, "source": "/w/resnet50-11ad3fa6.pth",
         "weights": "IMAGENET1K_V2", "head": "converted", "resize_size": 232, "crop_size": 224}
  path = tmp_path / "model.json"
  path.write_text(json.dumps(old))
  spec = spec_lib.read(str(path))
  assert (spec.arch, spec.num_classes, spec.in_channels, spec.image_size, spec.resize_size) == (
      "resnet50", 1000, 3, 224, 232)
  np.testing.assert_allclose(spec.mean_std(1.0), [(0.485, 0.456, 0.406), (0.229, 0.224, 0.225)])
  assert spec.class_names == transforms.imagenet_classes()
  path.write_text(json.dumps(dict(old, head="new, 10 classes, seed 0", num_classes=10)))
  assert spec_lib.read(str(path)).class_names == ()


def test_training_meta_without_a_spec_is_refused_with_the_fix():
  old = {"arch": "resnet20", "num_classes": 10, "mean": [84.0], "std": [105.0], "image_size": 16,
         "step": 6}
  with pytest.raises(SpecError, match="checkpoint 6 .* older resnet_jax .* train again, or resume"):
    spec_lib.from_training_meta(old, "checkpoint 6 of /w")
  meta = {spec_lib.SPEC_KEY: _digits_spec().to_json(), "step": 6}
  assert spec_lib.from_training_meta(meta, "x").source["step"] == 6


def test_torchvision_spec_is_the_published_preprocessing(torchvision):
  spec = ModelSpec.for_torchvision("resnet50", 1000, 232, {"kind": "torchvision"})
  preset = torchvision.models.ResNet50_Weights.IMAGENET1K_V2.transforms()
  assert (spec.image_size, spec.resize_size) == (preset.crop_size[0], preset.resize_size[0])
  np.testing.assert_allclose(spec.mean_std(1.0), [preset.mean, preset.std])
  assert list(spec.class_names) == torchvision.models.ResNet50_Weights.IMAGENET1K_V2.meta["categories"]
  assert ModelSpec.for_torchvision("resnet18", 10, 256, {}).class_names == ()


def test_transform_feeds_a_grey_model_its_training_input():
  """A 1-channel spec's transform gives what training's center evaluation gives: the luma of an RGB
  image, resized and cropped as input_pipeline.resize_center_crop does, normalised on the 0-255 scale."""
  from resnet_jax.data import input_pipeline
  spec = _digits_spec(image_size=8, resize_size=10)
  rgb = np.random.default_rng(0).integers(0, 256, (13, 11, 3), np.uint8)
  grey = np.asarray(Image.fromarray(rgb).convert("L"))[..., None]
  want = (input_pipeline.resize_center_crop(grey, 8, crop_fraction=0.8).astype(np.float64) - 84.0) / 105.0
  np.testing.assert_allclose(spec.transform()(rgb)[0], want, atol=1e-6)
