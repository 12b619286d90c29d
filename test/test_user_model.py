"""A user's own model, the input geometry and the device: what a team with its own network notices.

- a torchvision state_dict (or TorchScript) + labels file -> dvfo-artifact import -> the executor classifies
  with the user's label names in vision_msgs Classification / LabelInfo, and at xi = 0 it is the user's model;
- keep_aspect (letterbox) and crop (centre crop) give the expected input tensor for a non-square frame;
- device=cuda on a machine without CUDA is refused at start with the reason (documented in the README).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from dvfo_ros.core.inference.collab import IMAGENET_MEAN, IMAGENET_STD, ArtifactError, CollaborativeModel
from dvfo_ros.core.inference.edge import InputBuffer, letterbox_layout

MEAN, STD = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
LABELS = ["forklift", "pallet", "person"]


def _normalised(rgb: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(rgb.astype(np.float32)).permute(2, 0, 1)[None] / 255.0
    return (x - MEAN.view(1, 3, 1, 1)) / STD.view(1, 3, 1, 1)


def test_keep_aspect_letterboxes_and_crop_takes_the_centre_of_a_non_square_frame():
    frame = np.zeros((20, 40, 3), np.uint8)                   # 2:1, left half red, right half blue
    frame[:, :20, 0] = 255
    frame[:, 20:, 2] = 255
    frame[:, 18:22, 1] = 200                                  # a green bar across the centre
    stretch = InputBuffer(8, MEAN, STD)(frame).clone()
    letter = InputBuffer(8, MEAN, STD, mode="keep_aspect")(frame).clone()
    crop = InputBuffer(8, MEAN, STD, mode="crop")(frame).clone()
    # letterbox: the whole frame scaled to 8 x 4 in rows 2..5; the bands above and below are the mean colour
    # (0 after normalising, up to its 8-bit rounding), so the padding says nothing to the network
    assert letterbox_layout(20, 40, 8) == (2, 0, 4, 8)
    assert letter[0, :, :2].abs().max() < 0.01 and letter[0, :, 6:].abs().max() < 0.01
    import cv2
    inner = cv2.resize(frame, (8, 4), interpolation=cv2.INTER_AREA)
    assert torch.allclose(letter[0, :, 2:6], _normalised(inner)[0], atol=1e-6)
    # crop: the centre 20 x 20 (red 10..19, green bar, blue 20..29), no stretching, none of the outer columns
    centre = cv2.resize(frame[:, 10:30], (8, 8), interpolation=cv2.INTER_AREA)
    assert torch.allclose(crop, _normalised(centre), atol=1e-6)
    # today's default squeezes the whole 2:1 frame into the square
    assert torch.allclose(stretch, _normalised(cv2.resize(frame, (8, 8), interpolation=cv2.INTER_AREA)), atol=1e-6)
    assert not torch.allclose(crop, stretch)
    # the same buffer serves frame after frame (no per-frame tensor), and a square frame after a letterboxed
    # one repaints the canvas
    buf = InputBuffer(8, MEAN, STD, mode="keep_aspect")
    first = buf(frame)
    assert buf(frame).data_ptr() == first.data_ptr()
    square = np.full((16, 16, 3), 255, np.uint8)
    assert torch.allclose(buf(square), _normalised(np.full((8, 8, 3), 255, np.uint8)))


def test_device_cuda_without_cuda_is_refused_with_the_reason_and_auto_falls_back_to_cpu(monkeypatch):
    from rclpy.parameter import Parameter

    from dvfo_ros.core.inference.device import DeviceError, resolve_device
    from rosutil import ros_context
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)   # a GPU machine behaves as this one
    with pytest.raises(DeviceError, match="device cuda: CUDA is not available"):
        resolve_device("cuda")
    auto = resolve_device("auto", fp16=True)
    assert auto.device.type == "cpu" and auto.dtype == torch.float32
    assert auto.note == "cpu, fp32 (device auto: no CUDA here): fp16 applies on CUDA only"
    from dvfo_ros.nodes.executor import ExecutorNode
    common = [Parameter("artifact", value="none"), Parameter("num_classes", value=10),
              Parameter("input_size", value=32), Parameter("cloud_endpoint", value="")]
    with ros_context() as ctx:
        with pytest.raises(DeviceError, match="CUDA is not available"):
            ExecutorNode(context=ctx, parameter_overrides=common + [Parameter("device", value="cuda")])
        ex = ExecutorNode(context=ctx, parameter_overrides=common + [Parameter("device", value="auto"),
                                                                      Parameter("fp16", value=True)])
        assert next(ex.model.parameters()).device.type == "cpu"
        assert ex.engine.placement.note.startswith("cpu, fp32")
        ex.destroy_node()


def _user_model(tmp_path):
    torch.manual_seed(3)
    net = torchvision.models.resnet18(num_classes=len(LABELS)).eval()
    weights = tmp_path / "my_resnet18.pt"
    torch.save({"state_dict": {"module." + k: v for k, v in net.state_dict().items()}}, weights)   # DataParallel
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(LABELS) + "\n\n")
    return net, str(weights), str(labels)


def test_import_refuses_weights_that_do_not_match_the_labels_or_the_architecture(tmp_path, capsys):
    from dvfo_ros.cli.artifact import main
    _, weights, _ = _user_model(tmp_path)
    two = tmp_path / "two.txt"
    two.write_text("a\nb\n")
    assert main(["import", "--arch", "resnet18", "--state-dict", weights, "--labels", str(two),
                 "--out", str(tmp_path / "x.pt"), "--input-size", "32"]) == 2
    assert "does the classifier have 2 outputs, one per label?" in capsys.readouterr().err
    assert main(["import", "--arch", "vgg16", "--state-dict", weights, "--labels", str(two),
                 "--out", str(tmp_path / "x.pt")]) == 2
    assert "choose one of resnet18" in capsys.readouterr().err
    with pytest.raises(ArtifactError, match="not a state_dict"):
        torch.save([1, 2], tmp_path / "junk.pt")
        from dvfo_ros.core.inference.user_model import read_weights
        read_weights(str(tmp_path / "junk.pt"))


def test_torchscript_and_state_dict_import_to_the_same_network_and_training_keeps_the_label_order(tmp_path):
    import cv2

    from dvfo_ros.cli.artifact import main
    net, weights, labels = _user_model(tmp_path)
    script = tmp_path / "my_ts.pt"
    torch.jit.trace(net, torch.zeros(1, 3, 32, 32)).save(str(script))
    assert main(["import", "--arch", "resnet18", "--torchscript", str(script), "--labels", labels,
                 "--out", str(tmp_path / "ts.pt"), "--input-size", "32"]) == 0
    from_ts = CollaborativeModel.from_artifact(str(tmp_path / "ts.pt"))
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(from_ts(x, 0.0), net(_normalise_batch(x)), atol=2e-2)
    # with a data set: ImageFolder folders sort as person/pallet/forklift would not; the labels file's order wins
    for i, name in enumerate(["person", "pallet", "forklift"]):
        (tmp_path / "images" / name).mkdir(parents=True)
        for k in range(4):
            img = np.full((24, 24, 3), 60 * i + 5 * k, np.uint8)
            cv2.imwrite(str(tmp_path / "images" / name / f"{k}.png"), img)
    out = tmp_path / "trained.pt"
    assert main(["import", "--arch", "resnet18", "--state-dict", weights, "--labels", labels, "--out", str(out),
                 "--input-size", "32", "--dataset", str(tmp_path / "images"), "--steps", "1",
                 "--calib-images", "8", "--no-progress"]) == 0
    meta = CollaborativeModel.from_artifact(str(out)).meta
    assert meta["class_names"] == LABELS and meta["dataset"].endswith("images") and len(meta["lambda_table"]) == 9


def _normalise_batch(x: torch.Tensor) -> torch.Tensor:
    return (x - MEAN.view(1, 3, 1, 1)) / STD.view(1, 3, 1, 1)


@pytest.mark.ros
def test_a_users_model_runs_in_the_executor_with_its_label_names(tmp_path):
    from rclpy.node import Node
    from rclpy.parameter import Parameter
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import Image

    import vision_ws
    from dvfo_ros.cli.artifact import main
    from dvfo_ros.msg import InferenceResult
    from dvfo_ros.nodes.qos import LATCHED
    from rosutil import ros_context, spin_until
    vision_ws.load()
    from vision_msgs.msg import Classification, LabelInfo

    net, weights, labels = _user_model(tmp_path)
    artifact = str(tmp_path / "warehouse.pt")
    assert main(["import", "--arch", "resnet18", "--state-dict", weights, "--labels", labels, "--out", artifact,
                 "--input-size", "32"]) == 0
    rgb = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    with torch.no_grad():
        expected = torch.softmax(net(_normalised(rgb))[0], 0)
    from dvfo_ros.nodes.executor import ExecutorNode
    with ros_context() as ctx:
        ex = ExecutorNode(context=ctx, parameter_overrides=[Parameter("artifact", value=artifact),
                                                            Parameter("cloud_endpoint", value="")])
        probe = Node("probe", context=ctx)
        results, classes, infos = [], [], []
        probe.create_subscription(InferenceResult, "dvfo/inference", results.append, QoSProfile(depth=10))
        probe.create_subscription(Classification, "dvfo/classification", classes.append, QoSProfile(depth=10))
        probe.create_subscription(LabelInfo, "dvfo/label_info", infos.append, LATCHED)
        pub = probe.create_publisher(Image, "camera/image_raw", QoSProfile(depth=10))
        assert spin_until(ctx, [ex, probe], lambda: pub.get_subscription_count() > 0
                          and ex.count_subscribers("dvfo/classification") > 0 and infos)
        msg = Image(height=32, width=32, encoding="rgb8", step=96)
        msg.data = rgb.tobytes()
        pub.publish(msg)
        assert spin_until(ctx, [ex, probe], lambda: results and classes)
        ex.destroy_node()
        probe.destroy_node()
    assert [(v.class_id, v.class_name) for v in infos[0].class_map] == list(enumerate(LABELS))
    r = results[0]
    assert r.top_classes[0] == int(expected.argmax())          # xi = 0: the user's own network
    assert np.allclose(r.top_scores, expected[r.top_classes].numpy(), atol=2e-3)   # (weights stored fp16)
    assert [h.class_id for h in classes[0].results] == [LABELS[i] for i in r.top_classes]
