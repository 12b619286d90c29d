"""A short CPU training run learns; dvfo-accuracy turns an artifact into the xi table and a PNG."""
import json

import pytest
import torch

from dvfo_ros.cli import accuracy
from dvfo_ros.core.inference.collab import CollaborativeModel
from dvfo_ros.core.inference.training import TrainConfig, train_collab

KEYS = {"xi", "accuracy", "accuracy_loss", "bytes_ratio", "edge_flops", "edge_ms"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(1)
    cfg = TrainConfig(model="resnet18", dataset="digits", input_size=16, epochs=1.0, batch_size=32,
                      max_train=960, lr=3e-3, calib_images=128)
    net, report = train_collab(cfg, progress=False, log=lambda s: None)
    path = str(tmp_path_factory.mktemp("art") / "r18_digits.pt")
    net.save_artifact(path)
    return net, report, path


def test_short_training_beats_chance_by_a_wide_margin(trained):
    net, report, _ = trained
    val = {round(r["xi"], 3): r["accuracy"] for r in report["lambda"]}
    assert val[0.0] > 0.5, val  # 10 classes: chance is 0.1
    assert val[0.5] > 0.5, val
    lam = dict(net.meta["lambda_table"])
    assert lam[0.0] == 1.0 and lam[1.0] == 0.0  # no cloud at xi=0, no edge at xi=1


def test_cli_writes_table_json_and_plot(trained, tmp_path, capsys):
    _, _, path = trained
    out_json, out_png = tmp_path / "rows.json", tmp_path / "curve.png"
    rc = accuracy.main(["--model", "resnet18", "--dataset", "digits", "--artifact", path, "--xi", "0", "0.5", "1",
                        "--json", str(out_json), "--plot", str(out_png), "--limit", "120",
                        "--bytes-frames", "10", "--timing-runs", "3"])
    assert rc == 0
    rows = json.loads(out_json.read_text())
    assert [r["xi"] for r in rows] == [0.0, 0.5, 1.0] and all(KEYS <= set(r) for r in rows)
    assert rows[0]["accuracy_loss"] == 0.0 and rows[0]["bytes_ratio"] == 0.0
    assert rows[0]["edge_flops"] > rows[1]["edge_flops"] > rows[2]["edge_flops"] == 0
    assert rows[1]["bytes_ratio"] > 0.0 and rows[2]["bytes_ratio"] > 0.0  # real codec frames were sent
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "whole-on-edge top-1" in capsys.readouterr().out


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DVFO_ARTIFACT_DIR", str(tmp_path))
    assert accuracy.main(["--model", "resnet18", "--dataset", "digits", "--no-plot",
                          "--artifact", str(tmp_path / "missing.pt")]) == 2
    err = capsys.readouterr().err
    assert "not found" in err and len(err.strip().splitlines()) == 1
    assert accuracy.main(["--model", "resnet18", "--dataset", "no_such_set", "--no-plot"]) == 2
    assert "no trained artifact" in capsys.readouterr().err


def test_cli_refuses_artifact_of_another_model(tmp_path, capsys):
    path = str(tmp_path / "m.pt")
    CollaborativeModel.from_zoo("mobilenet_v2", num_classes=10, input_size=16).save_artifact(path)
    assert accuracy.main(["--model", "resnet18", "--dataset", "digits", "--artifact", path, "--no-plot"]) == 2
    assert "holds mobilenet_v2" in capsys.readouterr().err


def test_offload_sparsity_zeroes_what_goes_on_the_wire(trained):
    """The L1 on the offloaded share makes those channels sparser (so fewer bytes), not the model worse."""
    from dvfo_ros.core.io.datasets import load_dataset
    from dvfo_ros.core.inference.training import to_tensor
    plain, _, _ = trained
    torch.set_num_threads(1)
    cfg = TrainConfig(model="resnet18", dataset="digits", input_size=16, epochs=1.0, batch_size=32,
                      max_train=960, lr=3e-3, calib_images=128, offload_sparsity=30.0)
    sparse, report = train_collab(cfg, progress=False, log=lambda s: None)
    x, _, _ = load_dataset("digits", "test", 16, 0)
    frames = to_tensor(x[:32])

    def share_sent(net):
        """Share of the map's activation mass in the channels offloaded at xi = 0.5."""
        with torch.no_grad():
            feats = net.head(frames)
        shares = []
        for i in range(len(feats)):
            _, off = net.split_channels(feats[i:i + 1], 0.5)
            shares.append(float(feats[i, off].abs().sum() / feats[i].abs().sum().clamp(min=1e-9)))
        return sum(shares) / len(shares)
    print("activation share sent: plain", share_sent(plain), "sparse", share_sent(sparse))
    assert share_sent(sparse) < 0.7 * share_sent(plain)
    val = {round(r["xi"], 3): r["accuracy"] for r in report["lambda"]}
    assert val[0.5] > 0.5, val
