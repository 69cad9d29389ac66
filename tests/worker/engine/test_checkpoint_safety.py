"""Resume checkpoints are verified before they are loaded, and a full disk during a write keeps
nothing partial: real files, a real (small tmpfs) filesystem."""

import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from worker.engine.data import DataSplit, num_batches
from worker.engine.loop import Stopped, train
from worker.engine.resume import PREVIOUS, RESUME, verified_resume

from .helpers import Recorder, assert_same_weights, make_plan


def run_to(digits: DataSplit, directory: Path, epochs: int, stop_after: int | None = None):
    recorder = Recorder(stop_after_steps=stop_after)
    plan = make_plan(digits, directory, epochs=epochs)
    return plan, recorder, train(plan, recorder)


def two_of_three_epochs(digits: DataSplit, directory: Path) -> None:
    """A 3-epoch run stopped in its third epoch: checkpoints after epochs 1 and 2."""
    steps = num_batches(len(digits.train), 64, shuffle=True)
    with pytest.raises(Stopped):
        run_to(digits, directory, epochs=3, stop_after=2 * steps + 1)


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    else:  # one flipped byte in the tensor data
        path.write_bytes(data[:-100] + bytes([data[-100] ^ 0xFF]) + data[-99:])


@pytest.mark.parametrize("how", ["truncated", "flipped"])
def test_a_damaged_checkpoint_is_skipped_for_the_previous_one(
    digits: DataSplit, tmp_path: Path, how: str
) -> None:
    two_of_three_epochs(digits, tmp_path)
    assert verified_resume(tmp_path) == (tmp_path / RESUME, [])
    damage(tmp_path / RESUME, how)
    source, skipped = verified_resume(tmp_path)
    assert source == tmp_path / PREVIOUS and skipped == [
        f"{RESUME} does not match its recorded sha256: skipped"
    ]

    plan, recorder, result = run_to(digits, tmp_path, epochs=3)
    assert result.resumed_from_epoch == 1 and [e for e, _ in recorder.epochs] == [2, 3]
    assert [data for kind, _, data in recorder.events if kind == "warning"] == [{}]
    reference, _, _ = run_to(digits, tmp_path / "ref", epochs=3)
    assert_same_weights(plan.method, reference.method)


def test_with_every_checkpoint_damaged_the_run_starts_over(digits, tmp_path: Path) -> None:
    reference, _, _ = run_to(digits, tmp_path / "ref", epochs=3)
    two_of_three_epochs(digits, tmp_path)
    damage(tmp_path / RESUME, "flipped")
    damage(tmp_path / PREVIOUS, "truncated")
    assert verified_resume(tmp_path)[0] is None
    plan, recorder, result = run_to(digits, tmp_path, epochs=3)
    assert result.resumed_from_epoch is None and [e for e, _ in recorder.epochs] == [1, 2, 3]
    assert_same_weights(plan.method, reference.method)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs of the test's own (needs root, as the CI and dev machines run)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)], capture_output=True
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


class FillAfterFirst(Recorder):
    """Once the first checkpoint is written, fill the disk to leave room for half of one."""

    def on_checkpoint(self, path: Path, epoch: int, kind: str, step: int | None) -> None:
        super().on_checkpoint(path, epoch, kind, step)
        if epoch == 1:
            disk = os.statvfs(path.parent)
            free = disk.f_bavail * disk.f_frsize
            (path.parent / "filler").write_bytes(b"\0" * (free - path.stat().st_size // 2))


def test_a_full_disk_during_a_checkpoint_write_keeps_nothing_partial(
    digits: DataSplit, small_disk: Path
) -> None:
    with pytest.raises(OSError) as info:
        train(make_plan(digits, small_disk, epochs=3), FillAfterFirst())
    assert info.value.errno == errno.ENOSPC
    left = sorted(p.name for p in small_disk.iterdir())
    assert left == ["filler", PREVIOUS, PREVIOUS + ".digests"]  # no partial or temporary file
    assert verified_resume(small_disk) == (small_disk / PREVIOUS, [])

    (small_disk / "filler").unlink()  # space again: the run goes on from epoch 1's checkpoint
    recorder = Recorder()
    result = train(make_plan(digits, small_disk, epochs=3), recorder)
    assert result.resumed_from_epoch == 1 and [e for e, _ in recorder.epochs] == [2, 3]


def test_a_stop_keeps_the_newest_checkpoint_verified(digits, tmp_path: Path) -> None:
    with pytest.raises(Stopped):
        run_to(digits, tmp_path, epochs=3, stop_after=30)
    source, skipped = verified_resume(tmp_path)
    assert source == tmp_path / RESUME and skipped == []
