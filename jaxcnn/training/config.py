"""The experiment configuration: every key, with its default, its check and what it means.

DESIGN's keys sit at the top level (`model`, `dataset`, `batch_size`, `num_epochs`, ...). Every other key
belongs to a section read by the one component that owns it, whose dataclass holds the section's
defaults, checks and documentation:

| section       | class                                  | what it is for                                    |
| ---           | ---                                    | ---                                               |
| `compute`     | `training.model.ComputeSettings`       | compute dtype (mixed precision), conv lowering    |
| `data`        | `data.DataSettings`                    | where datasets are read from, image folders       |
| `optim`       | `training.optim.OptimizerSettings`     | momentum, weight decay, schedule, accumulation    |
| `loss`        | `training.steps.LossSettings`          | label smoothing                                   |
| `augment`     | `data.Augmentation`                    | random crops, flips, erasing, Mixup, CutMix       |
| `ema`         | `training.state.EMASettings`           | a moving average of the weights                   |
| `eval`        | `training.evaluation.EvalSettings`     | when to evaluate, test-time views                 |
| `dp`          | `training.per_example.DPSettings`      | DP-SGD                                            |
| `ensemble`    | `training.ensemble.EnsembleSettings`   | vmapped ensembles                                 |
| `checkpoints` | `training.checkpoint.CheckpointSettings` | how many checkpoints are kept                   |
| `profile`     | `training.profiling.ProfileSettings`   | a `jax.profiler` trace of a few steps             |
| `finetune`    | `training.finetune.FinetuneSettings`   | start from trained weights, freeze some of them   |

`jaxcnn.training.build_run` is the only code that reads a config: it hands each section to its owner.
Keys marked resumable may change between the segments of one run (they change what is logged, kept or
how long it goes on, not what it computes); `num_epochs` and `num_steps` may grow to extend a run.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Callable
from typing import Any

import ml_collections

from jaxcnn import data, models
from jaxcnn._validate import Settings, boolean, choice, integer, number
from jaxcnn.parallel import STRATEGIES
from jaxcnn.training.checkpoint import CheckpointSettings
from jaxcnn.training.ensemble import EnsembleSettings
from jaxcnn.training.evaluation import EvalSettings
from jaxcnn.training.finetune import FinetuneSettings
from jaxcnn.training.model import ComputeSettings
from jaxcnn.training.optim import OPTIMIZERS, OptimizerSettings
from jaxcnn.training.per_example import DPSettings
from jaxcnn.training.profiling import ProfileSettings
from jaxcnn.training.state import EMASettings
from jaxcnn.training.steps import LossSettings


@dataclasses.dataclass(frozen=True)
class Key:
    """A top-level key: its default, its check `check(value, "config.name")`, what it means, and whether
    it may change when a run is resumed."""

    default: Any
    check: Callable[[Any, str], Any]
    doc: str
    resumable: bool = False


def _count(minimum: int) -> Callable[[Any, str], int]:
    return lambda value, name: integer(value, name, minimum=minimum)


def _mapping(value, name: str):
    if not isinstance(value, (dict, ml_collections.ConfigDict)):
        raise TypeError(f"{name} must be a mapping of keyword arguments, got {value!r}")
    return value


STEPS_PER_CALL_ON_ACCELERATORS = 8  # config.steps_per_call 0 off the CPU


def steps_per_call(value: int, backend: str) -> int:
    """`config.steps_per_call` on `backend` (`jax.default_backend()`), 0 resolved by backend (see its doc)."""
    if value:
        return value
    return 1 if backend == "cpu" else STEPS_PER_CALL_ON_ACCELERATORS


MAX_SEED = 2**32 - 1  # a seed fits the uint32 that random generators take (JAX's keys overflow at 2**63)

KEYS: dict[str, Key] = {
    "model": Key(
        "lenet5", lambda v, n: choice(v, n, models.available()), "a name of jaxcnn.models.available()"
    ),
    "model_kwargs": Key({}, _mapping, "extra keyword arguments of the model (models.create_nnx)"),
    "dataset": Key(
        "fashion_mnist", lambda v, n: choice(v, n, data.available()), "a name of data.available()"
    ),
    "train_examples": Key(0, _count(0), "the first this many training examples; 0 = all"),
    "test_examples": Key(0, _count(0), "the first this many test examples; 0 = all"),
    "batch_size": Key(128, _count(1), "the global batch: over all devices and processes"),
    "num_epochs": Key(2, _count(0), "the run's length in epochs (rounded down to whole batches)", True),
    "num_steps": Key(0, _count(0), "> 0: the run's length in steps, overriding num_epochs", True),
    "optimizer": Key("momentum", lambda v, n: choice(v, n, OPTIMIZERS.names()), "a name of optim.OPTIMIZERS"),
    "learning_rate": Key(0.05, lambda v, n: number(v, n, minimum=0.0), "the peak of the schedule"),
    "seed": Key(
        0,
        lambda v, n: integer(v, n, minimum=0, maximum=MAX_SEED),
        "initialisation, dropout, batch order and augmentation all derive from it",
    ),
    "log_every": Key(100, _count(1), "steps between lines of training metrics", True),
    "steps_per_call": Key(
        0,
        _count(0),
        "optimizer steps per compiled call (lax.scan over a call's batches, bit-identical to one at a time; "
        "logs, evaluations, checkpoints and signals act between calls, their intervals rounded up to "
        "multiples of it); 0 = by backend: 1 on a CPU, where the host's time per step hides in the step's, "
        f"{STEPS_PER_CALL_ON_ACCELERATORS} on a GPU or TPU, whose sub-millisecond steps the host would stall",
        True,
    ),
    "checkpoint_every": Key(500, _count(1), "steps between checkpoints (and one at the end)", True),
    "parallel": Key(
        "none", lambda v, n: choice(v, n, STRATEGIES.names()), "a name of parallel.STRATEGIES", False
    ),
    "overwrite": Key(False, boolean, "True: a workdir holding another config's run discards that run", True),
}

SECTIONS: dict[str, type[Settings]] = {
    "compute": ComputeSettings,
    "data": data.DataSettings,
    "optim": OptimizerSettings,
    "loss": LossSettings,
    "augment": data.Augmentation,
    "ema": EMASettings,
    "eval": EvalSettings,
    "dp": DPSettings,
    "ensemble": EnsembleSettings,
    "checkpoints": CheckpointSettings,
    "profile": ProfileSettings,
    "finetune": FinetuneSettings,
}

# Keys of jaxcnn 0.1 that moved into a section: an old config or command line is told where each went.
MOVED: dict[str, str] = {
    "schedule": "optim.schedule",
    "warmup_steps": "optim.warmup_steps",
    "weight_decay": "optim.weight_decay",
    "momentum": "optim.momentum",
    "label_smoothing": "loss.label_smoothing",
    "augment_crop_padding": "augment.crop_padding",
    "augment_flip": "augment.flip",
    "augment_erase_probability": "augment.erase_probability",
    "eval_flip": "eval.flip",
    "eval_shift": "eval.shift",
    "eval_every": "eval.every",
    "ema_decay": "ema.decay",
    "skip_nonfinite_steps": "optim.skip_nonfinite_steps",
    "checkpoints_to_keep": "checkpoints.keep",
    "ensemble_size": "ensemble.size",
    "dp_clip_norm": "dp.clip_norm",
    "dp_noise_multiplier": "dp.noise_multiplier",
    "eval_batch_size": "eval.batch_size",
    "data_dir": "data.dir",
    "data_source": "data.source",
    "dtype": "compute.dtype",
}


def default_config() -> ml_collections.ConfigDict:
    """All keys `experiments/train.py` understands, with their defaults; config files override some.

    The dict is locked: setting a key that does not exist (a typo) is an error.
    """
    config = ml_collections.ConfigDict()
    for name, key in KEYS.items():
        config[name] = (
            ml_collections.ConfigDict(key.default) if isinstance(key.default, dict) else key.default
        )
    for name, settings in SECTIONS.items():
        config[name] = ml_collections.ConfigDict(dataclasses.asdict(settings()))
    return config.lock()


def resumable_keys() -> set[str]:
    """The keys (dotted for sections, e.g. "eval.every") that may change when a run is resumed."""
    top = {name for name, key in KEYS.items() if key.resumable}
    return top | {f"{name}.{field}" for name, settings in SECTIONS.items() for field in settings.resumable()}


def _leaves(tree, prefix: str = ""):
    """`(dotted key, value)` for every value of a config, those in nested dicts and sequences included."""
    items = tree.items() if isinstance(tree, (dict, ml_collections.ConfigDict)) else enumerate(tree)
    for key, value in items:
        if isinstance(value, (dict, ml_collections.ConfigDict, list, tuple)):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def read_sections(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Each section of `config` as its owner's settings object: `{"optim": OptimizerSettings(...), ...}`."""
    return {name: settings.from_config(config[name], name) for name, settings in SECTIONS.items()}


