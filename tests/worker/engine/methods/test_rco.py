from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import Tensor

from tests.worker.engine.helpers import (
    Recorder,
    arrays,
    first_train,
    make_context,
    make_method,
    make_plan,
    spec_schedule,
)
from worker.engine.checkpoint import load_weights
from worker.engine.data import DataSplit
from worker.engine.loop import Stopped, train
from worker.engine.methods import EpochContext
from worker.engine.methods.rco import RCO, greedy_pick, stage_at
from worker.engine.zoo import build_model


def test_stage_at_follows_the_planned_stage_epochs() -> None:
    assert [stage_at(e, [3, 3, 4]) for e in range(1, 11)] == [0] * 3 + [1] * 3 + [2] * 4
    assert [stage_at(e, [0, 1, 1]) for e in (1, 2)] == [1, 2]  # a 0-epoch stage is skipped
    assert stage_at(11, [3, 3, 4]) == 2


def test_greedy_pick_takes_the_farthest_under_threshold() -> None:
    assert greedy_pick([0.5, 1.5, 2.5, 3.0], 2.0) == 1
    assert greedy_pick([0.5, 2.5, 1.0, 3.0], 2.0) == 2  # farthest along the route, not smallest
    assert greedy_pick([2.5, 3.0], 2.0) == 0  # none close enough: the nearest later one
    assert greedy_pick([0.1, 0.2], 2.0) == 1


def rco(
    teacher: torch.nn.Module,
    student: torch.nn.Module,
    route: dict[int, Path],
    *,
    anchors: list[int],
    stage_epochs: list[int],
    greedy: bool = False,
    **params: object,
) -> RCO:
    """An RCO with the plan admission makes (service/spec/methods.py: RCOParams.plan)."""
    method = make_method(
        "rco",
        student,
        teacher,
        route=route,
        anchors=anchors,
        stage_epochs=stage_epochs,
        greedy=greedy,
        **params,
    )
    assert isinstance(method, RCO)
    return method


@pytest.fixture(scope="module")
def small(digits: DataSplit) -> DataSplit:
    """Four batches of 64 per epoch: the mechanics, not the accuracy, are under test."""
    return first_train(digits, 4 * 64)


