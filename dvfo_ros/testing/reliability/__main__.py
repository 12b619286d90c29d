"""Reliability and security figures of dvfo_ros (issue 7): `make reliability` runs them all.

    .venv/bin/python -m dvfo_ros.testing.reliability                      # full length (~20 min on 2 cores)
    .venv/bin/python -m dvfo_ros.testing.reliability --figures curve,fuzz --quick

Figures (each from real runs: dvfo-cloud processes killed with SIGKILL, real sockets on 127.0.0.1):
  restart  composed pipeline at 30 fps for 60 s, cloud killed and restarted: frames lost, fallbacks, recovery
  fuzz     hypothesis + atheris on the server's request handling and the edge's reply decoder (100k each),
           plus malformed requests over a real socket: crashes, hangs, answered
  curve    CurveZMQ: clients without the right key get nothing; captured loopback bytes are not plaintext
  load     4 robot processes at 30 fps against one dvfo-cloud for 60 s: answered %, p95
  soak     composed pipeline at 30 fps for 10 min: RSS growth, socket descriptors
Prints a table and writes out/reliability.json (figures not run keep their previous entry).
"""
from __future__ import annotations

import argparse
import builtins
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from dvfo_ros.testing.reliability.common import REPO
from dvfo_ros.testing.reliability.curve import curve_figure

FIGURES = ("restart", "fuzz", "curve", "load", "soak")
Log = Callable[[str], None]


# ----------------------------------------------------------------------------- fuzz

