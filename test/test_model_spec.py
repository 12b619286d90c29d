"""ModelSpec: one description of the model that the executor, dvfo-cloud, dvfo-pipeline and launch share."""
import argparse

import pytest

from dvfo_ros.cli import cloud
from dvfo_ros.core.inference.collab import ArtifactError, CollaborativeModel
from dvfo_ros.core.inference.spec import ModelSpec

EXECUTOR = {"model": "mobilenet_v2", "dataset": "scenes", "artifact": "none", "split_index": 7,
            "num_classes": 10, "input_size": 32, "cloud_endpoint": "tcp://127.0.0.1:5555", "deadline_ms": 50.0}


def _cloud_spec(args):
    return ModelSpec.from_args(cloud.build_parser().parse_args(["--bind", "tcp://127.0.0.1:5555"] + args))


def test_spec_from_the_executor_s_params():
    s = ModelSpec.from_params(EXECUTOR)
    assert s == ModelSpec("mobilenet_v2", "scenes", "none", 7, 10, 32)
    assert ModelSpec.from_params(s.params()) == s
    assert ModelSpec.from_params({}) == ModelSpec()


def test_executor_and_cloud_defaults_are_one_spec():
    from dvfo_ros.nodes.executor import PARAMS
    assert ModelSpec.from_params({p.name: p.default for p in PARAMS}) == ModelSpec()
    assert _cloud_spec([]) == ModelSpec()


@pytest.mark.parametrize("spec", [ModelSpec.from_params(EXECUTOR), ModelSpec(seed=3, artifact="none"),
                                  ModelSpec("efficientnet_b0", "my_folder", "/data/model.pt", 5, 7, 96)])
def test_cloud_args_round_trip_through_dvfo_cloud_s_parser(spec):
    assert _cloud_spec(spec.cloud_args()) == spec


def test_cloud_args_pin_the_default_artifact(tmp_path, monkeypatch):
    monkeypatch.setenv("DVFO_ARTIFACT_DIR", str(tmp_path))
    spec = ModelSpec(dataset="only_here", num_classes=10, input_size=32)
    assert spec.resolve_artifact() is None and _cloud_spec(spec.cloud_args()) == ModelSpec(
        dataset="only_here", artifact="none", num_classes=10, input_size=32)
    CollaborativeModel.from_zoo("resnet18", num_classes=10, input_size=16).save_artifact(
        str(tmp_path / "resnet18_only_here.pt"))
    assert spec.resolve_artifact() == str(tmp_path / "resnet18_only_here.pt")
    assert _cloud_spec(spec.cloud_args()) == spec.pinned() and spec.pinned().artifact == spec.resolve_artifact()
    assert "--dataset" in spec.cloud_args() and "only_here" in spec.cloud_args()


def test_pipeline_s_cloud_child_gets_the_executor_s_whole_spec():
    from dvfo_ros.nodes.graph import cloud_arguments
    args = cloud_arguments("tcp://127.0.0.1:6000", EXECUTOR)
    ns = cloud.build_parser().parse_args(args)
    assert ns.bind == "tcp://127.0.0.1:6000" and ModelSpec.from_args(ns) == ModelSpec.from_params(EXECUTOR)


def test_load_none_is_the_untrained_zoo_model():
    m = ModelSpec(artifact="none", num_classes=10, input_size=32).load()
    assert m.meta["model"] == "resnet18" and int(m.meta["num_classes"]) == 10 and int(m.meta["input_size"]) == 32
    assert m.meta["artifact_id"] == "zoo:resnet18:6:10:0" and m.feature_shape == (128, 4, 4)


def test_an_artifact_of_another_model_or_cut_is_refused_in_one_line(tmp_path):
    path = str(tmp_path / "m.pt")
    CollaborativeModel.from_zoo("mobilenet_v2", num_classes=10, input_size=16).save_artifact(path)
    with pytest.raises(ArtifactError) as info:
        ModelSpec("resnet18", artifact=path).load()
    assert str(info.value) == f"artifact {path} holds mobilenet_v2, not resnet18"
    with pytest.raises(ArtifactError, match="cut at split 7, not 5"):
        ModelSpec("mobilenet_v2", artifact=path, split=5).load()
    assert ModelSpec("mobilenet_v2", artifact=path).load().meta["model"] == "mobilenet_v2"


def test_add_arguments_gives_a_cli_the_same_flags():
    p = argparse.ArgumentParser()
    ModelSpec.add_arguments(p)
    assert ModelSpec.from_args(p.parse_args(["--model", "mobilenet_v2", "--split", "7"])) == ModelSpec(
        "mobilenet_v2", split=7)
    with pytest.raises(SystemExit):
        p.parse_args(["--model", "alexnet"])                    # the zoo is the choice list
