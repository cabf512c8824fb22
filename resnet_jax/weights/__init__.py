"""Saved models: conversion from and to torchvision, timm and transformers, the model spec, weights by name.

A `ModelSpec` says what a saved model is and how it is fed; `convert` maps state dicts both ways with strict
checks; `hub` fetches weights by name; `verify` runs converted weights against the reference. It may import
`resnet_jax.models` and `.data` (for the preprocessing a spec describes), never `.training`
(tests/test_layers.py checks).
"""
