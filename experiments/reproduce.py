"""Runs configs with several seeds and writes the results table (`experiments/results.md`).

    python experiments/reproduce.py --configs lenet5,compact --seeds 0,1,2 --workdir runs/reproduce
    python experiments/reproduce.py --configs best --seeds 0 --workdir runs/reproduce

Each run lives in `WORKDIR/CONFIG/seed_S` and is an ordinary `experiments/train.py` run: an interrupted
reproduction resumes where it stopped, and finished runs are only re-read. `--set KEY=VALUE` overrides a
config key in every run (e.g. `--set num_epochs=1` for a smoke test; the table records it).
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import logging
import statistics
import sys
from pathlib import Path

import jaxcnn
from jaxcnn import data, models, training

ROOT = Path(__file__).resolve().parent
PUBLISHED = (  # Fashion-MNIST's own benchmark table (github.com/zalandoresearch/fashion-mnist)
    "Published Fashion-MNIST results for comparison: MLP 88.3%; 2 conv layers under 100k parameters 92.5%; "
    "2 conv + 3 FC 93.4%; ResNet-18 94.9%; DenseNet-BC 95.4%; WRN-40-4 96.7%."
)


def load_config(name: str, overrides: dict):
    """`get_config()` of `experiments/configs/NAME.py` with `overrides` applied."""
    path = ROOT / "configs" / f"{name}.py"
    if not path.is_file():
        available = sorted(p.stem for p in (ROOT / "configs").glob("*.py"))
        raise ValueError(f"config {name!r} not found in {path.parent}; available: {', '.join(available)}")
    spec = importlib.util.spec_from_file_location(f"configs.{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    config.update_from_flattened_dict(overrides)  # dotted keys reach sections: "optim.weight_decay"
    return config


def parse_override(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"--set takes KEY=VALUE, got {text!r}")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value  # a plain string such as an optimizer name


def parameter_count(config, dataset: data.ArrayDataset) -> int:
    model = models.create(config.model, num_classes=dataset.num_classes, **config.model_kwargs)
    return jaxcnn.summary(model, dataset.image_shape).total_params


def _finished(run_dir: Path, config) -> bool:
    """Whether `run_dir` holds a finished run of exactly `config` (result.json is written last)."""
    recorded = run_dir / "config.json"
    return (run_dir / "result.json").is_file() and json.loads(recorded.read_text()) == json.loads(
        config.to_json()
    )


def run_config(name: str, seeds: list[int], workdir: Path, overrides: dict) -> dict:
    results = []
    for seed in seeds:
        config = load_config(name, {**overrides, "seed": seed})
        run_dir = workdir / name / f"seed_{seed}"
        if _finished(run_dir, config):
            print(f"{name} seed {seed}: done before, read from {run_dir / 'result.json'}")
        else:
            print(training.train_and_evaluate(config, run_dir).describe())
        results.append(json.loads((run_dir / "result.json").read_text()))
    train_split = data.load(config.dataset, "train", num_examples=1, data_dir=config.data.dir or None)
    settings = "".join(f" --config.{k}={v}" for k, v in overrides.items())
    row = {
        "config": name,
        "model": config.model,
        "dataset": config.dataset,
        "parameters": parameter_count(config, train_split),
        "epochs": results[0]["epochs"],
        "command": f"python experiments/train.py --config experiments/configs/{name}.py --workdir runs/{name}"
        + settings,
    }
    per_seed = {
        # an ensemble's score is its averaged logits' accuracy (its members' mean is in result.json)
        str(seed): {
            "accuracy": 100 * (r.get("ensemble_test_accuracy") or r["test_accuracy"]),
            "minutes": r["seconds"] / 60,
        }
        for seed, r in zip(seeds, results, strict=True)
    }
    return summarized(row, per_seed)


def summarized(row: dict, per_seed: dict) -> dict:
    """`row` with its per-seed results and their summary: seeds, accuracy mean and std, mean minutes."""
    seeds = sorted(per_seed, key=int)
    accuracies = [per_seed[s]["accuracy"] for s in seeds]
    return {
        **row,
        "seeds": [int(s) for s in seeds],
        "accuracy_mean": statistics.mean(accuracies),
        "accuracy_std": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
        "minutes_mean": statistics.mean(per_seed[s]["minutes"] for s in seeds),
        "per_seed": {s: per_seed[s] for s in seeds},
    }


def merged(old: dict | None, new: dict) -> dict:
    """`new`'s seeds added to (or replacing the same seeds of) an earlier row of the same config and
    command. An earlier row without per-seed results can only be read back if it has one seed."""
    earlier = {}
    if old is not None:
        earlier = old.get("per_seed") or (
            {str(old["seeds"][0]): {"accuracy": old["accuracy_mean"], "minutes": old["minutes_mean"]}}
            if len(old["seeds"]) == 1
            else {}
        )
    return summarized(new, {**earlier, **new["per_seed"]})


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes}m {seconds:02d}s"


def markdown(rows: list[dict]) -> str:
    lines = [
        "| config | model | dataset | parameters | epochs | test accuracy (mean ± std) | seeds | time |",
        "| --- | --- | --- | ---: | ---: | ---: | --- | ---: |",
    ]
    for r in rows:
        accuracy = (
            f"{r['accuracy_mean']:.2f}% ± {r['accuracy_std']:.2f}"
            if len(r["seeds"]) > 1
            else (f"{r['accuracy_mean']:.2f}%")
        )
        seeds = ",".join(map(str, r["seeds"]))
        lines.append(
            f"| `{r['config']}` | `{r['model']}` | {r['dataset']} | {r['parameters']:,} | {r['epochs']:g} | "
            f"{accuracy} | {seeds} | {_duration(60 * r['minutes_mean'])} |"
        )
    lines += ["", "Commands (add `--config.seed=S` for the other seeds):", ""]
    lines += [f"- `{r['config']}`: `{r['command']}`" for r in rows]
    return "\n".join(lines) + "\n"


def write_results(rows: dict, out: Path) -> str:
    """Writes the table of `rows` to `out` and the rows to the JSON file beside it; returns the table."""
    ordered = sorted(rows.values(), key=lambda r: (r["config"], r["command"]))
    store = out.with_suffix(".json")
    store.write_text(json.dumps(ordered, indent=2) + "\n")
    header = (
        "# Reproduced results\n\nWritten by `python experiments/reproduce.py --configs NAMES --seeds SEEDS` "
        f"on 2 CPU cores; each invocation adds its seeds to the rows of its configs (kept in {store.name})."
    )
    table = markdown(ordered)
    out.write_text(f"{header}\n\n{table}\n{PUBLISHED}\n")
    return table


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--configs", default="lenet5,compact", help="comma-separated config names")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    parser.add_argument("--workdir", default="runs/reproduce", type=Path)
    parser.add_argument("--set", action="append", default=[], type=parse_override, metavar="KEY=VALUE")
    parser.add_argument("--out", default=ROOT / "results.md", type=Path, help="the markdown table to write")
    args = parser.parse_args(argv)
    jaxcnn.configure_cpu()
    # Progress lines from the loop (it logs at INFO when there is no terminal for a progress bar).
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", force=True)  # absl set one up
    logging.getLogger("absl").setLevel(logging.WARNING)  # Orbax's per-checkpoint chatter
    seeds = [int(s) for s in args.seeds.split(",")]
    overrides = dict(args.set)
    names = args.configs.split(",")
    for name in names:  # a typo in the last config or override is reported now, not after hours of the first
        try:
            load_config(name, overrides)
        except (ValueError, KeyError, TypeError) as error:
            parser.error(str(error.args[0]))  # a KeyError's str() would quote the message
    # Rows accumulate over invocations (one per config and overrides) in a JSON file beside the table.
    store = args.out.with_suffix(".json")
    rows = {
        (r["config"], r["command"]): r for r in (json.loads(store.read_text()) if store.is_file() else [])
    }
    try:
        for name in names:
            row = run_config(name, seeds, args.workdir, overrides)
            key = row["config"], row["command"]
            rows[key] = merged(rows.get(key), row)
            # Written after each config, so that an interrupted invocation keeps the rows it finished.
            table = write_results(rows, args.out)
    except training.TrainingInterrupted as stop:  # the checkpoint is saved; the message says how to resume
        print(stop, file=sys.stderr)
        sys.exit(128 + stop.signum)
    print(table)
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
