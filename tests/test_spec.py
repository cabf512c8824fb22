"""ModelSpec: round trips, validation naming the field, refusal of foreign and other-version files."""

import json

import pytest

from resnet_jax import spec as spec_lib
from resnet_jax.spec import ModelSpec, SpecError


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
  legacy = tmp_path / "legacy.json"
  legacy.write_text(json.dumps({"arch": "resnet18", "num_classes": 1000}))
  with pytest.raises(SpecError, match="legacy.json.*not a resnet_jax model description"):
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
