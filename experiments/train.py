"""Trains a model from a config file and reports its test accuracy.

    python experiments/train.py --config experiments/configs/lenet5.py --workdir runs/lenet5 \
        [--config.num_epochs=5 --config.batch_size=256 --config.augment.flip=True ...]

Running the same command again resumes from the newest checkpoint in the workdir (or, once the run is
finished, reports its result); SIGTERM or Ctrl-C saves a checkpoint first. A larger `--config.num_epochs`
on the same workdir extends the run. Multi-process runs (one process per host, or several on one machine)
add `--coordinator_address HOST:PORT --num_processes N --process_id I`.
"""

import logging
import os
import sys

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
    jaxcnn.data.DataUnavailableError,
)


class PlotLearningCurves(jaxcnn.training.Action):
    """At the end of the run, its learning curves in `WORKDIR/plots/curves.png` (process 0)."""

    def end(self, run) -> None:
        if run.is_writer:
            jaxcnn.visualize.save_learning_curves(run.workdir)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    jaxcnn.configure_cpu()  # XLA's threaded CPU convolutions: before JAX starts its backend
    # Orbax and TFDS log every checkpoint and file through absl at INFO; jaxcnn's own lines stay.
    logging.getLogger("absl").setLevel(logging.WARNING)
    try:
        if _COORDINATOR.value:
            jaxcnn.parallel.initialize_distributed(
                _COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value
            )
        result = jaxcnn.training.train_and_evaluate(
            _CONFIG.value, _WORKDIR.value, actions=[PlotLearningCurves()]
        )
    except jaxcnn.training.TrainingInterrupted as stop:
        print(stop, file=sys.stderr)
        sys.exit(128 + stop.signum)
    except _USER_ERRORS as error:
        if os.environ.get("JAXCNN_TRACEBACK"):
            raise
        print(f"error: {error}\n(set JAXCNN_TRACEBACK=1 for the traceback)", file=sys.stderr)
        sys.exit(1)
    if jaxcnn.parallel.is_main_process():
        print(result.describe())


if __name__ == "__main__":
    app.run(main)
