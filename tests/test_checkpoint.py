"""Checkpoints on real orbax folders: digests checked on restore, damaged ones set aside, old
ones deleted without ever leaving half a step behind."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax.checkpoint import CheckpointError, Checkpoints, tree_digest


def _state(step: int) -> dict:
    return {"w": jnp.arange(20000.0) * 1.37 + step, "b": jnp.full((50, 50), float(step))}


def _saved(workdir, steps=(10, 20, 30), max_to_keep=3) -> None:
    checkpoints = Checkpoints(workdir, max_to_keep)
    for step in steps:
        checkpoints.save(step, _state(step), {"step": step})
    checkpoints.close()


def _damage(workdir, step: int) -> None:
    """Flips 64 bytes in the middle of the checkpoint's largest array file."""
    files = [p for p in (workdir / "checkpoints" / str(step) / "state").rglob("*") if p.is_file()]
    target = max(files, key=lambda p: p.stat().st_size)
    raw = bytearray(target.read_bytes())
    middle = len(raw) // 2
    raw[middle : middle + 64] = bytes(b ^ 0xFF for b in raw[middle : middle + 64])
    target.write_bytes(bytes(raw))


def test_a_restored_state_matches_the_digest_saved_with_it(tmp_path):
    _saved(tmp_path)
    checkpoints = Checkpoints(tmp_path)
    state, record = checkpoints.restore(_state(0))
    assert record["step"] == 30 and record["state_sha256"] == tree_digest(_state(30))
    np.testing.assert_array_equal(state["w"], _state(30)["w"])
    checkpoints.close()


def test_a_damaged_checkpoint_is_set_aside_and_the_one_before_is_used(tmp_path, capsys):
    _saved(tmp_path)
    _damage(tmp_path, 30)
    checkpoints = Checkpoints(tmp_path)
    with pytest.raises(CheckpointError, match="checkpoint 30 .* is damaged"):
        checkpoints.restore(_state(0))  # Read without the check, it would differ silently.
    state, record = checkpoints.restore_latest(_state(0))
    assert record["step"] == 20
    np.testing.assert_array_equal(state["w"], _state(20)["w"])
    err = capsys.readouterr().err
    assert f"checkpoint 30 in {tmp_path / 'checkpoints'} is damaged" in err
    (moved,) = (tmp_path / "checkpoints_damaged").iterdir()
    assert moved.name.startswith("30-") and f"moved it to {moved} and resumed" in err
    assert checkpoints.all_steps() == [10, 20]  # Training goes on from 20, saving over 30.
    checkpoints.save(30, _state(30), {"step": 30})
    assert checkpoints.restore_latest(_state(0))[1]["step"] == 30
    checkpoints.close()


def test_a_reader_uses_the_checkpoint_before_a_damaged_one_and_moves_nothing(tmp_path, capsys):
    _saved(tmp_path)
    _damage(tmp_path, 30)
    reader = Checkpoints(tmp_path, read_only=True)
    assert reader.restore_latest(_state(0))[1]["step"] == 20
    reader.close()
    assert "is damaged" in capsys.readouterr().err
    assert not (tmp_path / "checkpoints_damaged").exists()
    assert Checkpoints(tmp_path, read_only=True).all_steps() == [10, 20, 30]


def test_when_every_checkpoint_is_damaged_the_start_is_refused_and_nothing_moves(tmp_path):
    _saved(tmp_path, steps=(10, 20))
    for step in (10, 20):
        _damage(tmp_path, step)
    checkpoints = Checkpoints(tmp_path)
    with pytest.raises(CheckpointError, match=r"no checkpoint .* reads back intact .*afresh"):
        checkpoints.restore_latest(_state(0))
    assert checkpoints.all_steps() == [10, 20] and not (tmp_path / "checkpoints_damaged").exists()
    checkpoints.close()


def test_unreadable_records_everywhere_refuse_the_start_rather_than_train_afresh(tmp_path):
    _saved(tmp_path, steps=(10, 20))
    for step in (10, 20):
        for f in (tmp_path / "checkpoints" / str(step) / "record").iterdir():
            f.write_bytes(b"\x00garbage")
    checkpoints = Checkpoints(tmp_path)
    with pytest.raises(CheckpointError, match="reads back intact"):
        checkpoints.restore_latest(_state(0))
    assert checkpoints.all_steps() == [10, 20]
    checkpoints.close()


def test_an_error_every_checkpoint_meets_is_not_taken_for_damage(tmp_path):
    """A state of another shape (a code change) fails to restore from every checkpoint:
    that is raised, and the good checkpoints stay where they are."""
    _saved(tmp_path)
    other = {"w": jnp.zeros(7), "b": jnp.zeros((50, 50))}
    checkpoints = Checkpoints(tmp_path)
    with pytest.raises(CheckpointError, match="cannot be read"):
        checkpoints.restore_latest(other)
    assert checkpoints.all_steps() == [10, 20, 30]
    assert not (tmp_path / "checkpoints_damaged").exists()
    checkpoints.close()


def test_a_refused_workdir_keeps_its_checkpoints(tmp_path):
    """`check` refuses a run of other settings before anything is restored or moved."""
    _saved(tmp_path)

    def refuse(record):
        raise ValueError(f"other settings at {record['step']}")

    checkpoints = Checkpoints(tmp_path)
    with pytest.raises(ValueError, match="other settings at 30"):
        checkpoints.restore_latest(_state(0), refuse)
    assert checkpoints.all_steps() == [10, 20, 30]
    checkpoints.close()


def test_old_checkpoints_are_renamed_away_before_they_are_deleted(tmp_path, monkeypatch):
    """A kill while orbax deletes an old step can only leave it under checkpoints/deleted,
    never half a step among the others; the next start empties that folder."""
    monkeypatch.setattr(Checkpoints, "_empty_deleted", lambda self: None)
    _saved(tmp_path, steps=(10, 20, 30), max_to_keep=2)
    deleted = tmp_path / "checkpoints" / "deleted"
    assert [p.name for p in deleted.iterdir()] == ["10"]  # Renamed whole, in one step.
    monkeypatch.undo()
    # Half of its files deleted when the process died.
    for p in [p for p in (deleted / "10").rglob("*") if p.is_file()][::2]:
        p.unlink()
    checkpoints = Checkpoints(tmp_path, max_to_keep=2)
    assert not deleted.exists()
    assert checkpoints.all_steps() == [20, 30]
    assert checkpoints.restore_latest(_state(0))[1]["step"] == 30
    checkpoints.save(40, _state(40), {"step": 40})
    assert checkpoints.all_steps() == [30, 40] and not deleted.exists()
    checkpoints.close()


def test_the_digest_is_bitwise(tmp_path):
    a = {"x": jnp.zeros(3)}
    assert tree_digest(a) == tree_digest({"x": np.zeros(3, np.float32)})
    assert tree_digest(a) != tree_digest({"x": jnp.zeros(3).at[1].set(-0.0)})
    assert tree_digest(a) != tree_digest({"x": jnp.zeros(3, jnp.float16)})
    assert tree_digest(a) != tree_digest({"x": jax.numpy.zeros((1, 3))})
