"""dvfo-bag: look inside a recorded bag, or make a synthetic one to try offline training without a robot.

    dvfo-bag info run1/                     topics, counts, duration, rewards, energy/latency per policy
    dvfo-bag info run1/ --json run1.json
    dvfo-bag synth demo_bag --frames 3000 --policy ondemand --storage sqlite3

``synth`` runs a policy in the device twin and writes the same topics the pipeline publishes
(Transition, Observation, DvfoAction, DeviceState, InferenceResult) as a real rosbag2 bag.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from array import array
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from dvfo_ros.cli.common import error, format_table
from dvfo_ros.core.io.bags import STORAGES, BagError, BagReader, BagWriter


class _Stat:
    """Running count/mean/std/min/max (Welford), memory independent of the bag's length."""

    def __init__(self) -> None:
        self.n, self.mean, self.m2, self.lo, self.hi = 0, 0.0, 0.0, math.inf, -math.inf

    def add(self, x: float) -> None:
        self.n += 1
        d = x - self.mean
        self.mean += d / self.n
        self.m2 += d * (x - self.mean)
        self.lo, self.hi = min(self.lo, x), max(self.hi, x)

    def as_dict(self) -> Dict[str, float]:
        if not self.n:
            return {"count": 0}
        return {"count": self.n, "mean": self.mean, "std": math.sqrt(self.m2 / self.n), "min": self.lo, "max": self.hi}


def summarize(path: str, warn=None) -> Dict[str, Any]:
    """Everything ``dvfo-bag info`` prints, in one streaming pass over the bag."""
    warnings: List[str] = []
    w = warn or warnings.append
    with BagReader(path, warn=w) as r:
        infos = r.topics()
        counts: Dict[str, int] = {t: 0 for t in infos}
        first = last = None
        rewards, nan_rewards = _Stat(), 0
        per_policy: Dict[str, Dict[str, Any]] = {}
        current = "unknown"

        def bucket(name: str) -> Dict[str, Any]:
            return per_policy.setdefault(name, {"energy": _Stat(), "latency": array("f"), "fallback": 0,
                                                "errors": 0, "xi": _Stat(), "correct": 0, "labelled": 0,
                                                "reward": _Stat(), "transitions": 0})
        for m in r.messages():
            counts[m.topic] += 1
            first = m.stamp_ns if first is None else min(first, m.stamp_ns)
            last = m.stamp_ns if last is None else max(last, m.stamp_ns)
            msg = m.msg
            if m.msgtype in ("dvfo_ros/msg/DvfoAction", "dvfo_ros/msg/Transition"):
                current = str(getattr(msg, "policy", "") or current)
            if m.msgtype == "dvfo_ros/msg/Transition":
                rew = float(getattr(msg, "reward", math.nan))
                b = bucket(current)
                b["transitions"] += 1
                if math.isfinite(rew):
                    rewards.add(rew)
                    b["reward"].add(rew)
                else:
                    nan_rewards += 1
            elif m.msgtype == "dvfo_ros/msg/InferenceResult" and bool(getattr(msg, "error", False)):
                bucket(current)["errors"] += 1          # not classified: out of the latency and energy figures
            elif m.msgtype == "dvfo_ros/msg/InferenceResult":
                b = bucket(current)
                b["energy"].add(float(getattr(msg, "energy_j", 0.0)))
                b["latency"].append(float(getattr(msg, "total_ms", 0.0)))
                b["xi"].add(float(getattr(msg, "offload_ratio", 0.0)))
                b["fallback"] += int(bool(getattr(msg, "fallback", False)))
                if int(getattr(msg, "label", -1)) >= 0:
                    b["labelled"] += 1
                    b["correct"] += int(bool(getattr(msg, "correct", False)))
        f = r._storage_file()
        size = sum(p.stat().st_size for p in Path(path).iterdir()) if Path(path).is_dir() else Path(path).stat().st_size
        duration = (last - first) / 1e9 if first is not None and last is not None else 0.0
        out: Dict[str, Any] = {
            "path": str(path), "storage": r.storage, "file": str(f) if f else "", "size_bytes": size,
            "salvaged": r.salvaged, "duration_s": duration, "start_ns": first or 0, "end_ns": last or 0,
            "messages": sum(counts.values()),
            "topics": {t: {"type": i.msgtype, "count": counts[t], "indexed_count": i.count,
                           "rate_hz": counts[t] / duration if duration > 0 else 0.0} for t, i in sorted(infos.items())},
            "rewards": dict(rewards.as_dict(), nan=nan_rewards),
            "policies": {}, "warnings": warnings,
        }
        for name, b in sorted(per_policy.items()):
            lat = np.asarray(b["latency"], np.float64)
            out["policies"][name] = {
                "frames": int(lat.size), "errors": int(b["errors"]),
                "energy_j_per_frame": b["energy"].mean if b["energy"].n else None,
                "latency_ms_mean": float(lat.mean()) if lat.size else None,
                "latency_ms_p95": float(np.percentile(lat, 95)) if lat.size else None,
                "offload_ratio_mean": b["xi"].mean if b["xi"].n else None,
                "fallback_share": b["fallback"] / lat.size if lat.size else None,
                "accuracy": b["correct"] / b["labelled"] if b["labelled"] else None,
                "transitions": b["transitions"], "reward_mean": b["reward"].mean if b["reward"].n else None}
    return out


