"""How a process group is formed: JAX's cluster detection, the `distributed` modes, their errors."""

import os

import pytest

from jaxcnn.parallel import detected_cluster, join_process_group

SLURM = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "node[001-004]", "SLURM_NTASKS": "8",
         "SLURM_PROCID": "3", "SLURM_LOCALID": "1", "SLURM_STEP_NUM_NODES": "4"}  # fmt: skip
OMPI = {"OMPI_MCA_orte_hnp_uri": "4096.0;tcp://10.0.0.1:1", "OMPI_COMM_WORLD_SIZE": "2",
        "OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_LOCAL_RANK": "1"}  # fmt: skip


@pytest.fixture
def no_cluster(monkeypatch):
    """An environment without any cluster's variables (as CI's, wherever the suite runs)."""
    for name in os.environ:
        if name.startswith(("SLURM_", "OMPI_", "KUBERNETES_", "TPU_", "MEGASCALE_")):
            monkeypatch.delenv(name)
    return monkeypatch


@pytest.mark.parametrize(("variables", "cluster"), [({}, None), (SLURM, "slurm"), (OMPI, "ompi")])
def test_the_cluster_is_detected_from_its_launcher_variables(no_cluster, variables, cluster):
    for name, value in variables.items():
        no_cluster.setenv(name, value)
    assert detected_cluster() == cluster


def test_slurm_is_not_detected_without_the_step_variables(no_cluster):
    """`sbatch`'s batch shell has SLURM_JOB_ID but is no step of tasks: JAX needs `srun`'s variables."""
    no_cluster.setenv("SLURM_JOB_ID", "7")
    assert detected_cluster() is None


@pytest.mark.parametrize("mode", ["auto", "off"])
def test_one_process_outside_a_cluster_says_so(no_cluster, mode):
    line = join_process_group(mode)
    assert line.startswith("process group: one process (")
    assert line.endswith("process 0 of 1, 8 local of 8 cpu devices")


def test_bad_modes_and_contradictions_are_named(no_cluster):
    with pytest.raises(ValueError, match="distributed must be one of 'auto', 'off', got 'slurm'"):
        join_process_group("slurm")
    with pytest.raises(ValueError, match="distributed 'off' contradicts coordinator_address"):
        join_process_group("off", "127.0.0.1:1234", 2, 0)
    with pytest.raises(ValueError, match="coordinator_address must be HOST:PORT, got None"):
        join_process_group("auto", None, 2, 0)
