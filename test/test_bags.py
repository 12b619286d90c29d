"""rosbag2 bags without ROS: dvfo_ros's types decode from their .msg definitions, both storages round-trip,
and damaged bags, foreign definitions and unknown types give one warning naming file and topic."""
import json
from pathlib import Path

import numpy as np
import pytest
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from dvfo_ros.core.io import bagtypes
from dvfo_ros.core.io.bags import BagError, BagReader, BagWriter, make_message

REPO = Path(__file__).resolve().parents[1]
TR = "dvfo_ros/msg/Transition"


def _write(path, storage, n=50, store=None):
    with BagWriter(path, storage, typestore=store) as w:
        w.add_topic("/dvfo/transition", TR)
        w.add_topic("/dvfo/inference", "dvfo_ros/msg/InferenceResult")
        for i in range(n):
            ts = 10**18 + i * 33_000_000
            w.write("/dvfo/transition", ts, make_message(
                w.store, TR, ts, step=i, policy="ondemand", eta=0.5, state_names=["a", "b"],
                state=np.asarray([i, 1], np.float32), action=np.asarray([1, 2, 3, 4], np.int32),
                action_values=np.asarray([1e9, 5e8, 1.6e9, 0.5], np.float32), reward=-0.5 * i,
                next_state=np.asarray([i + 1, 1], np.float32), done=False))
            w.write("/dvfo/inference", ts + 1, make_message(
                w.store, "dvfo_ros/msg/InferenceResult", ts, seq=i, total_ms=10.0 + i, energy_j=0.01 * i))
    return path


def test_embedded_definitions_match_msg_dir():
    defs, where = bagtypes.load_definitions(REPO / "msg")
    assert bagtypes.parse_definitions(defs) == bagtypes.parse_definitions(bagtypes.EMBEDDED_MSGS), \
        "msg/*.msg changed: update EMBEDDED_MSGS in dvfo_ros/core/bagtypes.py"


def test_type_hashes_are_the_ones_rosidl_builds():
    store = bagtypes.make_typestore()
    built = list(REPO.glob("build/**/share/dvfo_ros/msg/*.json"))
    if not built:
        pytest.skip("interfaces not built here")
    for f in built:
        want = json.loads(f.read_text())["type_hashes"][0]["hash_string"]
        assert store.hash_rihs01(bagtypes.typename(f.stem)) == want, f.stem


def test_embedded_copy_is_used_without_msg_files(tmp_path, monkeypatch):
    monkeypatch.setattr(bagtypes, "candidate_msg_dirs", lambda: [tmp_path / "nowhere"])
    defs, where = bagtypes.load_definitions()
    assert "embedded" in where
    store = bagtypes.make_typestore()
    assert TR in store.types and store.hash_rihs01(TR).startswith("RIHS01_")


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_round_trip_both_storages(tmp_path, storage):
    bag = _write(tmp_path / "bag", storage)
    meta = (bag / "metadata.yaml").read_text()
    assert "version: 8" in meta and f"storage_identifier: {storage}" in meta
    assert "type_description_hash:" in meta and "RIHS01_" in meta
    warnings = []
    with BagReader(bag, warn=warnings.append) as r:
        assert {t: i.count for t, i in r.topics().items()} == {"/dvfo/transition": 50, "/dvfo/inference": 50}
        msgs = list(r.messages(topics=["/dvfo/transition"]))
    assert warnings == []
    assert [m.msg.step for m in msgs] == list(range(50))
    assert msgs[7].msg.reward == pytest.approx(-3.5)
    assert list(msgs[7].msg.state) == [7.0, 1.0] and msgs[7].msg.policy == "ondemand"


