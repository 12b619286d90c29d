"""dvfo-artifact: train writes to the per-user location ($DVFO_ARTIFACT_DIR, else XDG cache), list finds it."""
import json
import os

import pytest
import torch

from dvfo_ros.cli import artifact
from dvfo_ros.core.inference import collab


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory):
    """A tiny artifact trained by the command itself (a few steps at 16 px: seconds)."""
    d = tmp_path_factory.mktemp("artifacts")
    torch.set_num_threads(1)
    rc = artifact.main(["train", "--model", "resnet18", "--dataset", "digits", "--steps", "4", "--input-size", "16",
                        "--batch-size", "16", "--max-train", "128", "--calib-images", "32", "--max-val", "64",
                        "--threads", "1", "--no-progress", "--out-dir", str(d)])
    assert rc == 0
    return d


def test_train_writes_artifact_and_train_json(trained_dir):
    pt = trained_dir / "resnet18_digits.pt"
    side = json.loads((trained_dir / "resnet18_digits.train.json").read_text())
    assert pt.is_file() and side["meta"]["model"] == "resnet18" and side["meta"]["input_size"] == 16
    assert side["report"]["steps"] == 4


def test_list_finds_the_artifact_in_dvfo_artifact_dir(trained_dir, monkeypatch, capsys):
    monkeypatch.setenv("DVFO_ARTIFACT_DIR", str(trained_dir))
    assert collab.default_artifact("resnet18", "digits") == str(trained_dir / "resnet18_digits.pt")
    assert artifact.main(["list"]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if str(trained_dir) in ln)
    assert "resnet18" in line and "digits" in line and "$DVFO_ARTIFACT_DIR" in line and "MB" in line
    assert "%" in line                                   # the recorded validation accuracy
    assert "classes" in out and "input" in out and "split" in out


def test_existing_artifact_is_skipped_without_force(trained_dir, capsys):
    before = os.path.getmtime(trained_dir / "resnet18_digits.pt")
    assert artifact.main(["train", "--model", "resnet18", "--dataset", "digits", "--out-dir", str(trained_dir)]) == 0
    assert "exists; skipping" in capsys.readouterr().out
    assert os.path.getmtime(trained_dir / "resnet18_digits.pt") == before


def test_default_location_is_the_xdg_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("DVFO_ARTIFACT_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    want = str(tmp_path / "dvfo_ros" / "artifacts")
    assert collab.default_artifact_dir() == want and collab.artifact_dirs()[0] == want
    monkeypatch.setenv("DVFO_ARTIFACT_DIR", str(tmp_path / "mine"))
    assert collab.default_artifact_dir() == str(tmp_path / "mine") == collab.artifact_dirs()[0]


def test_bad_model_is_one_line_exit_2(tmp_path, capsys):
    assert artifact.main(["train", "--model", "resnet999", "--dataset", "digits", "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dvfo-artifact: error: unknown model 'resnet999'") and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_list_with_nothing_says_how_to_train(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DVFO_ARTIFACT_DIR", str(tmp_path))
    monkeypatch.setattr(collab, "artifact_dirs", lambda: [str(tmp_path)])
    assert artifact.main(["list"]) == 0
    assert "dvfo-artifact train --model" in capsys.readouterr().out
