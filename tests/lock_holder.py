"""Another process that holds a workdir's lock, as a second run would (for tests)."""

import subprocess
import sys

_HOLD = (
    "import sys; from jaxcnn.training.workdir import lock_workdir; lock = lock_workdir(sys.argv[1]); "
    "print('locked', flush=True); sys.stdin.read()"
)


def hold_lock(workdir) -> subprocess.Popen:
    """A process that holds `workdir`'s lock until its stdin is closed (or it is killed)."""
    process = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(workdir)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout.readline() == "locked\n"
    return process