def test_truncated_mcap_reads_what_is_complete(tmp_path):
    bag = _write(tmp_path / "bag", "mcap", n=6000)
    f = bag / "bag.mcap"
    with open(f, "r+b") as fh:
        fh.truncate(f.stat().st_size * 2 // 3)
    warnings = []
    with BagReader(bag, warn=warnings.append) as r:
        n = sum(1 for _ in r.messages(topics=["/dvfo/transition"]))
    assert 0 < n < 6000
    assert any("bag.mcap" in w and "truncated" in w for w in warnings), warnings


def test_missing_metadata_reads_the_storage_file(tmp_path):
    bag = _write(tmp_path / "bag", "mcap")
    (bag / "metadata.yaml").unlink()
    warnings = []
    with BagReader(bag, warn=warnings.append) as r:
        assert sum(1 for _ in r.messages()) == 100
    assert any("metadata.yaml" in w for w in warnings)


def test_damaged_sqlite_is_one_clear_error(tmp_path):
    bag = _write(tmp_path / "bag", "sqlite3", n=3000)
    f = bag / "bag.db3"
    with open(f, "r+b") as fh:
        fh.truncate(f.stat().st_size // 2)
    with pytest.raises(BagError, match="bag"):
        with BagReader(bag) as r:
            list(r.messages())


def test_other_definition_is_decoded_with_the_bags_own(tmp_path):
    store = get_typestore(Stores.LATEST)   # an older Transition: no eta, no action_values
    store.register(get_types_from_msg("std_msgs/Header header\nuint64 step\nstring policy\nstring[] state_names\n"
                                      "float32[] state\nint32[] action\nfloat32 reward\nfloat32[] next_state\n"
                                      "bool done\n", TR))
    bag = tmp_path / "old"
    with BagWriter(bag, "mcap", typestore=store) as w:
        w.add_topic("/dvfo/transition", TR)
        for i in range(5):
            w.write("/dvfo/transition", i + 1, make_message(store, TR, i, step=i, reward=1.0 * i,
                                                            state=np.ones(3, np.float32)))
    warnings = []
    with BagReader(bag, warn=warnings.append) as r:
        msgs = list(r.messages())
    assert [m.msg.reward for m in msgs] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert len(warnings) == 1 and "/dvfo/transition" in warnings[0] and "different definition" in warnings[0]


def test_unknown_type_without_definition_is_skipped_with_warning(tmp_path):
    from rosbags.rosbag2 import StoragePlugin, Writer
    bag = tmp_path / "unk"
    with Writer(bag, version=8, storage_plugin=StoragePlugin.MCAP) as w:
        c = w.add_connection("/mystery", "foo_msgs/msg/Bar", msgdef="", rihs01="RIHS01_" + "0" * 64)
        w.write(c, 1, b"\x00\x01\x00\x00")
    warnings = []
    with BagReader(bag, warn=warnings.append) as r:
        assert list(r.messages()) == []
    assert any("/mystery" in w and "foo_msgs/msg/Bar" in w and "skipped" in w for w in warnings), warnings


def test_not_a_bag_is_a_bag_error(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.txt").write_text("hello")
    with pytest.raises(BagError, match=str(tmp_path / "x")):
        BagReader(tmp_path / "x")
    with pytest.raises(BagError, match="no such bag"):
        BagReader(tmp_path / "missing")


def test_writer_refuses_to_overwrite(tmp_path):
    bag = _write(tmp_path / "bag", "mcap", n=2)
    before = (bag / "bag.mcap").read_bytes()
    with pytest.raises(BagError, match="already exists"):
        BagWriter(bag, "mcap")
    assert (bag / "bag.mcap").read_bytes() == before


def test_bag_info_cli(tmp_path, capsys):
    from dvfo_ros.cli.bag import main
    bag = tmp_path / "synth"
    assert main(["synth", str(bag), "--frames", "300", "--policy", "max_freq", "--storage", "sqlite3"]) == 0
    capsys.readouterr()
    assert main(["info", str(bag)]) == 0
    out = capsys.readouterr().out
    assert "/dvfo/transition" in out and "dvfo_ros/msg/Transition" in out and "300" in out
    assert "rewards:   n=300" in out
    assert "max_freq" in out and "duration:  10.0 s" in out
    assert main(["info", str(bag), "--json", str(tmp_path / "s.json")]) == 0
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["topics"]["/dvfo/inference"]["count"] == 300
    p = s["policies"]["max_freq"]
    assert p["frames"] == 300 and p["energy_j_per_frame"] > 0 and p["latency_ms_p95"] >= p["latency_ms_mean"] > 0
    assert main(["info", str(tmp_path / "nope")]) == 1
    assert "no such bag" in capsys.readouterr().err


def test_bag_info_counts_error_frames_apart_from_the_classified_ones(tmp_path, capsys):
    """A frame the executor could not classify (bad encoding) is an error result: counted in its own
    column, never averaged into latency or energy."""
    from dvfo_ros.cli.bag import main
    from dvfo_ros.core.io.summary import format_table, summarise
    bag = tmp_path / "err"
    with BagWriter(bag, "mcap") as w:
        w.add_topic("/dvfo/inference", "dvfo_ros/msg/InferenceResult")
        for i in range(10):
            bad = i % 5 == 4
            w.write("/dvfo/inference", 10**18 + i, make_message(
                w.store, "dvfo_ros/msg/InferenceResult", 10**18 + i, seq=i, total_ms=0.0 if bad else 20.0,
                energy_j=0.0 if bad else 0.1, error=bad, error_reason="unsupported encoding 'yuv9'" if bad else ""))
    assert main(["info", str(bag), "--json", str(tmp_path / "s.json")]) == 0
    assert "errors" in capsys.readouterr().out
    p = json.loads((tmp_path / "s.json").read_text())["policies"]["unknown"]
    assert p["frames"] == 8 and p["errors"] == 2 and p["latency_ms_mean"] == pytest.approx(20.0)
    rows = [{"seq": i, "total_ms": 0.0 if i == 3 else 30.0, "energy_j": 0.2, "bytes_sent": 0, "fallback": False,
             "error": i == 3, "error_reason": "corrupt data" if i == 3 else ""} for i in range(4)]
    s = summarise(4, rows, "static", "xavier_nx")
    assert s["results_out"] == 4 and s["errors"] == 1 and s["latency_ms_mean"] == pytest.approx(30.0)
    assert "1: corrupt data" in format_table(s)