def unknown_key(key: str) -> str:
    """`config.KEY` for a dotted key the config lacks, with its new name if it is one of jaxcnn 0.1 that
    moved, else the existing key it is closest to, if one is close (a typo)."""
    if key in MOVED:
        return f"config.{key} (now config.{MOVED[key]})"
    if key.split(".")[0] == "model_kwargs":  # the model's own arguments: any name may be meant
        return f"config.{key}"
    known = [name for name, _ in _leaves(default_config())]
    close = difflib.get_close_matches(key, known, n=1)
    return f"config.{key}" + (f" (did you mean config.{close[0]}?)" if close else "")


def validate_config(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Checks every key's type and range and the keys that constrain each other; a ValueError or
    TypeError naming `config.KEY` and the value. Returns the sections it read (`read_sections`)."""
    expected = set(KEYS) | set(SECTIONS)
    missing, unknown = sorted(expected - set(config)), sorted(set(config) - expected)
    if unknown:
        raise ValueError(f"config has unknown keys {', '.join(map(unknown_key, unknown))}")
    if missing:
        raise ValueError(f"config is missing keys {', '.join(missing)}; start from default_config()")
    for key, value in _leaves(config):  # model_kwargs too: NaN passes every range check (comparisons fail)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"config.{key} must be a finite number, got {value!r}")
    for name, key in KEYS.items():
        key.check(config[name], f"config.{name}")
    sections = read_sections(config)
    if config.num_epochs == 0 and config.num_steps == 0:
        raise ValueError("config.num_epochs or config.num_steps must be > 0")
    if sections["augment"].mixes and (sections["dp"].enabled or config.parallel == "pmap"):
        # DP-SGD's per-example loss has one label; under pmap each device would mix only its own share.
        raise ValueError(
            "config.augment.mixup_alpha / cutmix_alpha (Mixup, CutMix) need config.dp.clip_norm 0 and "
            f'config.parallel "none" or "data", got {sections["dp"].clip_norm} and {config.parallel!r}'
        )
    if sections["dp"].enabled:
        if config.parallel != "none":
            # pmap: each device would add its own noise. data: XLA's partitioner (jax 0.10, CPU) returns
            # wrong per-example kernel gradients of a convolution when the batch is sharded.
            raise ValueError(
                f'config.dp.clip_norm > 0 (DP-SGD) needs config.parallel "none", got {config.parallel!r}'
            )
        if sections["ensemble"].size > 1:
            raise ValueError("config.dp.clip_norm > 0 (DP-SGD) needs config.ensemble.size 1")
    if sections["finetune"].init_from or sections["finetune"].freeze:
        if sections["ensemble"].size > 1:
            raise ValueError("config.finetune needs config.ensemble.size 1 (ensembles start from seeds)")
        if not models.is_nnx(config.model):
            raise ValueError(f"config.finetune needs a zoo model (NNX), not {config.model!r}")
    return sections
