"""Checkpoints: round trip, keep-last-N, fallback past a corrupted newest one (moved aside), checksums of the
arrays (a flipped bit, a garbled block, checkpoints without them), a full disk."""

import errno
import logging
import re
import shutil
import struct
from collections import namedtuple
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from jax.sharding import NamedSharding, PartitionSpec

from jaxcnn import models
from jaxcnn.training import (
    CheckpointError,
    Checkpoints,
    create_train_state,
    default_config,
    read_metrics,
    train_and_evaluate,
    train_step,
)
from jaxcnn.training import checkpoint as checkpoint_lib
from jaxcnn.training.finetune import newest_checkpoint_state
from jaxcnn.training.run import check_finite
from jaxcnn.training.steps import zero_metrics


def _state():
    return create_train_state(
        models.create("compact", features=(4, 8)), optax.sgd(0.1, momentum=0.9), (8, 8, 1), 0
    )


def _advance(state, steps=1):
    rng = np.random.default_rng(int(state.step))
    batch = {
        "image": jnp.asarray(rng.standard_normal((4, 8, 8, 1)), jnp.float32),
        "label": jnp.asarray([0, 1, 2, 3]),
        "mask": jnp.ones(4),
    }
    for _ in range(steps):
        state, _ = train_step(state, batch)
    return state


def _assert_same(a, b):
    jax.tree.map(np.testing.assert_array_equal, a, b)


def test_round_trip_restores_every_field(tmp_path):
    state = _advance(_state(), 2)
    metrics = {k: v + 3 for k, v in zero_metrics().items()}
    checkpoints = Checkpoints(tmp_path / "ckpt")
    checkpoints.save(state, metrics, {"step": 2, "epoch": 0, "batch": 2})
    checkpoints.close()
    restored, restored_metrics, position = Checkpoints(tmp_path / "ckpt").restore_latest(
        _state(), zero_metrics()
    )
    for field in ("step", "params", "opt_state", "batch_stats", "rng"):
        _assert_same(getattr(restored, field), getattr(state, field))
    _assert_same(restored_metrics, metrics)
    assert position == {"step": 2, "epoch": 0, "batch": 2}


def test_empty_directory_restores_nothing(tmp_path):
    assert Checkpoints(tmp_path / "none").restore_latest(_state(), zero_metrics()) is None


def test_keeps_the_last_n(tmp_path):
    checkpoints = Checkpoints(tmp_path, max_to_keep=2)
    state = _state()
    for _ in range(4):
        state = _advance(state)
        checkpoints.save(state, zero_metrics(), {})
    checkpoints.close()
    assert Checkpoints(tmp_path).steps() == [3, 4]


def _corrupt(step_dir):
    for path in step_dir.rglob("*"):
        if path.is_file() and path.stat().st_size > 0:
            path.write_bytes(b"garbage")


