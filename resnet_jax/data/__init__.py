"""Input: image decoding, sources (TFDS, image folders, ArrayRecord), augmentation, the paper's views, prepare.

Runs on the host (NumPy, PIL, Grain), except MixUp/CutMix, which the step applies on the device. It may import
`resnet_jax.models`, never `.weights` or `.training` (tests/test_layers.py checks).
"""
