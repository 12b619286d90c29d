"""dvfo-pipeline reads a ROS 2 params file the way rcl applies it to a node: `/**/node` in any
namespace, `node` and `/node` at the root only, `/ns/node` in that namespace, `/**` for all."""
import os

import pytest

from dvfo_ros.cli.pipeline import PipelineError, apply_sets, load_params

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write(tmp_path, text):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return str(path)


def test_packaged_file_applies_in_every_namespace():
    path = os.path.join(ROOT, "config", "pipeline.yaml")
    root, robot = load_params(path), load_params(path, namespace="robot1")
    assert root == robot == load_params(path, namespace="/fleet/robot1/")
    assert root["camera"]["width"] == 32 and root["executor"]["dataset"] == "digits"


def test_key_forms_match_as_rcl_does(tmp_path):
    path = _write(tmp_path, """
/**:
  ros__parameters: {eta: 0.1, common: 1}
/**/policy:
  ros__parameters: {eta: 0.2}
policy:
  ros__parameters: {offload_ratio: 0.3}
/policy:
  ros__parameters: {fusion_weight: 0.4}
/robot1/policy:
  ros__parameters: {offload_ratio: 0.9}
/*/camera:
  ros__parameters: {fps: 5.0}
recorder:
  ros__parameters: {topic: x}
""")
    root = load_params(path)
    assert root["policy"] == {"eta": 0.2, "common": 1, "offload_ratio": 0.3, "fusion_weight": 0.4}
    assert root["camera"] == {"eta": 0.1, "common": 1}                  # /*/camera needs exactly one namespace token
    assert root["recorder"] == {"eta": 0.1, "common": 1, "topic": "x"}  # a node the file names explicitly
    r1 = load_params(path, namespace="/robot1")
    assert r1["policy"] == {"eta": 0.2, "common": 1, "offload_ratio": 0.9}
    assert r1["camera"] == {"eta": 0.1, "common": 1, "fps": 5.0}
    assert r1["recorder"] == {"eta": 0.1, "common": 1}
    deep = load_params(path, namespace="/a/b")
    assert deep["policy"] == {"eta": 0.2, "common": 1} and deep["camera"] == {"eta": 0.1, "common": 1}


def test_later_keys_win_and_sets_apply(tmp_path):
    path = _write(tmp_path, """
camera:
  ros__parameters: {fps: 5.0}
/**/camera:
  ros__parameters: {fps: 7.0}
""")
    params = load_params(path)
    assert params["camera"] == {"fps": 7.0} and "executor" not in params
    apply_sets(params, ["camera.fps=2.5", "executor.model=mobilenet_v2"])
    assert params["camera"]["fps"] == 2.5 and params["executor"] == {"model": "mobilenet_v2"}


@pytest.mark.parametrize("text", ["- a list\n", "camera: 3\n", "camera:\n  ros__parameters: [1]\n", "/:\n  x: 1\n"])
def test_malformed_files_are_refused_with_a_reason(tmp_path, text):
    with pytest.raises(PipelineError, match="params file"):
        load_params(_write(tmp_path, text))
