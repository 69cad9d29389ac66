"""The API names methods, architectures and datasets without importing torch; these must be
exactly the engine's registries, and the shapes it promises must be the data's."""

import pytest

from service import method_params, names, spec
from worker.engine.data import DATASETS, load_dataset
from worker.engine.methods import METHOD_NAMES, create
from worker.engine.models import ARCHITECTURES, build_model


def test_same_names_on_both_sides() -> None:
    assert set(names.ARCHITECTURES) == set(ARCHITECTURES)
    assert set(method_params.METHODS) == set(METHOD_NAMES)
    assert set(names.DATASETS) == set(DATASETS)


@pytest.mark.parametrize(
    "options", [None, {"num_samples": 40, "num_classes": 4, "channels": 2, "size": 12}]
)
def test_dataset_shape_the_api_promises_is_the_data_shape(options: dict | None) -> None:
    name = "digits" if options is None else "synthetic"
    data_spec = spec.DataSpec(dataset=name, synthetic=options)
    num_classes, channels, size = data_spec.shape()
    data = load_dataset(name, 0.2, 0, options)
    assert (data.num_classes, data.input_shape) == (num_classes, (channels, size, size))


def test_every_method_param_model_builds_its_engine_method() -> None:
    """Defaults from the spec are accepted by the engine's method of the same name."""
    params_models = method_params.MethodParams.__args__[0].__args__  # type: ignore[attr-defined]
    for model in params_models:
        params = model(name=model.model_fields["name"].annotation.__args__[0])
        teacher = build_model("cnn_small", 10, 1) if model.needs_teacher else None
        method = create(
            params.name,
            student=build_model("cnn_small", 10, 1),
            teacher=teacher,
            params=params.model_dump(exclude={"name"}),
        )
        assert method.needs_teacher == model.needs_teacher