def _damage_the_largest_chunk(step_dir, damage):
    """Applies `damage` to the middle of the largest zarr chunk of the state's arrays: a zstd frame (no
    checksum) in an OCDBT data file, not one of OCDBT's B-tree nodes (whose header, with a checksum,
    starts 14 bytes before their frame)."""
    chunks = []
    for path in (step_dir / "state").rglob("*"):
        if path.is_file() and path.parent.name == "d":
            data = path.read_bytes()
            starts = [match.start() for match in re.finditer(re.escape(ZSTD_FRAME), data)]
            for start, end in zip(starts, [*starts[1:], len(data)]):
                if start < 14 or data[start - 14 : start - 10] != OCDBT_NODE:
                    chunks.append((end - start, path, start))
    size, path, start = max(chunks)
    data = bytearray(path.read_bytes())
    damage(data, start + size // 2)
    path.write_bytes(bytes(data))


ZSTD_FRAME, OCDBT_NODE = bytes.fromhex("28b52ffd"), bytes.fromhex("0cdb20de")  # their magic numbers


def _flip_a_bit(step_dir):
    def flip(data, at):
        data[at] ^= 1

    _damage_the_largest_chunk(step_dir, flip)


def _garble_a_block(step_dir):
    def garble(data, at):
        data[at : at + 32] = np.random.default_rng(0).bytes(32)

    _damage_the_largest_chunk(step_dir, garble)


def _two_saved_the_second_corrupted(directory, damage=_corrupt):
    """The states of steps 1 and 2, saved in `directory`; then checkpoint 2 is damaged."""
    checkpoints = Checkpoints(directory)
    first = _advance(_state())
    second = _advance(first)
    checkpoints.save(first, zero_metrics(), {})
    checkpoints.save(second, zero_metrics(), {})
    checkpoints.close()
    damage(directory / "2")
    return first, second


def test_corrupted_newest_falls_back_with_a_warning(tmp_path, caplog):
    first, _ = _two_saved_the_second_corrupted(tmp_path)
    with caplog.at_level(logging.WARNING):
        restored, _, _ = Checkpoints(tmp_path).restore_latest(_state(), zero_metrics())
    assert int(restored.step) == 1
    _assert_same(restored.params, first.params)
    assert "Skipping unreadable checkpoint" in caplog.text and str(tmp_path / "2") in caplog.text


@pytest.mark.parametrize("damage", [_flip_a_bit, _garble_a_block])
def test_array_data_that_differs_from_its_checksums_is_moved_aside(tmp_path, caplog, damage):
    """Orbax decodes these damaged chunks without an error, into other numbers: the checksums tell."""
    first, _ = _two_saved_the_second_corrupted(tmp_path, damage)
    checkpoints = Checkpoints(tmp_path)
    with caplog.at_level(logging.WARNING):
        restored, _, _ = checkpoints.restore_latest(_state(), zero_metrics())
    checkpoints.close()
    assert int(restored.step) == 1 and checkpoints.verified(1)
    _assert_same(restored.params, first.params)
    assert (
        f"Skipping unreadable checkpoint {tmp_path / '2'}: its data differs from the checksums saved with it "
        "(state/"
    ) in caplog.text
    assert [p.name.split("-")[0] for p in (tmp_path / "unreadable").iterdir()] == ["2"]


def _save_without_checksums(directory, state):
    """A checkpoint as jaxcnn 0.2 wrote it: state, metric sums and position, no checksums."""
    manager = ocp.CheckpointManager(directory)
    fields = ("step", "params", "opt_state", "batch_stats", "rng")
    manager.save(
        int(state.step),
        args=ocp.args.Composite(
            state=ocp.args.StandardSave({field: getattr(state, field) for field in fields}),
            metric_sums=ocp.args.StandardSave(zero_metrics()),
            position=ocp.args.JsonSave({"step": int(state.step)}),
        ),
    )
    manager.wait_until_finished()
    manager.close()


def test_a_checkpoint_without_checksums_restores_unverified_and_a_nan_says_so(tmp_path, caplog):
    state = _advance(_state())
    _save_without_checksums(tmp_path, state)
    checkpoints = Checkpoints(tmp_path)
    with caplog.at_level(logging.WARNING):
        restored, _, position = checkpoints.restore_latest(_state(), zero_metrics())
    _assert_same(restored.params, state.params)
    assert position == {"step": 1} and not checkpoints.verified(1)
    assert (
        f"Checkpoint {tmp_path / '1'} has no checksums (an older jaxcnn saved it): not verified"
        in caplog.text
    )
    run = SimpleNamespace(checkpoints=checkpoints, step=3, state=restored)
    unverified = (
        rf"^the training loss became nan by step 3; the newest checkpoint, step 1, is kept in "
        rf"{re.escape(str(tmp_path / '1'))}, unverified: an older jaxcnn saved it without checksums, so it "
        r"may be damaged \(if the run stops here again, move it aside to resume from an earlier one\) "
    )
    with pytest.raises(FloatingPointError, match=unverified):
        check_finite(run, float("nan"))
    checkpoints.save(_advance(restored), zero_metrics(), {})
    with pytest.raises(FloatingPointError, match=r"step 2, saved with finite parameters, is kept in"):
        check_finite(run, float("nan"))
    checkpoints.close()


def _reference_checksum(array: np.ndarray) -> int:
    """The checksums' definition, word by word: the sum of fmix32(word + C-order word index * 0x9E3779B9)
    mod 2**32, over 32-bit words (narrower elements widened to one)."""

    def fmix32(h):
        h ^= h >> 16
        h = h * 0x85EBCA6B % 2**32
        h ^= h >> 13
        h = h * 0xC2B2AE35 % 2**32
        return h ^ (h >> 16)

    raw, size = np.ascontiguousarray(array).tobytes(), array.dtype.itemsize
    if size >= 4:
        words = struct.unpack(f"<{len(raw) // 4}I", raw)
    else:
        words = [int.from_bytes(raw[i : i + size], "little") for i in range(0, len(raw), size)]
    return sum(fmix32((word + i * 0x9E3779B9) % 2**32) for i, word in enumerate(words)) % 2**32


def test_checksums_follow_their_definition_whatever_the_sharding():
    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((8, 6)).astype(np.float32)
    mesh = jax.make_mesh((4, 2), ("a", "b"))
    tree = {
        "f32": rng.standard_normal((3, 5)).astype(np.float32),
        "f64": rng.standard_normal(3),  # two words an element
        "bf16": rng.standard_normal(4).astype(ml_dtypes.bfloat16),
        "flags": rng.random((2, 3)) > 0.5,
        "step": np.int8(7),
        "on_one_device": jnp.asarray(matrix),
        "sharded": jax.device_put(matrix, NamedSharding(mesh, PartitionSpec("a", "b"))),
        "replicated": jax.device_put(matrix, NamedSharding(mesh, PartitionSpec())),
        "key": jax.random.key(3),  # a typed key (DP-SGD's noise state): checksummed as its words
    }
    words = {**tree, "key": jax.random.key_data(tree["key"])}
    expected = {f"item/{name}": _reference_checksum(np.asarray(leaf)) for name, leaf in words.items()}
    assert checkpoint_lib.checksums({"item": tree}) == expected
    assert len({expected["item/sharded"], expected["item/f32"]}) == 2


def _digits_config():
    config = default_config()
    config.update_from_flattened_dict(
        {"model": "compact", "model_kwargs": {"features": (4, 8)}, "dataset": "digits", "batch_size": 16,
         "num_steps": 6, "log_every": 3, "checkpoint_every": 3, "train_examples": 128, "test_examples": 64}
    )  # fmt: skip
    return config


def _logged(workdir):
    return [
        {k: v for k, v in row.items() if k != "examples_per_sec"}
        for row in read_metrics(workdir / "metrics.jsonl")
    ]


@pytest.mark.slow
def test_a_run_resumes_past_a_flipped_bit_and_ends_bit_identically(tmp_path):
    whole = train_and_evaluate(_digits_config(), tmp_path / "whole")
    workdir = tmp_path / "run"
    shutil.copytree(tmp_path / "whole", workdir)
    (workdir / "result.json").unlink()  # unfinished: its final checkpoint is read again
    _flip_a_bit(workdir / "checkpoints" / "6")
    rerun = train_and_evaluate(_digits_config(), workdir)
    assert rerun.resumed_from == 3
    assert (rerun.test_loss, rerun.test_accuracy) == (whole.test_loss, whole.test_accuracy)
    assert _logged(workdir) == _logged(tmp_path / "whole")
    _assert_same(newest_checkpoint_state(workdir), newest_checkpoint_state(tmp_path / "whole"))
    assert [p.name.split("-")[0] for p in (workdir / "checkpoints" / "unreadable").iterdir()] == ["6"]


def _files(directory):
    return {p.relative_to(directory): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_an_unreadable_checkpoint_is_moved_aside_so_its_step_can_be_saved_again(tmp_path, caplog):
    _, second = _two_saved_the_second_corrupted(tmp_path)
    corrupted = _files(tmp_path / "2")
    checkpoints = Checkpoints(tmp_path)
    with caplog.at_level(logging.WARNING):
        restored, _, _ = checkpoints.restore_latest(_state(), zero_metrics())
    assert int(restored.step) == 1
    [moved] = (tmp_path / "unreadable").iterdir()
    assert re.fullmatch(r"2-\d{8}T\d{6}Z", moved.name) and _files(moved) == corrupted  # kept as it was
    assert f"Moved unreadable checkpoint {tmp_path / '2'} to {moved}" in caplog.text
    assert checkpoints.steps() == [1]
    checkpoints.save(second, zero_metrics(), {})  # the run redoes step 2: no StepAlreadyExistsError
    checkpoints.close()
    restored, _, _ = Checkpoints(tmp_path).restore_latest(_state(), zero_metrics())
    _assert_same(restored.params, second.params)


def test_a_reader_moves_and_removes_nothing(tmp_path):
    first, _ = _two_saved_the_second_corrupted(tmp_path)
    shutil.copytree(tmp_path / "1", tmp_path / "3.orbax-checkpoint-tmp-1234")  # the run saving now
    before = _files(tmp_path)
    reader = Checkpoints(tmp_path, read_only=True)
    restored, _, _ = reader.restore_latest(_state(), zero_metrics())
    assert int(restored.step) == 1 and _files(tmp_path) == before
    with pytest.raises(CheckpointError, match="read-only"):
        reader.save(first, zero_metrics(), {})
    reader.close()
    assert Checkpoints(tmp_path / "none", read_only=True).restore_latest(_state(), zero_metrics()) is None


def test_all_corrupted_names_the_directory_and_moves_nothing(tmp_path):
    checkpoints = Checkpoints(tmp_path)
    checkpoints.save(_advance(_state()), zero_metrics(), {})
    checkpoints.close()
    _corrupt(tmp_path / "1")
    with pytest.raises(CheckpointError, match=str(tmp_path)):
        Checkpoints(tmp_path).restore_latest(_state(), zero_metrics())
    assert Checkpoints(tmp_path).steps() == [1] and not (tmp_path / "unreadable").exists()


def test_an_unfinished_save_is_ignored(tmp_path):
    checkpoints = Checkpoints(tmp_path)
    checkpoints.save(_advance(_state()), zero_metrics(), {})
    checkpoints.close()
    # What a process killed mid-save leaves: a temporary directory that was never renamed.
    shutil.copytree(tmp_path / "1", tmp_path / "2.orbax-checkpoint-tmp-1234")
    assert Checkpoints(tmp_path).steps() == [1]
    assert checkpoint_lib.saved_steps(tmp_path) == [1]


DiskUsage = namedtuple("DiskUsage", "total used free")


def _disk_with_free(monkeypatch, free):
    monkeypatch.setattr(checkpoint_lib.shutil, "disk_usage", lambda path: DiskUsage(10**12, 0, free))


def test_a_save_that_would_not_fit_stops_before_writing(tmp_path, monkeypatch):
    checkpoints = Checkpoints(tmp_path)
    state = _advance(_state())
    checkpoints.save(state, zero_metrics(), {})
    checkpoints.close()
    checkpoints = Checkpoints(tmp_path)
    _disk_with_free(monkeypatch, 1000)
    message = (
        rf"^not enough space on the disk of {re.escape(str(tmp_path))} for a checkpoint: it needs about "
        r"[\d,]+ KiB, 1 KiB is free; free some space and run the same command again "
        r"\(it resumes from step 1\)$"
    )
    with pytest.raises(CheckpointError, match=message):
        checkpoints.save(_advance(state), zero_metrics(), {})
    checkpoints.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1"]  # nothing of step 2 was written


def test_a_disk_that_fills_during_a_save_is_one_error_and_no_log_noise(tmp_path, monkeypatch, caplog):
    async def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "2.orbax-checkpoint-tmp"))

    checkpoints = Checkpoints(tmp_path)
    state = _advance(_state())
    checkpoints.save(state, zero_metrics(), {})
    monkeypatch.setattr(checkpoint_lib.ocp.StandardCheckpointHandler, "async_save", disk_full)
    with caplog.at_level(logging.INFO), pytest.raises(CheckpointError, match="resumes from step 1") as error:
        checkpoints.save(_advance(state), zero_metrics(), {})
        checkpoints.close()
    assert "\n" not in str(error.value) and str(tmp_path) in str(error.value)
    assert "No space left" not in caplog.text
    assert checkpoint_lib.saved_steps(tmp_path) == [1]


@pytest.mark.parametrize(
    "a, b, expected",
    [
        (1_950 * 2**10, 2_000 * 2**10, ("1,950 KiB", "2,000 KiB")),  # not "2 MiB" and "2 MiB"
        (2 * 2**20, 2 * 2**20 + 300, ("2,048.0 KiB", "2,048.3 KiB")),
        (50 * 2**30, 51 * 2**30, ("50 GiB", "51 GiB")),
        (15 * 2**20, 15 * 2**20 + 2**18, ("15.0 MiB", "15.2 MiB")),
        (900, 1000, ("900 bytes", "1,000 bytes")),
    ],
)
def test_sizes_differ_in_print_when_they_differ(a, b, expected):
    assert checkpoint_lib.sizes(a, b) == expected
