"""build_run's parts: the config read once, what is fixed for the run apart from what changes."""

import dataclasses

import pytest

from jaxcnn.training import build, build_run, config, default_config


def test_a_build_reads_each_section_once_and_fixes_its_spec(tmp_path, monkeypatch):
    reads = []
    read_sections = config.read_sections

    def counted(cfg):
        reads.append(1)
        return read_sections(cfg)

    monkeypatch.setattr(config, "read_sections", counted)
    monkeypatch.setattr(build, "read_sections", counted)
    cfg = default_config()
    cfg.update_from_flattened_dict(
        {"model": "simple_cnn", "dataset": "digits", "batch_size": 32, "num_steps": 2, "train_examples": 64}
    )
    run = build_run(cfg, tmp_path, handle_signals=False)
    try:
        assert len(reads) == 1
        assert (run.step, run.spec.total_steps, run.spec.steps_per_epoch) == (0, 2, 2)
        with pytest.raises(dataclasses.FrozenInstanceError):
            run.spec.total_steps = 3
    finally:
        run.close()
