"""Optimizers and learning-rate schedules, all from optax, each kind in one registry.

    tx = create_optimizer("nesterov", 0.05, total_steps=3744, settings=OptimizerSettings(schedule="cosine"))

`OPTIMIZERS` and `SCHEDULES` hold the names `config.optimizer` and `config.optim.schedule` accept. Register
your own with `OPTIMIZERS.register("name")` on `fn(learning_rate, settings) -> optax.GradientTransformation`,
or `SCHEDULES.register("name")` on `fn(peak_value, total_steps, settings) -> optax.Schedule`.
"""

from __future__ import annotations

import dataclasses
import logging

import jax
import optax

from jaxcnn._registry import Registry
from jaxcnn._validate import Settings, choice, integer, number

OPTIMIZERS: Registry = Registry("optimizer")
SCHEDULES: Registry = Registry("schedule")


def _kernels(params):
    """True at the leaves of `params` with more than one axis (convolution and dense kernels).

    Axes of one model's parameter: an ensemble's members are initialised one by one and updated under
    `vmap`, so no member axis shows; `optax.MaskedNode`s (frozen parameters) hold no leaves."""
    return jax.tree.map(lambda leaf: leaf.ndim > 1, params)


# `optim.weight_decay_on` -> the mask of the parameters that decay (optax's `mask`; None: every one).
WEIGHT_DECAY_MASKS = {"all": None, "kernels": _kernels}


@dataclasses.dataclass(frozen=True)
class OptimizerSettings(Settings):
    """`config.optim`: everything about the updates but the optimizer's name and peak learning rate
    (`config.optimizer`, `config.learning_rate`).

    Attributes:
      momentum: of "momentum", "nesterov" and "lars" (adam's and lamb's b1 are left at optax's default).
      weight_decay: decoupled for "adamw" and "lamb" (added to the update after Adam's scaling); an L2
        term added to the gradient (PyTorch's `weight_decay`) for the others ("lars": before its trust
        ratio, as optax's).
      weight_decay_on: which parameters decay, a name of `WEIGHT_DECAY_MASKS`: "all", or "kernels": only
        those with more than one axis, the kernels of convolutions and dense layers, so no bias and no
        BatchNorm/LayerNorm scale or bias (nor ConvNeXt's layer scales) decays, as Flax's ImageNet example
        and timm exclude them. The same for every optimizer; "lars" does not adapt the excluded
        parameters by its trust ratio either (as timm's and MLPerf's LARS), "lamb" adapts every one.
      trust_coefficient: of "lars": each parameter's learning rate is scaled by `trust_coefficient *
        ||w|| / ||g + weight_decay * w||` (You et al., 2017; optax's default 0.001).
      schedule: a name of `SCHEDULES`: "constant", "cosine" (to 0 at the last step) or "warmup_cosine"
        (linear warm-up from 0 over `warmup_steps`, then cosine to 0).
      warmup_steps: of "warmup_cosine". A run shorter than its warm-up gets a tenth of its length instead
        (logged), so that any config runs for a few steps.
      accumulate_steps: gradients of this many consecutive batches are averaged into one update
        (`optax.MultiSteps`): an effective batch of `accumulate_steps * batch_size`. The schedule counts
        updates, not batches.
      skip_nonfinite_steps: > 0 skips (does not apply) updates from non-finite gradients, up to this many
        in a row (`optax.apply_if_finite`); 0 stops the run at the first non-finite loss.
    """

    momentum: float = 0.9
    weight_decay: float = 0.0
    weight_decay_on: str = "all"
    trust_coefficient: float = 0.001
    schedule: str = "constant"
    warmup_steps: int = 0
    accumulate_steps: int = 1
    skip_nonfinite_steps: int = 0

    def __post_init__(self):
        number(self.momentum, "momentum", minimum=0.0, below=1.0)
        number(self.weight_decay, "weight_decay", minimum=0.0)
        choice(self.weight_decay_on, "weight_decay_on", WEIGHT_DECAY_MASKS)
        number(self.trust_coefficient, "trust_coefficient", minimum=0.0)
        choice(self.schedule, "schedule", SCHEDULES.names())
        integer(self.warmup_steps, "warmup_steps", minimum=0)
        integer(self.accumulate_steps, "accumulate_steps", minimum=1)
        integer(self.skip_nonfinite_steps, "skip_nonfinite_steps", minimum=0)


@SCHEDULES.register("constant")
def constant(peak_value: float, total_steps: int, settings: OptimizerSettings) -> optax.Schedule:
    return optax.constant_schedule(peak_value)