def print_summary(s: Dict[str, Any]) -> None:
    print(f"bag:       {s['path']} ({s['storage']}, {s['size_bytes'] / 2**20:.1f} MiB"
          f"{', salvaged from a damaged file' if s['salvaged'] else ''})")
    print(f"duration:  {s['duration_s']:.1f} s, {s['messages']} messages")
    print("topics:")
    print(format_table(((t, i["type"], i["count"], i["rate_hz"]) for t, i in s["topics"].items()),
                       ("topic", "type", "messages", "Hz"), floatfmt=("", "", "", ".1f"), indent="  "))
    rw = s["rewards"]
    if rw.get("count"):
        print(f"rewards:   n={rw['count']} mean={rw['mean']:.4f} std={rw['std']:.4f} min={rw['min']:.4f} "
              f"max={rw['max']:.4f}" + (f"  ({rw['nan']} NaN)" if rw["nan"] else ""))
    else:
        print("rewards:   no Transition messages" + (f" ({rw['nan']} NaN)" if rw["nan"] else ""))
    if s["policies"]:
        print(format_table(((name, p["frames"], p["errors"], p["energy_j_per_frame"], p["latency_ms_mean"],
                             p["latency_ms_p95"], p["offload_ratio_mean"], p["fallback_share"], p["accuracy"],
                             p["reward_mean"]) for name, p in s["policies"].items()),
                           ("policy", "frames", "errors", "E J/frame", "lat ms", "p95 ms", "xi", "fallback", "acc",
                            "reward"),
                           floatfmt=("", "", "", ".4f", ".1f", ".1f", ".2f", ".2f", ".2f", ".4f"), indent="  "))
    for w in s["warnings"]:
        print(f"warning: {w}")


