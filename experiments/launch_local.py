"""Starts a group of training processes on this machine, as a multi-host run would on several.

    python experiments/launch_local.py -n 2 --devices-per-process 2 -- \
        --config experiments/configs/lenet5.py --workdir runs/two --config.parallel=data

Each process runs `experiments/train.py <args> --coordinator_address 127.0.0.1:PORT --num_processes N
--process_id I` on a free port; with `--cluster-env slurm` (or `ompi`) it gets the variables `srun` (or
`mpirun`) would set instead, and joins the group through JAX's cluster detection, as on a cluster.
Process 0's output is streamed; the others' goes to `WORKDIR/processes/process_I.log` (or is shown when a
process fails). If one process fails, the others (stuck in collectives without it) are stopped, and the
launcher exits with the first non-zero code.
SIGTERM and Ctrl-C are passed on, so the group saves a checkpoint and stops together.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRAIN = Path(__file__).resolve().parent / "train.py"
SAVE_SECONDS = 300  # for a SIGTERM'd group to reach a log step and save a checkpoint before SIGKILL
STUCK_SECONDS = 10  # for the others, stuck in collectives, once one process has failed


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_env(devices_per_process: int | None) -> dict[str, str]:
    """This environment, with `devices_per_process` simulated CPU devices if given."""
    env = dict(os.environ)
    if devices_per_process:
        flags = re.sub(r"--xla_force_host_platform_device_count=\S+", "", env.get("XLA_FLAGS", ""))
        env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={devices_per_process}".strip()
        env["JAX_PLATFORMS"] = "cpu"
    return env


CLUSTER_ENVS = ("explicit", "slurm", "ompi")


def group_args(cluster_env: str, index: int, num_processes: int, port: int) -> tuple[dict, list[str]]:
    """`(environment variables, train.py flags)` that make process `index` of `num_processes` join the
    group coordinated on 127.0.0.1:`port`: the coordinator flags, or the variables of a one-node SLURM
    step or Open MPI job (JAX's detection reads these; JAX_COORDINATOR_PORT picks the port)."""
    if cluster_env == "explicit":
        flags = [f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={num_processes}",
                 f"--process_id={index}"]  # fmt: skip
        return {}, flags
    n, i = str(num_processes), str(index)
    if cluster_env == "slurm":
        env = {"SLURM_JOB_ID": "1", "SLURM_STEP_NODELIST": "localhost", "SLURM_STEP_NUM_NODES": "1",
               "SLURM_NTASKS": n, "SLURM_PROCID": i, "SLURM_LOCALID": i}  # fmt: skip
    elif cluster_env == "ompi":
        env = {"OMPI_MCA_orte_hnp_uri": "4096.0;tcp://127.0.0.1:1", "OMPI_COMM_WORLD_SIZE": n,
               "OMPI_COMM_WORLD_RANK": i, "OMPI_COMM_WORLD_LOCAL_RANK": i}  # fmt: skip
    else:
        raise ValueError(f"cluster_env must be one of {', '.join(CLUSTER_ENVS)}, got {cluster_env!r}")
    return {**env, "JAX_COORDINATOR_PORT": str(port)}, []


def _workdir(train_args: list[str]) -> Path | None:
    for i, arg in enumerate(train_args):
        if arg.startswith("--workdir="):
            return Path(arg.split("=", 1)[1])
        if arg == "--workdir" and i + 1 < len(train_args):
            return Path(train_args[i + 1])
    return None


def _stop(processes: list[subprocess.Popen], signum: int, grace_seconds: float) -> None:
    """Sends `signum` to the live processes, then SIGKILL to those still alive after `grace_seconds`."""
    for p in processes:
        if p.poll() is None:
            p.send_signal(signum)
    deadline = time.monotonic() + grace_seconds
    while any(p.poll() is None for p in processes) and time.monotonic() < deadline:
        time.sleep(0.1)
    for p in processes:
        if p.poll() is None:
            p.kill()
            p.wait()


def launch(
    num_processes: int,
    train_args: list[str],
    devices_per_process: int | None = None,
    cluster_env: str = "explicit",
) -> int:
    """Runs the group to the end; the exit code of the first process that failed, else 0."""
    port = free_port()
    workdir = _workdir(train_args)
    log_dir = workdir / "processes" if workdir else Path(tempfile.mkdtemp(prefix="launch_local-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    env = process_env(devices_per_process)
    processes, logs = [], []
    for index in range(num_processes):
        variables, flags = group_args(cluster_env, index, num_processes, port)
        command = [sys.executable, str(TRAIN), *train_args, *flags]
        log = None if index == 0 else open(log_dir / f"process_{index}.log", "w")  # noqa: SIM115
        logs.append(log)
        processes.append(
            subprocess.Popen(
                command, env={**env, **variables}, stdout=log, stderr=subprocess.STDOUT if log else None
            )
        )

    received: list[int] = []
    previous = {
        sig: signal.signal(sig, lambda signum, _frame: received.append(signum))
        for sig in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        while True:
            if received:  # pass it on: the group saves a checkpoint at a step all processes agree on
                _stop(processes, signal.SIGTERM, SAVE_SECONDS)
            codes = [p.poll() for p in processes]
            failed = [(i, code) for i, code in enumerate(codes) if code not in (None, 0)]
            if failed:
                index, code = failed[0]
                _stop(processes, signal.SIGTERM, STUCK_SECONDS)
                if index:
                    log_path = log_dir / f"process_{index}.log"
                    tail = log_path.read_text()[-3000:] if log_path.exists() else ""
                    print(
                        f"process {index} exited with {code}; the end of {log_path}:\n{tail}", file=sys.stderr
                    )
                return code if code > 0 else 128 - code  # killed by a signal: the shell's convention
            if all(code == 0 for code in codes):
                return 0
            time.sleep(0.1)
    finally:
        _stop(processes, signal.SIGKILL, 0)
        for log in logs:
            if log:
                log.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", "--num-processes", type=int, required=True, help="processes to start")
    parser.add_argument(
        "--devices-per-process", type=int, default=None,
        help="simulated CPU devices per process (sets XLA_FLAGS and JAX_PLATFORMS=cpu)",
    )  # fmt: skip
    parser.add_argument(
        "--cluster-env", choices=CLUSTER_ENVS, default="explicit",
        help="how the processes find each other: coordinator flags, or simulated SLURM / Open MPI variables",
    )  # fmt: skip
    parser.add_argument("train_args", nargs=argparse.REMAINDER, help="-- then the arguments of train.py")
    args = parser.parse_args(argv)
    train_args = args.train_args[1:] if args.train_args[:1] == ["--"] else args.train_args
    if args.num_processes < 1:
        parser.error(f"-n must be >= 1, got {args.num_processes}")
    if args.devices_per_process is not None and args.devices_per_process < 1:
        parser.error(f"--devices-per-process must be >= 1, got {args.devices_per_process}")
    return launch(args.num_processes, train_args, args.devices_per_process, args.cluster_env)


if __name__ == "__main__":
    sys.exit(main())