@pytest.fixture(scope="module")
def route(small: DataSplit, tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """A real supervised teacher, LR drops after epochs 1 and 2: route checkpoints 1, 2, 3."""
    directory = tmp_path_factory.mktemp("teacher")
    schedule = spec_schedule(name="multistep", milestones=[1, 2], gamma=0.1)
    plan = make_plan(small, directory, arch="resnet8", epochs=3, schedule=schedule)
    train(plan, Recorder())
    paths = {e: directory / "route" / f"epoch_{e:04d}.safetensors" for e in (1, 2, 3)}
    assert all(p.exists() for p in paths.values())
    return paths


def converged(paths: dict[int, Path]):
    teacher = build_model("resnet8", 10, 1)
    load_weights(teacher, paths[max(paths)])
    return teacher


class TeacherWatch(Recorder):
    """Snapshots the teacher's classifier at each stage event and after each epoch."""

    def __init__(self, stop_after_steps: int | None = None) -> None:
        super().__init__(stop_after_steps)
        self.method: RCO | None = None
        self.at_stage: list[Tensor] = []
        self.at_epoch: dict[int, Tensor] = {}

    def fc(self) -> Tensor:
        assert self.method is not None
        return self.method.teacher.state_dict()["fc.weight"].clone()

    def on_event(self, type_: str, message: str, data: dict) -> None:
        super().on_event(type_, message, data)
        if type_ == "stage":
            self.at_stage.append(self.fc())

    def on_epoch(self, epoch: int, metrics: dict[str, float]) -> None:
        super().on_epoch(epoch, metrics)
        self.at_epoch[epoch] = self.fc()


def rco_plan(small: DataSplit, paths: dict[int, Path], tmp_path: Path, params: dict, epochs: int):
    plan = make_plan(small, tmp_path, epochs=epochs)  # its student, with an rco method below
    method = rco(converged(paths), plan.method.student, paths, **params)
    return replace(plan, method=method), method


def test_real_run_switches_anchor_per_stage(
    small: DataSplit, route: dict[int, Path], tmp_path: Path
) -> None:
    params = {"anchors": [1, 2, 3], "stage_epochs": [1, 1, 1]}  # the teacher's lr drops, 1 and 2
    plan, method = rco_plan(small, route, tmp_path, params, epochs=3)
    watch = TeacherWatch()
    watch.method = method
    result = train(plan, watch)
    stages = [(m, d) for t, m, d in watch.events if t == "stage"]
    assert [m for m, _ in stages] == [f"stage {k}: anchor epoch {k}" for k in (1, 2, 3)]
    assert [d["stage_epochs"] for _, d in stages] == [1, 1, 1]
    for k, fc in enumerate(watch.at_stage, start=1):  # the teacher really holds anchor k
        assert torch.equal(fc, load_file(str(route[k]))["fc.weight"])
    assert not torch.equal(watch.at_stage[0], watch.at_stage[1])
    assert not torch.equal(watch.at_stage[1], watch.at_stage[2])
    assert {"train_ce", "train_kd"} <= set(result.final_metrics)


def test_resume_inside_a_stage_restores_its_anchor(
    small: DataSplit, route: dict[int, Path], tmp_path: Path
) -> None:
    params = {"anchors": [1, 2, 3], "stage_epochs": [1, 2, 1]}  # anchors 1, 2 and the final 3
    plan, _ = rco_plan(small, route, tmp_path, params, epochs=4)
    with pytest.raises(Stopped):
        train(plan, Recorder(stop_after_steps=4 * 2 + 2))  # inside epoch 3: stage 2, anchor 2
    plan, method = rco_plan(small, route, tmp_path, params, epochs=4)  # holds the final teacher
    watch = TeacherWatch()
    watch.method = method
    result = train(plan, watch)
    assert result.resumed_from_epoch == 2
    assert torch.equal(watch.at_epoch[3], load_file(str(route[2]))["fc.weight"])
    assert [d["anchor_epoch"] for t, _, d in watch.events if t == "stage"] == [3]
    assert torch.equal(watch.at_epoch[4], load_file(str(route[3]))["fc.weight"])


def context(data: DataSplit, events: list) -> EpochContext:
    return make_context(arrays(data.train), arrays(data.val), events)


def test_greedy_with_stub_gaps(small: DataSplit, route: dict[int, Path]) -> None:
    method = rco(
        converged(route),
        build_model("cnn_small", 10, 1),
        route,
        anchors=[1, 2, 3],  # greedy uses only the number of stages
        stage_epochs=[1, 1, 1],
        greedy=True,
        threshold=2.0,
    )
    gaps = {1: 0.5, 2: 1.5, 3: 4.0}
    asked: list[list[int]] = []

    def stub(epochs: list[int], ctx: EpochContext) -> list[float]:
        asked.append(epochs)
        return [gaps[e] for e in epochs]

    method.kl_gaps = stub  # type: ignore[method-assign]
    events: list = []
    for epoch in (1, 2, 3):
        method.begin_epoch(epoch, context(small, events))
    # Stage 1: epochs 1 and 2 are under 2.0, 2 is farther. Stage 2: only 3 is later (4.0 is
    # over the threshold, but it is the nearest). Stage 3: nothing later, stays at the final.
    assert asked == [[1, 2, 3], [3], [3]]
    assert [(d["anchor_epoch"], d["kl_gap"]) for _, _, d in events] == [
        (2, 1.5),
        (3, 4.0),
        (3, 4.0),
    ]
    assert [d["stage"] for _, _, d in events] == [1, 2, 3]


def test_greedy_with_real_gaps_known_by_construction(
    small: DataSplit, route: dict[int, Path]
) -> None:
    # The student IS the epoch-1 checkpoint: its gap to anchor 1 is exactly 0 and to the later,
    # trained-on checkpoints positive. A tiny threshold admits only epoch 1; a huge one the last.
    student = build_model("resnet8", 10, 1)
    load_weights(student, route[1])
    for threshold, expected in ((1e-6, 1), (1e6, 3)):
        method = rco(
            converged(route),
            student,
            route,
            anchors=[1, 2, 3],
            stage_epochs=[1, 1],
            greedy=True,
            threshold=threshold,
        )
        events: list = []
        method.begin_epoch(1, context(small, events))
        ((_, message, data),) = events
        assert data["anchor_epoch"] == expected, message
        fc = load_file(str(route[expected]))["fc.weight"]
        assert torch.equal(method.teacher.state_dict()["fc.weight"], fc)
        if expected == 1:
            assert data["kl_gap"] == 0.0
        gaps = method.kl_gaps([1, 2, 3], context(small, []))
        assert gaps[0] == 0.0 and min(gaps[1:]) > 0.0