def _hypothesis_campaign(runs: int, log: Log) -> Dict[str, Any]:
    from hypothesis import HealthCheck, given, settings, strategies as st

    from dvfo_ros.testing import fuzz

    class Draw:
        def __init__(self, data: Any) -> None:
            self.data = data

        def int(self, lo: int, hi: int) -> int:
            return self.data.draw(st.integers(lo, hi))

        def bytes(self, max_len: builtins.int) -> bytes:   # builtins.int: `int` is the method above
            return self.data.draw(st.binary(max_size=max_len))

    server = fuzz.make_fuzz_server()
    tally = fuzz.Tally()
    replies = {"inputs": 0, "decoded": 0, "refused": 0, "crashes": 0}
    cfg = settings(max_examples=runs, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    t0 = time.monotonic()

    @cfg
    @given(data=st.data())
    def requests(data: Any) -> None:
        before = len(tally.failures)
        fuzz.handle_one(server, fuzz.malformed_request(Draw(data)), tally)
        assert len(tally.failures) == before, tally.failures[-1]

    @settings(cfg, max_examples=max(1, runs // 5))
    @given(data=st.data())
    def hostile_replies(data: Any) -> None:
        replies["inputs"] += 1
        try:
            ok = fuzz.check_reply_decoder(fuzz.malformed_reply(Draw(data))) is not None
        except Exception:
            replies["crashes"] += 1
            raise
        replies["decoded" if ok else "refused"] += 1

    for prop in (requests, hostile_replies):
        try:
            prop()
        except Exception as exc:  # noqa: BLE001 - a found failure is a result, not an abort
            tally.failures.append(f"{prop.__name__}: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}")
    server.stop()
    out = tally.as_dict()
    out.update(replies={k: v for k, v in replies.items()}, seconds=round(time.monotonic() - t0, 1))
    log(f"fuzz/hypothesis: {out['inputs']} requests, {replies['inputs']} replies, {out['crashes']} failures")
    return out


def _atheris_campaign(runs: int, log: Log) -> Dict[str, Any]:
    stats = tempfile.mktemp(prefix="dvfo-atheris-", suffix=".json")
    cmd = [sys.executable, os.path.join(REPO, "test", "fuzz_atheris.py"), f"-runs={runs}", "-timeout=5",
           "-max_len=4096", "-len_control=100", "-print_final_stats=1"]
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=max(600, runs // 20),
                              env=dict(os.environ, DVFO_FUZZ_STATS=stats))
    except FileNotFoundError as exc:
        return {"error": f"atheris did not run: {exc}"}
    except subprocess.TimeoutExpired:
        return {"error": "atheris campaign timed out", "hangs": 1}
    err = proc.stderr.splitlines()
    done = [line for line in err if " DONE " in line or "Done " in line]
    cov = next((line.split("cov:")[1].split()[0] for line in reversed(err) if "cov:" in line), None)
    try:
        with open(stats) as f:
            tally = json.load(f)
        os.unlink(stats)
    except (OSError, ValueError):
        tally = {}
    server = tally.get("server", {})
    out = dict(server, replies=tally.get("replies", {}), libfuzzer_runs=runs, returncode=proc.returncode,
               coverage_edges=int(cov) if cov else None, seconds=round(time.monotonic() - t0, 1),
               summary=done[-1].strip() if done else "")
    if proc.returncode != 0:
        out["crashes"] = max(1, out.get("crashes", 0))
        out["output_tail"] = err[-15:]
    log(f"fuzz/atheris: rc {proc.returncode}, {server.get('inputs', 0)} requests, coverage edges {cov}")
    return out


def fuzz_figure(runs: int = 100_000, socket_runs: int = 10_000, engines: Tuple[str, ...] = ("hypothesis", "atheris",
                "socket"), log: Log = print) -> Dict[str, Any]:
    from dvfo_ros.testing import fuzz
    from dvfo_ros.core.wire.link import CloudLink
    out: Dict[str, Any] = {"runs_per_engine": runs}
    if "atheris" in engines:
        out["atheris"] = _atheris_campaign(runs, log)
    if "hypothesis" in engines:
        out["hypothesis"] = _hypothesis_campaign(runs, log)
    if "socket" in engines:
        srv = fuzz.make_fuzz_server()
        srv.start_in_thread()
        try:
            t0 = time.monotonic()
            tally = fuzz.socket_campaign(srv.endpoint, socket_runs, seed=int(time.time()))
            with CloudLink(srv.endpoint) as link:
                alive = link.ping(3.0)
            out["socket"] = dict(tally.as_dict(), server_answers_after=alive, seconds=round(time.monotonic() - t0, 1))
        finally:
            srv.stop()
        log(f"fuzz/socket: {tally.inputs} requests over ZeroMQ, {sum(tally.answered.values())} answered")
    return out


# ----------------------------------------------------------------------------- table

def _rows(name: str, r: Dict[str, Any]) -> List[Tuple[str, Any, str, Optional[bool]]]:
    """(metric, value, target, met?) rows of one figure; met is None where there is no target."""
    if "error" in r and len(r) == 1:
        return [("error", r["error"], "", False)]
    if name == "restart":
        return [("frames in / results out", f"{r['frames_in']} / {r['results_out']}", "", None),
                ("frames lost", r["frames_lost"], "0", r["frames_lost"] == 0),
                ("fps achieved", r["fps_achieved"], f"{r['fps_target']:g}", None),
                ("fallbacks (all / while down / after recovery)",
                 f"{r['fallbacks']} / {r['fallbacks_while_down']} / {r['fallbacks_after_recovery']}", "", None),
                ("cloud killed -> first fallback (s)", r["kill_to_first_fallback_s"], "", None),
                ("restarted dvfo-cloud start-up (s)", r["restart_startup_s"], "", None),
                ("recovery after restart (s)", r["recovery_s"], "<= 1.0",
                 r["recovery_s"] is not None and r["recovery_s"] <= 1.0)]
    if name == "fuzz":
        rows: List[Tuple[str, Any, str, Optional[bool]]] = []
        for engine in ("hypothesis", "atheris", "socket"):
            e = r.get(engine)
            if not e:
                continue
            if "error" in e and "inputs" not in e:
                rows.append((f"{engine}", e["error"], "", False))
                continue
            n = e.get("inputs", 0) + e.get("replies", {}).get("inputs", 0)
            ok = e.get("crashes", 1) == 0 and e.get("hangs", 1) == 0 and e.get("answered") == e.get("inputs")
            extra = f", cov {e['coverage_edges']}" if e.get("coverage_edges") else ""
            rows.append((f"{engine}: inputs (requests + replies)", f"{n} ({e.get('inputs', 0)} + "
                         f"{e.get('replies', {}).get('inputs', 0)}){extra}", "", None))
            rows.append((f"{engine}: crashes / hangs / unanswered",
                         f"{e.get('crashes')} / {e.get('hangs')} / {e.get('inputs', 0) - e.get('answered', 0)}",
                         "0 / 0 / 0", ok))
            if e.get("stalls"):
                rows.append((f"{engine}: stalls (>1 s once, fast when re-run)", e["stalls"], "", None))
        return rows
    if name == "curve":
        refused = r["refused_clients"]
        return [("allowed client results", f"{r['allowed_client']['results']}/{r['requests']}", "all",
                 r["allowed_client"]["results"] == r["requests"]),
                ("replies to clients without the right key", sum(v["results"] + v["ping"] for v in refused.values()),
                 "0", all(v["results"] == 0 and not v["ping"] for v in refused.values())),
                ("CURVE capture: '\"model\"' / payload bytes seen",
                 f"{r['curve_capture']['marker_found']} / {r['curve_capture']['payload_prefix_found']}",
                 "False / False", not r["curve_capture"]["marker_found"]
                 and not r["curve_capture"]["payload_prefix_found"]),
                ("plaintext capture: '\"model\"' / payload bytes seen",
                 f"{r['plain_capture']['marker_found']} / {r['plain_capture']['payload_prefix_found']}",
                 "True / True", r["plain_capture"]["marker_found"] and r["plain_capture"]["payload_prefix_found"]),
                ("remote bind without keys refused", r["remote_bind_without_keys"]["exit_code"], "2",
                 r["remote_bind_without_keys"]["exit_code"] == 2)]
    if name == "load":
        return [("frames (clients x fps x s)", r["frames"], "", None),
                ("answered by the cloud (%)", r["answered_pct"], ">= 99", r["answered_pct"] >= 99.0),
                ("answered per client (%)", r["answered_pct_per_client"], "", None),
                ("frame latency p50 / p95 (ms)", f"{r['frame_ms_p50']} / {r['frame_ms_p95']}", "", None),
                ("cloud round trip p50 / p95 (ms)", f"{r['cloud_rtt_ms_p50']} / {r['cloud_rtt_ms_p95']}", "", None),
                ("fps achieved per client", r["fps_achieved_per_client"], f"{r['fps_target']:g}", None)]
    if name == "soak":
        stable = r["sockets_during"] is not None and r["sockets_during"][0] == r["sockets_during"][1]
        return [("frames lost", r["frames_lost"], "0", r["frames_lost"] == 0),
                ("RSS growth after warm-up (%)",
                 f"{r['rss_growth_pct']} ({r['rss_mb_start']} -> {r['rss_mb_end']} MiB)",
                 "< 5", r["rss_growth_pct"] < 5.0),
                ("dvfo-cloud RSS growth (%)", r["cloud_rss_growth_pct"], "< 5", r["cloud_rss_growth_pct"] < 5.0),
                ("sockets during run (min, max)", r["sockets_during"], "constant", stable),
                ("sockets before / after the run", f"{r['sockets_before_run']} / {r['sockets_after_run']}", "equal",
                 r["sockets_before_run"] == r["sockets_after_run"])]
    return []


def format_table(results: Dict[str, Dict[str, Any]]) -> str:
    lines = []
    for name, r in results.items():
        lines.append(f"== {name} ({r.get('settings', '')})")
        for metric, value, target, met in _rows(name, r):
            mark = "" if met is None else ("  ok" if met else "  MISSED")
            lines.append(f"  {metric:<52} {str(value):<34} {('target ' + target) if target else '':<22}{mark}")
    return "\n".join(lines)


def all_met(results: Dict[str, Dict[str, Any]]) -> bool:
    return all(met is not False for name, r in results.items() for *_, met in _rows(name, r))


# ----------------------------------------------------------------------------- CLI

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m dvfo_ros.testing.reliability", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--figures", default=",".join(FIGURES), help=f"comma-separated subset of {','.join(FIGURES)}")
    p.add_argument("--quick", action="store_true",
                   help="short versions: restart 30 s, load 10 s, soak 60 s, fuzz 5000 inputs")
    p.add_argument("--fps", type=float, default=30.0, help="camera / robot frame rate")
    p.add_argument("--deadline-ms", type=float, default=100.0, help="per-frame cloud deadline")
    p.add_argument("--restart-s", type=float, default=60.0, help="length of the kill/restart run")
    p.add_argument("--load-s", type=float, default=60.0, help="length of the load run")
    p.add_argument("--clients", type=int, default=4, help="robots in the load run")
    p.add_argument("--soak-s", type=float, default=600.0, help="length of the soak")
    p.add_argument("--fuzz-runs", type=int, default=100_000, help="malformed inputs per fuzzing engine")
    p.add_argument("--socket-runs", type=int, default=10_000, help="malformed requests sent over a real socket")
    p.add_argument("--fuzz-engines", default="hypothesis,atheris,socket", help="which fuzzing engines run")
    p.add_argument("--json", default=os.path.join(REPO, "out", "reliability.json"), help="results file (merged)")
    p.add_argument("--plot", default=os.path.join(REPO, "out", "reliability_soak.png"), help="soak plot (PNG)")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    figures = [f.strip() for f in args.figures.split(",") if f.strip()]
    unknown = [f for f in figures if f not in FIGURES]
    if unknown:
        parser.error(f"unknown figure(s) {', '.join(unknown)}; choose from {', '.join(FIGURES)}")
    if args.fps <= 0 or args.clients < 1 or min(args.restart_s, args.load_s, args.soak_s) <= 0 or args.fuzz_runs < 1:
        parser.error("--fps, --clients, durations and --fuzz-runs must be positive")
    if args.quick:
        args.restart_s, args.load_s, args.soak_s = 30.0, 10.0, 60.0
        args.fuzz_runs, args.socket_runs = 5000, 1000
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "SHM")
    # A DDS domain of our own: a demo or test running beside the figures must not feed them frames.
    os.environ.setdefault("ROS_DOMAIN_ID", str(101 + os.getpid() % 100))
    import torch
    torch.set_num_threads(1)
    from dvfo_ros.testing.reliability import runs

    def log(msg: str) -> None:
        print(f"[reliability] {msg}", file=sys.stderr, flush=True)

    jobs: Dict[str, Callable[[], Dict[str, Any]]] = {
        "restart": lambda: runs.restart_figure(args.restart_s, args.fps, deadline_ms=args.deadline_ms, log=log),
        "fuzz": lambda: fuzz_figure(args.fuzz_runs, args.socket_runs,
                                    tuple(e.strip() for e in args.fuzz_engines.split(",")), log=log),
        "curve": lambda: curve_figure(log=log),
        "load": lambda: runs.load_figure(args.clients, args.load_s, args.fps, args.deadline_ms, log=log),
        "soak": lambda: runs.soak_figure(args.soak_s, args.fps, args.deadline_ms, plot=args.plot, log=log),
    }
    settings = {"restart": f"{args.restart_s:g} s at {args.fps:g} fps", "fuzz": f"{args.fuzz_runs} per engine",
                "curve": "loopback relay capture",
                "load": f"{args.clients} clients x {args.fps:g} fps x {args.load_s:g} s",
                "soak": f"{args.soak_s:g} s at {args.fps:g} fps"}
    results: Dict[str, Dict[str, Any]] = {}
    for name in figures:
        log(f"{name}: running ({settings[name]})")
        load_before = os.getloadavg()[0]
        t0 = time.monotonic()
        try:
            r = jobs[name]()
        except Exception as exc:  # noqa: BLE001 - one figure failing must not lose the others
            r = {"error": f"{type(exc).__name__}: {' '.join(str(exc).split())}"}
        r.update(settings=settings[name], wall_s=round(time.monotonic() - t0, 1),
                 loadavg_1min=[round(load_before, 2), round(os.getloadavg()[0], 2)], cpus=os.cpu_count(),
                 when=time.strftime("%Y-%m-%d %H:%M:%S"))
        results[name] = r
        print(format_table({name: r}), flush=True)
    previous: Dict[str, Any] = {}
    if os.path.exists(args.json):
        try:
            with open(args.json) as f:
                previous = json.load(f)
        except (OSError, ValueError):
            previous = {}
    previous.update(results)
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(previous, f, indent=2, default=str)
    print(f"\nreliability figures\n{format_table(results)}\nwritten to {args.json}")
    return 0 if all_met(results) else 1


if __name__ == "__main__":
    sys.exit(main())
