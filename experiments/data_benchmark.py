"""Input-pipeline overhead: the training loop (batches from the Grain pipeline, transfer, logging) against
the bare compiled step on one batch already on the device, in paired rounds.

    python experiments/data_benchmark.py                                   # lenet5, Fashion-MNIST in memory
    python experiments/make_folder_dataset.py /tmp/fashion_png --size 64 --per_class 100
    python experiments/data_benchmark.py --dataset folder --data_dir /tmp/fashion_png --workers 2

Each round times `--steps` bare steps, `--steps` steps of the loop (as `training.train` runs them,
evaluation and checkpoints aside) and `--steps` bare steps again, in turn forwards and backwards so that a
host slowing down favours none. Printed: the medians over the rounds of loop / bare (the throughput ratio)
and of bare / bare again, a control that measures nothing but the host's noise: a loop ratio within the
control's spread is no overhead this host can show. With `--workers 0` the ratio of the process's CPU time
is printed too (the work the loop adds; time the host gives to others does not count), and the loop's CPU
time beyond the bare step's per optimizer step. The first steps (compilation, starting the workers) are
not timed. Last, the host's own time per optimizer step, isolated: the loop around a compiled step that
does nothing, at `--steps_per_call` 1 and 8 (the issue's goal: <= 50 us at 8):

    python experiments/data_benchmark.py --dataset synthetic --batch_size 8 --steps 96 --steps_per_call 8
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time

import jax

import jaxcnn
from jaxcnn.training import build_run, default_config
from jaxcnn.training.loop import call


def loop_steps(run, steps: int) -> None:
    """`steps` steps of the training loop's body (`training.loop.call`), the pipeline's batches included."""
    for _ in range(steps // run.spec.steps_per_call):
        call(run)


def host_microseconds_per_step(config, steps_per_call: int, steps: int, rounds: int) -> float:
    """The host's own time per optimizer step: the median over `rounds` of `steps` steps of the loop around
    a compiled step that does nothing (it returns the state), at `steps_per_call`; what a device whose
    step takes no time would wait for (the pipeline's batches, the calls, the actions between them)."""
    config = config.copy_and_resolve_references()
    config.steps_per_call, config.num_steps = steps_per_call, steps * (rounds + 1)
    with tempfile.TemporaryDirectory() as workdir:
        run = build_run(config, workdir, handle_signals=False)
        run.spec = dataclasses.replace(run.spec, train_fn=jax.jit(lambda state, sums, batches: (state, sums)))
        run.actions = [action for action in run.actions if type(action).__name__ == "LogMetrics"]
        try:
            loop_steps(run, steps)  # warm
            seconds = [timed(run, lambda: loop_steps(run, steps))[0] for _ in range(rounds)]
        finally:
            run.close()
    return 1e6 * statistics.median(seconds) / steps


def bare_steps(run, batch, steps: int) -> None:
    """`steps` compiled steps on one call's batches already on the device (the step donates the state: the
    run goes on from the one these steps leave)."""
    for _ in range(steps // run.spec.steps_per_call):
        run.state, run.metric_sums = run.spec.train_fn(run.state, run.metric_sums, batch)


def timed(run, steps_fn) -> tuple[float, float]:
    """(wall seconds, this process's CPU seconds) for `steps_fn()` and the steps it started."""
    wall, cpu = time.perf_counter(), time.process_time()
    steps_fn()
    jax.block_until_ready(run.state)
    return time.perf_counter() - wall, time.process_time() - cpu


def _paired(numerators, denominators) -> list[float]:
    return [n / d for n, d in zip(numerators, denominators, strict=True)]


def _spread(ratios: list[float]) -> str:
    low, _, high = statistics.quantiles(ratios, n=4)
    return f"{statistics.median(ratios):.1%} (quartiles {low:.1%}-{high:.1%})"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="lenet5")
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--data_dir", default="", help="config.data.dir (the folder for --dataset folder)")
    parser.add_argument("--workers", type=int, default=0, help="config.data.workers")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=25, help="steps per timing")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument(
        "--steps_per_call", type=int, default=1, help="config.steps_per_call (divides --steps)"
    )
    args = parser.parse_args(argv)
    if args.rounds < 2:
        parser.error("--rounds must be at least 2 (the spread needs them)")
    if args.steps_per_call < 1 or args.steps % args.steps_per_call:
        parser.error("--steps_per_call must be >= 1 and divide --steps")
    jaxcnn.configure_cpu()
    config = default_config()
    config.update_from_flattened_dict(
        {"model": args.model, "dataset": args.dataset, "batch_size": args.batch_size,
         "num_steps": args.steps * (args.rounds + 2), "log_every": args.steps,
         "checkpoint_every": 10**9, "eval.every": 10**9, "data.dir": args.data_dir,
         "data.workers": args.workers, "steps_per_call": args.steps_per_call}
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as workdir:
        run = build_run(config, workdir, handle_signals=False)
        run.actions = [action for action in run.actions if type(action).__name__ == "LogMetrics"]
        try:
            batch = jax.device_put(next(run.batches))  # a call's batches; on the CPU the loop's stay numpy
            bare_steps(run, batch, 2 * args.steps_per_call)
            loop_steps(run, args.steps)  # warm: compiled, workers started, pipeline full
            jax.block_until_ready(run.state)
            kinds = {
                "bare": lambda: bare_steps(run, batch, args.steps),
                "loop": lambda: loop_steps(run, args.steps),
                "bare again": lambda: bare_steps(run, batch, args.steps),
            }
            times = {kind: [] for kind in kinds}
            for round_index in range(args.rounds):
                for kind in list(kinds)[:: -1 if round_index % 2 else 1]:
                    times[kind].append(timed(run, kinds[kind]))
                wall = {kind: times[kind][-1][0] for kind in kinds}
                print(
                    f"round {round_index}: "
                    + ", ".join(f"{kind} {args.steps * args.batch_size / s:,.0f}" for kind, s in wall.items())
                    + f" examples/s; loop/bare {wall['bare'] / wall['loop']:.1%}"
                )
        finally:
            run.close()
    wall = {kind: [t[0] for t in timings] for kind, timings in times.items()}
    cpu = {kind: [t[1] for t in timings] for kind, timings in times.items()}
    print(
        f"{args.model} on {args.dataset} (workers {args.workers}), medians of {args.rounds} rounds: loop at "
        f"{_spread(_paired(wall['bare'], wall['loop']))} of the bare step's throughput; control, bare / bare "
        f"again: {_spread(_paired(wall['bare'], wall['bare again']))}"
    )
    if not args.workers:
        print(
            f"CPU time of the process, bare / loop: {_spread(_paired(cpu['bare'], cpu['loop']))}; "
            f"bare / bare again: {_spread(_paired(cpu['bare'], cpu['bare again']))}"
        )
        beyond = [
            (loop - bare) / args.steps * 1e6 for loop, bare in zip(cpu["loop"], cpu["bare"], strict=True)
        ]
        print(
            f"the loop's CPU time beyond the bare step's: {statistics.median(beyond):.0f} us per optimizer "
            f"step (median of {args.rounds} rounds; steps_per_call {args.steps_per_call})"
        )
    host = {
        k: host_microseconds_per_step(config, k, args.steps, args.rounds)
        for k in sorted({1, 8, args.steps_per_call})
    }
    print(
        "host time per optimizer step, the loop around a step that does nothing: "
        + ", ".join(f"{us:.0f} us at steps_per_call {k}" for k, us in host.items())
    )


if __name__ == "__main__":
    main()
