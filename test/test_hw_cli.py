"""dvfo-hw: shows what a backend finds, applies clamped clocks, restores them on exit."""
import json

from dvfo_ros.cli.hw import main, parse_freq
from fake_sysfs import build_jetson_tree, read, refuse_writes


def test_set_applies_clamped_prints_json_and_restores(tmp_path, capsys):
    root = str(tmp_path)
    info = build_jetson_tree(root, "orin")
    before = read(root, f"{info['gpu_dir']}/max_freq")
    rc = main(["--backend", "jetson", "--root", root, "--set", "cpu=1.2G,gpu=700M,emc=2133MHz", "--json"])
    assert rc == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["backend"] == "jetson" and rep["profile"] == "orin_nx"
    assert rep["table_hz"]["gpu"] == info["gpu_hz"]
    assert rep["apply"]["applied"] == {"cpu": 1190400000, "gpu": 612000000, "emc": 2133000000}
    assert rep["apply"]["errors"] == [] and rep["restore_errors"] == []
    assert set(rep["reading"]["rails_w"]) == {"VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"}
    assert read(root, f"{info['gpu_dir']}/max_freq") == before          # put back on exit


def test_keep_leaves_the_clocks_set(tmp_path, capsys):
    root = str(tmp_path)
    info = build_jetson_tree(root, "tx2")
    assert main(["--backend", "jetson", "--root", root, "--set", "gpu=420750000", "--keep"]) == 0
    assert read(root, f"{info['gpu_dir']}/max_freq") == "420750000"
    assert "--keep" in capsys.readouterr().out


def test_refused_write_exits_1_with_an_error_line(tmp_path, capsys):
    root = str(tmp_path)
    info = build_jetson_tree(root, "nano")
    refuse_writes(root, f"{info['cpu0']}/scaling_min_freq")
    rc = main(["--backend", "jetson", "--root", root, "--set", "cpu=100M"])
    out = capsys.readouterr().out
    assert rc == 1
    assert f"ERROR write 102000 to {info['cpu0']}/scaling_min_freq refused" in out


def test_usage_errors_exit_2(capsys):
    assert main(["--set", "cpu=fast"]) == 2
    assert main(["--set", "tpu=1G"]) == 2
    err = capsys.readouterr().err
    assert "unknown domain 'tpu'" in err and "Traceback" not in err


def test_frequency_units():
    assert parse_freq("1.2G") == 1_200_000_000
    assert parse_freq("600MHz") == 600_000_000
    assert parse_freq("204000000") == 204_000_000


def test_this_machine_auto_reports_the_sim(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("hardware backend: ") and "backend:" in out
