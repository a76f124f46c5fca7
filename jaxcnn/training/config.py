"""The experiment configuration: every key with its default, and its validation."""

from __future__ import annotations

import math

import ml_collections

PARALLEL_MODES = ("none", "data", "pmap")
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "warmup_cosine")


def default_config() -> ml_collections.ConfigDict:
    """All keys `experiments/train.py` understands; config files override some of them.

    The dict is locked: an override of a key that does not exist (a typo) is an error.
    """
    config = ml_collections.ConfigDict()
    # Model: a name of `jaxcnn.models.available()` and extra keyword arguments for `create`.
    config.model = "lenet5"
    config.model_kwargs = ml_collections.ConfigDict()
    config.dtype = "float32"  # compute dtype ("bfloat16" for mixed precision); parameters stay float32
    # Data: a name of `jaxcnn.data.available()`; 0 examples means the whole split.
    config.dataset = "fashion_mnist"
    config.data_dir = ""  # "" = the TFDS default
    config.data_source = "auto"
    config.train_examples = 0
    config.test_examples = 0
    config.batch_size = 128
    config.eval_batch_size = 1000
    # Length: `num_steps` > 0 overrides `num_epochs`.
    config.num_epochs = 2
    config.num_steps = 0
    # Optimisation.
    config.optimizer = "momentum"
    config.learning_rate = 0.05
    config.momentum = 0.9
    config.weight_decay = 0.0
    config.schedule = "constant"
    config.warmup_steps = 0
    config.label_smoothing = 0.0
    # Augmentation on device (jaxcnn.data.Augmentation), drawn from (seed, step): random crops of the
    # image zero-padded by this many pixels, left-right flips, random erasing with this probability.
    config.augment_crop_padding = 0
    config.augment_flip = False
    config.augment_erase_probability = 0.0
    # > 0: evaluate an exponential moving average of the weights with this decay (e.g. 0.999).
    config.ema_decay = 0.0
    # True: test-time augmentation, each test image's logits averaged with its mirror image's.
    config.eval_flip = False
    # > 0: test-time augmentation, the logits averaged with those of the image moved this many pixels up,
    # down, left and right (zero-filled, as augment_crop_padding's crops); with eval_flip, of each mirrored.
    config.eval_shift = 0
    # > 0: skip (don't apply) steps whose gradients are not finite, up to this many in a row
    # (optax.apply_if_finite); 0: stop the run at the first non-finite loss.
    config.skip_nonfinite_steps = 0
    config.seed = 0
    # Logging, evaluation and checkpoints, in steps; eval_every 0 = once per epoch and at the end.
    config.log_every = 100
    config.eval_every = 0
    config.checkpoint_every = 500
    config.checkpoints_to_keep = 3
    # A workdir holding a run with another config is refused unless this is True (that run is discarded).
    config.overwrite = False
    # Scaling.
    config.parallel = "none"
    # > 1: train that many models in one vmapped step, member i from seed `seed + i`, on the batches
    # of `seed`; metrics add `ensemble_accuracy` (of the members' averaged logits).
    config.ensemble_size = 1
    # DP-SGD (optax's per-example clipping and noise) when dp_clip_norm > 0: each example's gradient is
    # clipped to this global L2 norm, and Gaussian noise of std dp_clip_norm * dp_noise_multiplier added.
    config.dp_clip_norm = 0.0
    config.dp_noise_multiplier = 0.0
    return config.lock()


def _choice(config, key, choices):
    if config[key] not in choices:
        raise ValueError(f"config.{key} must be one of {', '.join(map(repr, choices))}, got {config[key]!r}")


def _at_least(config, key, minimum, kind=int):
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, kind) or value < minimum:
        raise ValueError(f"config.{key} must be a {kind.__name__} >= {minimum}, got {value!r}")


def _leaves(tree, prefix: str = ""):
    """`(dotted key, value)` for every value of a config, those in nested dicts and sequences included."""
    items = tree.items() if isinstance(tree, (dict, ml_collections.ConfigDict)) else enumerate(tree)
    for key, value in items:
        if isinstance(value, (dict, ml_collections.ConfigDict, list, tuple)):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Checks every key's type and range; ValueError naming `config.KEY` and the value."""
    missing = sorted(set(default_config()) - set(config))
    if missing:
        raise ValueError(f"config is missing keys {', '.join(missing)}; start from default_config()")
    unknown = sorted(set(config) - set(default_config()))
    if unknown:
        raise ValueError(f"config has unknown keys {', '.join(unknown)}")
    for key, value in _leaves(config):  # NaN passes every range check below (all comparisons are False)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"config.{key} must be a finite number, got {value!r}")
    _choice(config, "parallel", PARALLEL_MODES)
    _choice(config, "optimizer", OPTIMIZERS)
    _choice(config, "schedule", SCHEDULES)
    _choice(config, "dtype", ("float32", "bfloat16", "float16"))
    for key in (
        "batch_size",
        "eval_batch_size",
        "log_every",
        "checkpoint_every",
        "checkpoints_to_keep",
        "ensemble_size",
    ):
        _at_least(config, key, 1)
    for key in (
        "num_epochs",
        "num_steps",
        "train_examples",
        "test_examples",
        "eval_every",
        "warmup_steps",
        "seed",
        "skip_nonfinite_steps",
    ):
        _at_least(config, key, 0)
    if config.num_epochs == 0 and config.num_steps == 0:
        raise ValueError("config.num_epochs or config.num_steps must be > 0")
    _at_least(config, "learning_rate", 0.0, float)
    _at_least(config, "weight_decay", 0.0, float)
    if not 0.0 <= config.momentum < 1.0:
        raise ValueError(f"config.momentum must be in [0, 1), got {config.momentum!r}")
    _at_least(config, "augment_crop_padding", 0)
    _at_least(config, "eval_shift", 0)
    for key in ("augment_flip", "eval_flip"):
        if not isinstance(config[key], bool):
            raise ValueError(f"config.{key} must be True or False, got {config[key]!r}")
    if not 0.0 <= config.augment_erase_probability <= 1.0:
        raise ValueError(
            f"config.augment_erase_probability must be in [0, 1], got {config.augment_erase_probability!r}"
        )
    if not 0.0 <= config.ema_decay < 1.0:
        raise ValueError(f"config.ema_decay must be in [0, 1) (0 = off), got {config.ema_decay!r}")
    if not 0.0 <= config.label_smoothing < 1.0:
        raise ValueError(f"config.label_smoothing must be in [0, 1), got {config.label_smoothing!r}")
    _at_least(config, "dp_clip_norm", 0.0, float)
    _at_least(config, "dp_noise_multiplier", 0.0, float)
    if config.dp_clip_norm:
        if config.parallel != "none":
            # pmap: each device would add its own noise. data: XLA's partitioner (jax 0.10, CPU) returns
            # wrong per-example kernel gradients of a convolution when the batch is sharded.
            raise ValueError(
                f'config.dp_clip_norm > 0 (DP-SGD) needs config.parallel "none", got {config.parallel!r}'
            )
        if config.ensemble_size > 1:
            raise ValueError("config.dp_clip_norm > 0 (DP-SGD) needs config.ensemble_size 1")
    elif config.dp_noise_multiplier:
        raise ValueError(
            "config.dp_noise_multiplier > 0 needs config.dp_clip_norm > 0 (the noise std is relative to it)"
        )
