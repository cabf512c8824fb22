"""The public functions that span layers: a model and its preprocessing from any saved form."""

from __future__ import annotations

import os
from typing import Any, Optional

from resnet_jax.weights import hub


def load_variables(source: str | os.PathLike, *, ema: bool = False, revision: Optional[str] = None
                   ) -> tuple[dict, Any]:
  """(variables, ModelSpec) of a `resnet-jax convert --out` directory, a training workdir, or timm's
  weights by name ('resnet50.a1_in1k', from the Hugging Face Hub).

  A workdir gives its newest intact checkpoint (damaged steps are skipped, nothing is moved; a step
  that a live trainer deletes meanwhile is retried).

  Args:
    source: the converted model's directory, the training workdir, or timm's weights name.
    ema: a workdir's EMA weights (config.model_ema) instead of the raw model's.
    revision: for timm's weights, the Hub revision (branch, tag or commit).
  """
  from resnet_jax.training import checkpoints  # Orbax and Grain: imported only when needed.
  return checkpoints.load_model(os.fspath(source), revision, ema=ema)


def pretrained(arch: Optional[str], weights: str = "DEFAULT", *, cache: Optional[str] = None,
               allow_nonfinite: bool = False, ema: bool = False, revision: Optional[str] = None,
               **overrides: Any) -> hub.Pretrained:
  """A model, its variables and its preprocessing, from weights by name, a file, or a saved directory.

  Example:
    model, variables, transform = resnet_jax.pretrained("resnet50", weights="IMAGENET1K_V2")
    logits = model.apply(variables, transform(PIL.Image.open("cat.jpg")))
    model, variables, transform = resnet_jax.pretrained("resnet50.a1_in1k")    # timm's, from the Hub
    model, variables, transform = resnet_jax.pretrained(None, "runs/digits")   # a training workdir

  Args:
    arch: a registered architecture, e.g. 'resnet50'; None to take it from the weights; or timm's
      weights name ('resnet50.a1_in1k') with `weights` left 'DEFAULT'.
    weights: what `resnet_jax.weights.hub.pretrained` takes (torchvision's weights name, a local file
      in torchvision's, timm's or transformers' layout, a URL, timm's weights name), or a
      directory written by `resnet-jax convert --out` or by training: its ModelSpec gives the model and
      the preprocessing it was trained or published with.
    cache: directory for downloads.
    allow_nonfinite: convert weights holding NaN or infinity instead of refusing them.
    ema: the EMA weights of a training workdir or of a torchvision/timm training checkpoint file.
    revision: for timm's weights, the Hub revision (branch, tag or commit).
    **overrides: model options for `get_model`, e.g. dtype=jnp.bfloat16.

  Returns:
    (model, variables, transform); `transform(images)` gives the NHWC batch the weights expect.
  """
  if os.path.isdir(weights):
    variables, spec = load_variables(weights, ema=ema)
    if arch is not None and arch != spec.arch:
      raise ValueError(f"{weights} holds a {spec.arch}, not a {arch}")
    return hub.Pretrained(spec.build(**overrides), variables, spec.transform())
  return hub.pretrained(arch, weights, cache=cache, allow_nonfinite=allow_nonfinite, ema=ema,
                        revision=revision, **overrides)
