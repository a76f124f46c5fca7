"""Trains a model from a config file and reports its test accuracy.

    python experiments/train.py --config experiments/configs/lenet5.py --workdir runs/lenet5 \
        [--config.num_epochs=5 --config.batch_size=256 --config.augment.flip=True ...]

Running the same command again resumes from the newest checkpoint in the workdir, or reports the
result of a finished run; SIGTERM or Ctrl-C saves a checkpoint first. A larger `--config.num_epochs`
(or `num_steps`) on the same workdir extends the run. A second run in a workdir in
use is refused, as is a directory that holds files but no jaxcnn run. Errors of the flags, the config
or the workdir, a full disk, a data worker that died (after a checkpoint) and, in a process group, a peer
that died are one line
(JAXCNN_TRACEBACK=1 adds the traceback). Under a cluster's launcher (`srun`, `mpirun`, a Kubernetes
JobSet, a TPU pod) every process joins the job's group by itself (`--distributed=auto`, the default;
`off` runs one process); elsewhere, multi-process runs (one process per host, or several on one machine)
add `--coordinator_address HOST:PORT --num_processes N --process_id I`. The first log line says how the
group was formed.
"""

# ruff: noqa: E402 - the SIGINT handler is installed before the imports, which take seconds
import os
import signal


def _interrupted(signum, _frame):
    """Ends the process at once: an exception raised here may land in a callback that swallows it (one of
    JAX's garbage-collection hooks does), and the run would go on. What the run wrote stays consistent
    (checkpoints, config.json and result.json are replaced atomically; a rerun redoes the rest), and the
    workdir's lock dies with the process."""
    name = signal.Signals(signum).name
    os.write(2, f"{name}: stopped outside training; run the same command again to continue\n".encode())
    os._exit(128 + signum)


# Ctrl-C outside the training steps (importing, loading data, compiling; the final evaluation): one line,
# no KeyboardInterrupt traceback. While it trains, the loop's own handler saves a checkpoint first.
signal.signal(signal.SIGINT, _interrupted)

import logging
import re
import sys
import traceback
from typing import NoReturn

import jax
from absl import app, flags
from ml_collections import config_flags

import jaxcnn
import jaxcnn.data
import jaxcnn.parallel
import jaxcnn.training
import jaxcnn.visualize

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "A config file with get_config().", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for metrics, checkpoints and plots.")
_DISTRIBUTED = flags.DEFINE_enum(
    "distributed", "auto", jaxcnn.parallel.DISTRIBUTED_MODES,
    "auto: join the process group of the cluster environment JAX detects (SLURM, Open MPI, Kubernetes, "
    "TPU pods); off: one process. The coordinator flags below override both.",
)  # fmt: skip
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "HOST:PORT of process 0 (multi-process).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes (multi-process).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (multi-process).")
flags.mark_flags_as_required(["config", "workdir"])

# Failures that are the user's to fix: reported in one message, without a traceback.
_USER_ERRORS = (
    ValueError,
    TypeError,
    FloatingPointError,
    jaxcnn.training.WorkdirError,
    jaxcnn.training.CheckpointError,
    jaxcnn.training.DataWorkerError,
    jaxcnn.data.DataUnavailableError,
)


def _fail(error: BaseException, message: str) -> NoReturn:
    """Exits with `message` on one line, or raises `error` with its traceback if JAXCNN_TRACEBACK is set."""
    if os.environ.get("JAXCNN_TRACEBACK"):
        raise error
    print(f"error: {message}\n(set JAXCNN_TRACEBACK=1 for the traceback)", file=sys.stderr)
    sys.exit(1)


def _group_lost(error: BaseException) -> NoReturn:
    """A collective of a process group failed: a peer is gone (killed, its host lost). No checkpoint can be
    saved now (a save needs every process), and exiting the usual way would wait in
    `jax.distributed.shutdown` for the dead peer until its heartbeat times out, then abort in C++: so one
    line, and out at once (the workdir's lock goes with the process)."""
    if os.environ.get("JAXCNN_TRACEBACK"):
        traceback.print_exception(error)
    reason = str(error).strip().splitlines()[0]
    print(
        f"error: a collective of the process group failed ({reason}): another process has stopped; start "
        "the whole group again and it resumes from the newest checkpoint",
        file=sys.stderr,
        flush=True,
    )
    os._exit(1)


def _config_error(error: Exception) -> str:
    """One line for an error of the flags or the config file (some carry a traceback in their message)."""
    root = error
    while root.__cause__ or root.__context__:
        root = root.__cause__ or root.__context__
    if isinstance(error, AttributeError | KeyError) and isinstance(root, KeyError):
        # ml_collections, for an override of a key the config lacks (a leaf: AttributeError; a section:
        # KeyError): the key, quoted, maybe with its own guess, which knows only the key's level
        key = re.match(r"'?([^'\n]*)", str(root.args[0]))[1]
        paths = re.findall(r"--config\.([\w.]+)", " ".join(sys.argv))
        path = next((p for p in paths if key in p.split(".")), key)
        return f"config has unknown keys {jaxcnn.training.config.unknown_key(path)}"
    if isinstance(error, flags.Error) and "\n" not in str(error):
        return str(error)
    return f"--config: {type(root).__name__}: {str(root).strip().splitlines()[-1].strip()}"  # the gist


def _parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with every error of the flags and the config file on one line."""
    try:
        remaining = flags.FLAGS(argv)
        _CONFIG.value.keys()  # a config file that failed to load raises only when its config is used
    except Exception as error:  # noqa: BLE001 - the config file's own code may raise anything
        _fail(error, _config_error(error))
    return remaining


class PlotLearningCurves(jaxcnn.training.Action):
    """At the end of the run, its learning curves in `WORKDIR/plots/curves.png` (process 0)."""

    def end(self, run) -> None:
        if run.is_writer:
            try:
                jaxcnn.visualize.save_learning_curves(run.spec.workdir)
            except OSError as error:  # a full disk: the result, written next, says so if it matters
                logging.warning("the learning curves were not drawn: %s", error)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    jaxcnn.configure_cpu()  # XLA's threaded CPU code, malloc's reuse: before JAX starts its backend
    # Orbax and TFDS log every checkpoint and file through absl at INFO; jaxcnn's own lines stay.
    logging.getLogger("absl").setLevel(logging.WARNING)
    try:
        group = jaxcnn.parallel.join_process_group(
            _DISTRIBUTED.value, _COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value
        )
        if jax.process_count() > 1:  # one process: nothing to tell, and a refused run stays one line
            logging.info("%s", group)
        result = jaxcnn.training.train_and_evaluate(
            _CONFIG.value, _WORKDIR.value, actions=[PlotLearningCurves()]
        )
    except jaxcnn.training.TrainingInterrupted as stop:
        print(stop, file=sys.stderr)
        sys.exit(128 + stop.signum)
    except _USER_ERRORS as error:
        _fail(error, str(error))
    except jax.errors.JaxRuntimeError as error:
        if jax.process_count() == 1:
            raise
        _group_lost(error)
    if jaxcnn.parallel.is_main_process():
        print(result.describe())


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
