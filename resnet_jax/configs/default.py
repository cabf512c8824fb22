r"""Every key the trainer reads, with the defaults of the paper's ImageNet recipe (ResNet-50).

Recipes import this and override fields; the returned config is locked, so a misspelled key, in a
recipe or on the command line (`--config.lerning_rate=...`), is an error. Run:

  python train.py --config configs/default.py --workdir runs/default \
      --config.data_dir=~/tensorflow_datasets
"""

import ml_collections

from resnet_jax.data.image_ops import IMAGENET_MEAN_255, IMAGENET_STD_255


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()

  # Model.
  config.model = "resnet50"  # A name from resnet_jax.list_models().
  # Fields of models.ResNet to override, e.g. in_channels=1 or stage_sizes=(1, 1, 1). Recipes assign
  # a whole ConfigDict; the keys it holds can then be overridden on the command line.
  config.model_overrides = ml_collections.ConfigDict()
  config.num_classes = 0  # 0: the dataset's number of classes.
  # Compute dtype: 'auto' (bfloat16 on GPU/TPU, float32 on CPU), 'float32' or 'bfloat16'.
  config.dtype = "auto"
  # A `save_variables` directory (e.g. `resnet-jax convert --out DIR`) or a training workdir to
  # start from; the classifier is re-initialised when the class count differs. Ignored on resume.
  config.init_from = ""

  # Data.
  config.source = "tfds"  # 'tfds', 'folder' (data_dir/<split>/<class>/*.jpg), 'digits', 'synthetic'.
  config.dataset = "imagenet2012"  # TFDS name, for source 'tfds'.
  config.data_dir = ""  # TFDS data_dir ('' = ~/tensorflow_datasets) or the image-folder root.
  config.train_split = "train"
  config.eval_split = "validation"
  config.image_size = 224
  config.augment = "torchvision"  # 'torchvision' (random-resized crop + flip), 'paper', 'cifar', 'none'.
  # After `augment`, as torchvision's reference (resnet_jax/data/autoaugment.py): '' (none), 'ta_wide'
  # (TrivialAugmentWide), 'rand_augment' (2 ops at bin ra_magnitude of 31) or 'augmix'.
  config.auto_augment = ""
  config.ra_magnitude = 9
  config.augmix_severity = 3
  config.random_erase = 0.0  # RandomErasing's probability; the box is filled with `mean`.
  config.ra_sampler = False  # Repeated augmentation (torchvision's RASampler)...
  config.ra_reps = 3  # ...with this many augmented copies of each image.
  config.eval_protocol = "center"  # 'center' (resize to image_size / eval_crop_fraction, crop), 'ten_crop'.
  config.eval_crop_fraction = 0.875  # 224 / 256.
  # FixRes (torchvision's --train-crop-size, --val-resize-size, --val-crop-size); 0: as above.
  config.train_crop_size = 0  # 0: image_size.
  config.val_resize_size = 0  # 0: val_crop_size / eval_crop_fraction.
  config.val_crop_size = 0  # 0: image_size.
  # The evaluation resize's filter (PIL's): 'bilinear' (torchvision's) or 'bicubic' (timm's, RSB's).
  # Recorded in the checkpoints' model description, so `resnet-jax predict`/`evaluate` use it too.
  # Training's crops are resized bilinear either way.
  config.val_interpolation = "bilinear"
  config.mean = IMAGENET_MEAN_255  # Per channel, on the 0-255 scale.
  config.std = IMAGENET_STD_255
  config.synthetic_examples = 1_281_167  # Size of each split of source 'synthetic'.
  config.num_data_threads = 8  # Grain reader threads per process.
  # Training reads only the blocks of image-folder JPEGs around the drawn crop, at a DCT scale (1/2,
  # 1/4, 1/8) that leaves the crop at least 2x image_size pixels across; crops and flips are the
  # exact path's (resnet_jax/data/jpeg.py). Evaluation always decodes in full.
  config.fast_decode = True
  # Training's resize ('torchvision', 'paper'): False, OpenCV's (image_ops.resize_box: several times
  # faster, >= 40 dB median PSNR from torchvision's PIL bytes, README "Input speed"); True, PIL's,
  # torchvision's bytes (and fast_decode decodes at full scale). Evaluation always resizes with PIL.
  config.exact_input = False
  # Training input in N worker processes (each with num_data_threads threads); 0: threads only.
  config.data_processes = 0
  config.prefetch_batches = 2  # Batches placed on the devices ahead of the step.
  config.seed = 0  # Parameter initialisation, shuffling and augmentation.

  # Optimisation.
  config.batch_size = 256  # Global, over all devices and processes.
  config.num_epochs = 90.0
  config.num_train_steps = -1  # > 0: train this many steps instead of num_epochs.
  config.base_learning_rate = 0.1  # For a batch of 256, scaled linearly (Goyal et al., 2017).
  config.learning_rate = config.get_ref("base_learning_rate") * config.get_ref("batch_size") / 256
  config.lr_schedule = "step"  # 'step', 'cosine', 'poly' or 'constant'.
  config.schedule_unit = "epochs"  # Unit of lr_boundaries and warmup: 'epochs' or 'steps'.
  config.lr_boundaries = (30, 60)
  config.lr_decay_factor = 0.1
  config.warmup = 0.0  # Length of the warm-up (schedule_unit); 0 for none.
  config.warmup_type = "linear"  # 'linear' from warmup_factor * lr to lr, or 'constant' at it.
  config.warmup_factor = 0.0
  config.lr_end = 0.0  # 'poly': the rate reached at the last step...
  config.lr_power = 2.0  # ...as (1 - t / T) ** lr_power after the warm-up.
  config.optimizer = "sgd"  # 'sgd', 'adamw', 'lars' or 'lamb' (resnet_jax/training/optim.py).
  config.momentum = 0.9
  config.nesterov = False
  config.weight_decay = 1e-4
  config.weight_decay_exclude_bn_bias = False  # The paper decays every parameter.
  # torchvision's --norm-weight-decay / --bias-weight-decay ('sgd', 'adamw'); < 0: weight_decay.
  config.norm_weight_decay = -1.0
  config.bias_weight_decay = -1.0
  config.clip_grad_norm = 0.0  # > 0: clip the gradient's global norm to this; 0: off.
  # Micro-batches per step (for batches that do not fit); BatchNorm statistics per micro-batch.
  config.grad_accum_steps = 1
  config.label_smoothing = 0.0
  config.loss = "cross_entropy"  # 'cross_entropy' (softmax) or 'bce' (a sigmoid per class, timm's).
  config.bce_target_threshold = -1.0  # 'bce': targets above it become 1, the others 0; < 0: none.
  config.drop_path_rate = 0.0  # Stochastic depth's rate (timm's drop_path_rate); 0: off.
  config.drop_rate = 0.0  # Dropout before the classifier (timm's drop_rate); 0: off.
  # Batch-level MixUp / CutMix (resnet_jax/data/mixup.py), Beta(alpha, alpha); 0 = off; both > 0: one of
  # the two per batch, as torchvision's reference.
  config.mixup_alpha = 0.0
  config.cutmix_alpha = 0.0
  # An EMA of the weights and BatchNorm statistics (resnet_jax/training/ema.py), evaluated beside the model
  # ('eval_ema' metrics) and saved with it; torchvision's flags and decay adjustment.
  config.model_ema = False
  config.model_ema_steps = 32
  config.model_ema_decay = 0.99998

  # Devices.
  config.parallelism = "jit"  # 'jit' (sharded over a mesh of all devices) or 'pmap'.
  config.sync_batch_norm = True  # 'pmap' only: False keeps per-device statistics (DDP without SyncBN).
  config.distributed = ml_collections.ConfigDict()
  config.distributed.initialize = False  # Call jax.distributed.initialize (multi-host).
  config.distributed.coordinator_address = ""  # 'host:port'; '' = auto-detect (SLURM, TPU, ...).
  config.distributed.num_processes = 0  # 0 = auto-detect.
  config.distributed.process_id = -1  # -1 = auto-detect.

  # Loop, logging, checkpoints.
  config.log_every_steps = 100
  config.eval_every_steps = 0  # 0: once per epoch.
  config.checkpoint_every_steps = 1000
  config.keep_checkpoints = 3
  config.async_checkpoints = True
  config.progress_bar = True

  config.lock()
  return config
