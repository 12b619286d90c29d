"""dvfo-profile: measures the zoo's stages on this CPU, writes a profile the twin loads, sweeps
the clocks a backend can set and puts them back afterwards."""
import csv

import pytest

from dvfo_ros.cli.profile import grid_points, main
from dvfo_ros.core.inference.models import backbone_stages, build_model
from dvfo_ros.core.twin import DeviceTwin, load_profile
from dvfo_ros.core.twin.workload import model_workload
from fake_sysfs import build_linux_tree, read


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_sim_backend_writes_a_profile_the_twin_loads(tmp_path, capsys):
    out = tmp_path / "p.yaml"
    rc = main(["--backend", "sim", "--models", "mobilenet_v2", "--input-size", "32", "--repeats", "1",
               "--out", str(out), "--name", "this_ci_box", "--no-progress", "--plot", str(tmp_path / "fit.png")])
    assert rc == 0
    prof = load_profile(str(out))
    assert prof.name == "this_ci_box"
    assert len(prof.cpu_hz) == 1 and len(prof.gpu_hz) == 1          # sim clocks do not move this CPU
    assert 0 < prof.gpu_efficiency and 0 < prof.emc_efficiency
    rows = _rows(tmp_path / "p.csv")
    assert [r["stage"] for r in rows] == [n for n, _ in backbone_stages("mobilenet_v2", build_model("mobilenet_v2"))]
    assert all(float(r["latency_s"]) > 0 for r in rows)
    assert (tmp_path / "fit.png").stat().st_size > 1000
    # the calibrated twin predicts this machine's frame time within a factor of 3
    measured = sum(float(r["latency_s"]) for r in rows)
    twin = DeviceTwin(prof)
    work = model_workload("mobilenet_v2", split=1, input_size=32)
    hz = prof.cpu_hz[0]
    predicted = sum(twin.stage_times_s(layer, hz, prof.gpu_hz[0], prof.emc_hz[0])["t"] for layer in work.layers)
    assert measured / 3 < predicted < measured * 3
    assert "ms/frame measured" in capsys.readouterr().out


def test_linux_backend_sweeps_settable_cpu_levels_and_restores_them(tmp_path):
    root = tmp_path / "tree"
    build_linux_tree(str(root), cpus=2, khz=[800000, 1600000, 2400000])
    out = tmp_path / "lin.yaml"
    rc = main(["--backend", "linux", "--root", str(root), "--models", "resnet18", "--input-size", "32",
               "--repeats", "1", "--levels", "2", "--out", str(out), "--no-progress"])
    assert rc == 0
    assert sorted({int(r["cpu_hz"]) for r in _rows(tmp_path / "lin.csv")}) == [800_000_000, 2_400_000_000]
    assert load_profile(str(out)).cpu_hz == [800_000_000, 1_600_000_000, 2_400_000_000]
    d = "/sys/devices/system/cpu/cpu1/cpufreq"
    assert read(str(root), f"{d}/scaling_min_freq") == "800000"      # restored after profiling
    assert read(str(root), f"{d}/scaling_max_freq") == "2400000"


def test_grid_is_the_product_of_evenly_spaced_levels():
    table = {"cpu": [1, 2, 3, 4, 5], "gpu": [10, 20, 30], "emc": [7]}
    g = grid_points(table, 3, ["cpu", "gpu"])
    assert len(g) == 9
    assert {p["cpu"] for p in g} == {1, 3, 5} and {p["gpu"] for p in g} == {10, 20, 30}
    assert {p["emc"] for p in g} == {0}                               # not settable: left alone
    assert grid_points(table, 1, ["cpu"]) == [{"cpu": 5, "gpu": 0, "emc": 0}]


@pytest.mark.parametrize("argv,msg", [(["--models", "vgg99"], "unknown vgg99"),
                                      (["--repeats", "0"], "--repeats must be >= 1"),
                                      (["--input-size", "8"], "--input-size must be >= 32")])
def test_bad_input_is_one_line_and_exit_2(argv, msg, capsys, tmp_path):
    assert main(argv + ["--out", str(tmp_path / "x.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert msg in err and "\n" not in err and "Traceback" not in err