@SCHEDULES.register("cosine")
def cosine(peak_value: float, total_steps: int, settings: OptimizerSettings) -> optax.Schedule:
    return optax.cosine_decay_schedule(peak_value, decay_steps=max(total_steps, 1))


@SCHEDULES.register("warmup_cosine")
def warmup_cosine(peak_value: float, total_steps: int, settings: OptimizerSettings) -> optax.Schedule:
    warmup = settings.warmup_steps
    if warmup >= total_steps:
        warmup = total_steps // 10
        logging.warning(
            "config.optim.warmup_steps (%d) is not below the run's %d updates: warming up over %d instead",
            settings.warmup_steps,
            total_steps,
            warmup,
        )
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=peak_value, warmup_steps=warmup, decay_steps=max(total_steps, 1)
    )


def create_learning_rate_schedule(
    learning_rate: float, total_steps: int, settings: OptimizerSettings = OptimizerSettings()
) -> optax.Schedule:
    """The learning rate at each update of a run of `total_steps` updates, peaking at `learning_rate`."""
    return SCHEDULES.get(settings.schedule)(learning_rate, total_steps, settings)


def _decay_mask(settings: OptimizerSettings):
    return WEIGHT_DECAY_MASKS[settings.weight_decay_on]


def _with_weight_decay(base: optax.GradientTransformation, settings: OptimizerSettings):
    if settings.weight_decay:
        decay = optax.add_decayed_weights(settings.weight_decay, mask=_decay_mask(settings))
        return optax.chain(decay, base)
    return base


@OPTIMIZERS.register("sgd")
def sgd(learning_rate: optax.Schedule, settings: OptimizerSettings) -> optax.GradientTransformation:
    return _with_weight_decay(optax.sgd(learning_rate), settings)


@OPTIMIZERS.register("momentum")
def momentum(learning_rate: optax.Schedule, settings: OptimizerSettings) -> optax.GradientTransformation:
    return _with_weight_decay(optax.sgd(learning_rate, momentum=settings.momentum), settings)


@OPTIMIZERS.register("nesterov")
def nesterov(learning_rate: optax.Schedule, settings: OptimizerSettings) -> optax.GradientTransformation:
    return _with_weight_decay(optax.sgd(learning_rate, momentum=settings.momentum, nesterov=True), settings)


@OPTIMIZERS.register("adam")
def adam(learning_rate: optax.Schedule, settings: OptimizerSettings) -> optax.GradientTransformation:
    return _with_weight_decay(optax.adam(learning_rate), settings)


@OPTIMIZERS.register("adamw")
def adamw(learning_rate: optax.Schedule, settings: OptimizerSettings) -> optax.GradientTransformation:
    return optax.adamw(learning_rate, weight_decay=settings.weight_decay, mask=_decay_mask(settings))


@OPTIMIZERS.register("lars")
def lars(learning_rate: optax.Schedule, settings: OptimizerSettings) -> optax.GradientTransformation:
    mask = _decay_mask(settings) or True  # optax.lars takes True for every parameter, not None
    return optax.lars(
        learning_rate,
        weight_decay=settings.weight_decay,
        weight_decay_mask=mask,
        trust_coefficient=settings.trust_coefficient,
        trust_ratio_mask=mask,
        momentum=settings.momentum,
    )


@OPTIMIZERS.register("lamb")
def lamb(learning_rate: optax.Schedule, settings: OptimizerSettings) -> optax.GradientTransformation:
    return optax.lamb(learning_rate, weight_decay=settings.weight_decay, mask=_decay_mask(settings))


def create_optimizer(
    name: str,
    learning_rate: float,
    total_steps: int,
    settings: OptimizerSettings = OptimizerSettings(),
) -> optax.GradientTransformation:
    """The optimizer `name` (a name of `OPTIMIZERS`) for a run of `total_steps` batches.

    With `settings.accumulate_steps` k > 1 it is wrapped in `optax.MultiSteps` (one update every k
    batches, its schedule over `total_steps // k` updates); with `settings.skip_nonfinite_steps` in
    `optax.apply_if_finite`.
    """
    factory = OPTIMIZERS.get(name)
    number(learning_rate, "learning_rate", minimum=0.0)
    updates = max(integer(total_steps, "total_steps", minimum=0) // settings.accumulate_steps, 1)
    tx = factory(create_learning_rate_schedule(learning_rate, updates, settings), settings)
    if settings.skip_nonfinite_steps:
        tx = optax.apply_if_finite(tx, max_consecutive_errors=settings.skip_nonfinite_steps)
    if settings.accumulate_steps > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=settings.accumulate_steps)
    return tx