def synth(out: str, frames: int, policy: str = "ondemand", storage: str = "mcap", profile: str = "xavier_nx",
          eta: float = 0.5, seed: int = 0, explore: float = 0.0, hz: float = 30.0, progress: bool = False,
          nan_every: int = 0) -> Dict[str, int]:
    """Run ``policy`` in the twin for ``frames`` frames and record what the pipeline would publish."""
    from tqdm import tqdm

    from dvfo_ros.core.policies import make_policy
    from dvfo_ros.core.mdp import STATE_NAMES, RewardConfig, SimEnv
    from dvfo_ros.core.io.bagtypes import DEFAULT_TOPICS

    env = SimEnv(profile, seed=seed, reward_cfg=RewardConfig(eta=eta))
    space = env.action_space
    actor = make_policy(policy, space)
    actor.train(False)
    rng = np.random.default_rng(seed)
    period_ns = int(1e9 / hz)
    t0 = 1_700_000_000 * 10**9
    with BagWriter(out, storage) as w:
        T = {t.rsplit("/", 1)[-1]: t for t in DEFAULT_TOPICS}
        for t, mt in DEFAULT_TOPICS.items():
            w.add_topic(t, mt)
        types = w.store.types
        Time, Header = types["builtin_interfaces/msg/Time"], types["std_msgs/msg/Header"]
        Tr, Ac = types["dvfo_ros/msg/Transition"], types["dvfo_ros/msg/DvfoAction"]
        Ob, Ir = types["dvfo_ros/msg/Observation"], types["dvfo_ros/msg/InferenceResult"]
        Ds = types["dvfo_ros/msg/DeviceState"]
        names = list(STATE_NAMES)
        s = env.reset()
        energy_total = 0.0
        for i in tqdm(range(frames), desc="synth", unit=" frames", disable=not progress, file=sys.stderr):
            ts = t0 + i * period_ns
            hdr = Header(stamp=Time(sec=ts // 10**9, nanosec=ts % 10**9), frame_id="")
            a = np.asarray(actor.act(s), np.int64)
            if explore > 0 and rng.random() < explore:
                a = space.sample(rng)
            cmd = space.to_command(a)
            s2, r, done, info = env.step(a)
            energy_total += info["energy_j"]
            av = np.asarray([cmd["cpu_freq_hz"], cmd["gpu_freq_hz"], cmd["emc_freq_hz"], cmd["offload_ratio"]],
                            np.float32)
            w.write(T["observation"], ts, Ob(header=hdr, seq=i, names=names, values=np.asarray(s, np.float32)))
            w.write(T["action"], ts + 1000, Ac(
                header=hdr, seq=i, policy=policy, cpu_freq_hz=int(cmd["cpu_freq_hz"]),
                gpu_freq_hz=int(cmd["gpu_freq_hz"]), emc_freq_hz=int(cmd["emc_freq_hz"]),
                offload_ratio=float(cmd["offload_ratio"]), fusion_weight=-1.0, split_index=-1, model_variant="",
                exit_point=-1, target="", decision_ms=0.0))
            w.write(T["inference"], ts + period_ns // 2, Ir(
                header=hdr, seq=i, model=env.model, split_index=-1, target="", top_classes=np.zeros(1, np.int32),
                top_scores=np.ones(1, np.float32), label=-1, correct=False, edge_ms=float(info["edge_ms"]),
                transfer_ms=float(info["transfer_ms"]), cloud_ms=0.0, total_ms=float(info["latency_ms"]),
                energy_j=float(info["energy_j"]), offload_ratio=float(cmd["offload_ratio"]), fusion_weight=-1.0,
                bytes_sent=int(info["bytes_sent"]), cloud_used=cmd["offload_ratio"] > 0, fallback=False,
                fallback_reason="", error=False, error_reason=""))
            reward = float("nan") if nan_every and i % nan_every == nan_every - 1 else float(r)
            w.write(T["transition"], ts + period_ns // 2 + 1000, Tr(
                header=hdr, step=i, policy=policy, eta=float(eta), state_names=names,
                state=np.asarray(s, np.float32), action=a.astype(np.int32), action_values=av, reward=reward,
                next_state=np.asarray(s2, np.float32), done=bool(done)))
            if i % 10 == 0:
                w.write(T["device_state"], ts + 2000, Ds(
                    header=hdr, backend="sim", profile=env.profile.name if hasattr(env.profile, "name") else profile,
                    cpu_freq_hz=int(cmd["cpu_freq_hz"]), gpu_freq_hz=int(cmd["gpu_freq_hz"]),
                    emc_freq_hz=int(cmd["emc_freq_hz"]), cpu_util=float(info.get("cpu_util", 0.0) or 0.0),
                    gpu_util=0.0, emc_util=0.0, rail_names=["total"],
                    rail_power_w=np.asarray([info["power_w"]], np.float32), power_w=float(info["power_w"]),
                    energy_j=energy_total, temperature_c=float(info["temperature_c"]), thermal_capped=False, error=""))
            s = env.reset() if done else s2
        counts = dict(w.counts)
    return counts


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="dvfo-bag", description="Summarise a rosbag2 bag of the DVFO pipeline, "
                                "or write a synthetic one from the device twin.")
    sub = p.add_subparsers(dest="cmd", required=True)
    pi = sub.add_parser("info", help="topics, counts, duration, reward statistics, energy/latency per policy")
    pi.add_argument("path", help="bag directory, or its .mcap/.db3 file")
    pi.add_argument("--json", default=None, metavar="FILE", help="also write the summary as JSON ('-' = stdout only)")
    ps = sub.add_parser("synth", help="record a policy running in the device twin as a bag (no robot needed)")
    ps.add_argument("out", help="bag directory to create (must not exist)")
    ps.add_argument("--frames", type=int, default=3000, help="frames (= transitions) to record (default 3000)")
    ps.add_argument("--policy", default="ondemand", help="behaviour policy (default ondemand)")
    ps.add_argument("--storage", choices=STORAGES, default="mcap", help="rosbag2 storage (default mcap)")
    ps.add_argument("--profile", default="xavier_nx", help="device profile of the twin (default xavier_nx)")
    ps.add_argument("--eta", type=float, default=0.5, help="energy/latency weight of the reward (default 0.5)")
    ps.add_argument("--explore", type=float, default=0.0,
                    help="share of frames with a random action instead of the policy's (default 0)")
    ps.add_argument("--hz", type=float, default=30.0, help="camera rate, sets the timestamps (default 30)")
    ps.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    args = p.parse_args(argv)
    if args.cmd == "info":
        try:
            s = summarize(args.path)
        except BagError as e:
            return error("dvfo-bag", e, code=1)
        if args.json == "-":
            print(json.dumps(s, indent=2, default=str))
            return 0
        print_summary(s)
        if args.json:
            Path(args.json).write_text(json.dumps(s, indent=2, default=str))
        return 0
    if args.frames < 1 or args.hz <= 0 or not 0 <= args.eta <= 1 or not 0 <= args.explore <= 1:
        p.error("--frames >= 1, --hz > 0, --eta and --explore in [0, 1]")
    try:
        counts = synth(args.out, args.frames, args.policy, args.storage, args.profile, args.eta, args.seed,
                       args.explore, args.hz, progress=True)
    except (BagError, ValueError) as e:
        return error("dvfo-bag", e, code=1)
    print(f"wrote {args.out} ({args.storage}): " + ", ".join(f"{t} {n}" for t, n in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
