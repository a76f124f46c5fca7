"""Training speed of K models in one vmapped step against K separate single-model steps.

    python experiments/ensemble_speed.py [--model lenet5 --members 8 --batch_size 128 --steps 30]

Both sides train the same K models (seeds 0..K-1) on the same random 28x28x1 batches with
SGD + momentum; "separate" runs one jitted single-model step per member, one after another (what
K independent runs on one device do, minus their process overhead). Prints model-examples per
second (K x batch per step) after a warm-up step: the best of `--repeats` alternating timings.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np
import optax

import jaxcnn
from jaxcnn.training import (
    create_ensemble_state,
    create_model,
    create_train_state,
    ensemble_train_step,
    train_step,
)

SHAPE = (28, 28, 1)


def _batch(batch_size: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "image": jax.device_put(rng.standard_normal((batch_size, *SHAPE)).astype(np.float32)),
        "label": jax.device_put(rng.integers(0, 10, batch_size).astype(np.int32)),
        "mask": jax.device_put(np.ones(batch_size, np.float32)),
    }


def _best_seconds(runs: dict, steps: int, repeats: int) -> dict[str, float]:
    """Best time of `steps` steps for each run; the runs alternate, so a busy machine slows both alike."""
    for run in runs.values():
        run(1)  # compile and warm up
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run(steps)
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def measure(model_name: str, members: int, batch_size: int, steps: int, repeats: int) -> dict[str, float]:
    """Model-examples per second of the vmapped ensemble and of separate steps."""
    model = lambda seed: create_model(model_name, 10, SHAPE, seed)  # the NNX model, as train.py trains it
    tx, batch = optax.sgd(0.01, momentum=0.9), _batch(batch_size)
    vmapped_step = jax.jit(ensemble_train_step, donate_argnums=0)
    single_step = jax.jit(train_step, donate_argnums=0)
    ensemble = [create_ensemble_state(model, tx, SHAPE, range(members))]
    separate = [create_train_state(model(seed), tx, SHAPE, seed) for seed in range(members)]

    def run_vmapped(n):
        for _ in range(n):
            ensemble[0], metrics = vmapped_step(ensemble[0], batch)
        jax.block_until_ready(metrics)

    def run_separate(n):
        for _ in range(n):
            for i in range(members):
                separate[i], metrics = single_step(separate[i], batch)
        jax.block_until_ready(metrics)

    seconds = _best_seconds({"vmapped": run_vmapped, "separate": run_separate}, steps, repeats)
    return {name: steps * members * batch_size / t for name, t in seconds.items()}


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--model", default="lenet5")
    parser.add_argument("--members", type=int, default=8)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    jaxcnn.configure_cpu()
    speed = measure(args.model, args.members, args.batch_size, args.steps, args.repeats)
    device = jax.devices()[0]
    print(f"{args.members} x {args.model}, batch {args.batch_size}, on {device.device_kind}:")
    print(f"  one vmapped step:        {speed['vmapped']:10,.0f} model-examples/s")
    print(f"  {args.members} separate steps:       {speed['separate']:10,.0f} model-examples/s")
    print(f"  speed-up:                {speed['vmapped'] / speed['separate']:10.2f}x")


if __name__ == "__main__":
    main()
