"""Input-pipeline overhead: the training loop (batches from the Grain pipeline, transfer, logging) against
the bare compiled step on one batch already on the device, in paired rounds.

    python experiments/data_benchmark.py                                   # lenet5, Fashion-MNIST in memory
    python experiments/make_folder_dataset.py /tmp/fashion_png --size 64 --per_class 100
    python experiments/data_benchmark.py --dataset folder --data_dir /tmp/fashion_png --workers 2

Each round times `--steps` bare steps, then `--steps` steps of the loop (as `training.train` runs them,
evaluation and checkpoints aside); the ratio loop / bare is printed per round with the median. The first
steps (compilation, starting the workers) are not timed.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import jax

import jaxcnn
from jaxcnn.training import build_run, default_config


def loop_steps(run, steps: int) -> float:
    """Seconds for `steps` steps of the training loop's body, batches from the pipeline included."""
    started = time.perf_counter()
    for _ in range(steps):
        run.state, run.metric_sums = run.train_fn(run.state, run.metric_sums, next(run.batches))
        run.step += 1
        for action in run.actions:
            action(run)
    jax.block_until_ready(run.state)
    return time.perf_counter() - started


def bare_steps(run, batch, steps: int) -> float:
    """Seconds for `steps` compiled steps on one batch already on the device (the step donates the state:
    the run goes on from the one these steps leave)."""
    started = time.perf_counter()
    for _ in range(steps):
        run.state, run.metric_sums = run.train_fn(run.state, run.metric_sums, batch)
    jax.block_until_ready(run.state)
    return time.perf_counter() - started


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="lenet5")
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--data_dir", default="", help="config.data.dir (the folder for --dataset folder)")
    parser.add_argument("--workers", type=int, default=0, help="config.data.workers")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=50, help="steps per timing")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    jaxcnn.configure_cpu()
    config = default_config()
    config.update_from_flattened_dict(
        {"model": args.model, "dataset": args.dataset, "batch_size": args.batch_size,
         "num_steps": args.steps * (args.rounds + 1) + 1, "log_every": args.steps,
         "checkpoint_every": 10**9, "eval.every": 10**9, "data.dir": args.data_dir,
         "data.workers": args.workers}
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as workdir:
        run = build_run(config, workdir, handle_signals=False)
        run.actions = [action for action in run.actions if type(action).__name__ == "LogMetrics"]
        try:
            batch = next(run.batches)
            bare_steps(run, batch, 2)
            loop_steps(run, args.steps)  # warm: compiled, workers started, pipeline full
            ratios = []
            for round_index in range(args.rounds):
                bare, loop = bare_steps(run, batch, args.steps), loop_steps(run, args.steps)
                ratios.append(bare / loop)
                print(
                    f"round {round_index}: bare {args.steps * args.batch_size / bare:,.0f} examples/s, "
                    f"loop {args.steps * args.batch_size / loop:,.0f} examples/s, loop/bare {ratios[-1]:.1%}"
                )
        finally:
            run.close()
    print(
        f"{args.model} on {args.dataset} (workers {args.workers}): loop at {statistics.median(ratios):.1%} "
        f"of the bare step's throughput (median of {args.rounds} rounds; min {min(ratios):.1%}, "
        f"max {max(ratios):.1%})"
    )


if __name__ == "__main__":
    main()
