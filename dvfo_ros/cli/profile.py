"""dvfo-profile: measure each zoo model's per-stage latency (and energy where a power source
exists) on THIS machine over a grid of clock settings, and write a twin profile YAML.

    dvfo-profile --out my_board.yaml                      # auto backend, all zoo models
    dvfo-profile --backend jetson --levels 3 --repeats 10 --out orin_measured.yaml
    dvfo-profile --backend linux --input-size 96 --repeats 3 --out this_pc.yaml --plot fit.png
    dvfo-profile cloud --out cpu_resnet18.yaml            # the cloud tail's batch x instances table

The grid is every combination of ``--levels`` evenly spaced levels of each domain the backend can
really set (just the current clocks where none can be set, or with the sim backend, whose clocks
do not change this CPU). The stage list is ``models.backbone_stages``, the same cut the executor
uses; per-stage work comes from ``workload.model_workload``. The twin's latency roofline
(``DeviceTwin.stage_times_s``) is then fitted to the measurements (compute efficiency, memory
efficiency, CPU cycles per kernel), power parameters are scaled to measured idle/busy power where
there is a power source, and the result is written with ``DeviceProfile.to_yaml`` so
``load_profile(path)`` and ``--profile path`` in the twin accept it. Raw measurements go to a CSV
beside it. Clocks set during profiling are restored at exit (also on Ctrl-C / SIGTERM).
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import itertools
import os
import socket
import statistics
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from dvfo_ros.cli.common import error
from dvfo_ros.core.hardware import BACKENDS, HardwareBackend, open_backend, restoring
from dvfo_ros.core.hardware.base import DOMAINS

REAL_CLOCK_BACKENDS = ("jetson", "linux", "nvml")
CPU_MACS_PER_CYCLE = 16.0   # one x86/ARM core, fp32 FMA: 2 pipes x 8 lanes (AVX2) / 2 x 4 x 2 (NEON)


def grid_points(table: Dict[str, List[int]], levels: int, settable: Sequence[str]) -> List[Dict[str, int]]:
    """All combinations of ``levels`` evenly spaced entries of each settable domain's table."""
    axes = []
    for d in DOMAINS:
        lv = table.get(d) or []
        if d not in settable or not lv:
            axes.append([0])
            continue
        n = min(levels, len(lv))
        idx = sorted({int(round(i)) for i in np.linspace(0, len(lv) - 1, n)}) if n > 1 else [len(lv) - 1]
        axes.append([lv[i] for i in idx])
    return [dict(zip(DOMAINS, combo)) for combo in itertools.product(*axes)]


def cpu_clock_hz_from_cpuinfo(root: str = "/") -> int:
    """Fallback CPU clock where cpufreq is absent (VMs, containers): /proc/cpuinfo 'cpu MHz'."""
    try:
        with open(os.path.join(root, "proc/cpuinfo"), encoding="utf-8") as f:
            mhz = [float(line.split(":")[1]) for line in f if line.lower().startswith("cpu mhz")]
        return int(max(mhz) * 1e6) if mhz else 0
    except (OSError, ValueError, IndexError):
        return 0


def measure_stages(model_name: str, input_size: int, repeats: int, warmup: int,
                   device: str = "cpu", fp16: bool = False) -> Tuple[List[str], np.ndarray]:
    """Per-stage wall time (s) of one frame on the executor's device (``device``/``fp16`` as its parameters):
    names and an array [repeats, stages]. On CUDA each stage is timed to its end (synchronised)."""
    import torch

    from dvfo_ros.core.inference.device import resolve_device, synchronize
    from dvfo_ros.core.inference.models import backbone_stages, build_model

    place = resolve_device(device, fp16)
    model = build_model(model_name, num_classes=1000).to(place.device, place.dtype)
    stages = backbone_stages(model_name, model)
    x0 = torch.randn(1, 3, input_size, input_size, generator=torch.Generator().manual_seed(0)).to(
        place.device, place.dtype)
    times = np.zeros((repeats, len(stages)))
    with torch.inference_mode():
        for r in range(warmup + repeats):
            x = x0
            for i, (_, module) in enumerate(stages):
                t0 = time.perf_counter()
                x = module(x)
                synchronize(place)
                dt = time.perf_counter() - t0
                if r >= warmup:
                    times[r - warmup, i] = dt
    return [n for n, _ in stages], times


def fit_roofline(rows: List[dict], macs_per_cycle: float, emc_bytes_per_cycle: float) -> Dict[str, float]:
    """Fit gpu_efficiency, emc_efficiency, cpu_cycles_per_kernel of the twin's stage roofline
    t = max(flops/(f_c*M*e_c), bytes/(f_m*B*e_m), kernels*k/f_cpu) to the measured stage times,
    least squares in log time weighted by each stage's share of the measured time (coordinate
    search on log grids: robust, no scipy needed)."""
    flops = np.array([r["flops"] for r in rows], float)
    nbytes = np.array([r["bytes"] for r in rows], float)
    kernels = np.array([max(r["kernels"], 1) for r in rows], float)
    f_c = np.array([r["compute_hz"] for r in rows], float)
    f_m = np.array([r["emc_hz"] for r in rows], float)
    f_cpu = np.array([r["cpu_hz"] for r in rows], float)
    t_meas = np.maximum(np.array([r["latency_s"] for r in rows], float), 1e-7)
    meas = np.log(t_meas)
    weight = t_meas / t_meas.sum()     # the stages that dominate a frame must fit best
    grids = {"e_c": np.logspace(-4, 0, 97), "e_m": np.logspace(-4, 0, 97), "k": np.logspace(1, 7, 121)}
    best = {"e_c": 0.1, "e_m": 0.5, "k": 2e4}

    def loss(p: Dict[str, float]) -> float:
        pred = np.maximum.reduce([flops / (f_c * macs_per_cycle * p["e_c"]),
                                  nbytes / (f_m * emc_bytes_per_cycle * p["e_m"]),
                                  kernels * p["k"] / f_cpu])
        return float(np.sum(weight * (np.log(np.maximum(pred, 1e-9)) - meas) ** 2))

    for _ in range(4):
        for key, values in grids.items():
            losses = [loss({**best, key: v}) for v in values]
            best[key] = float(values[int(np.argmin(losses))])
    # log-space fits are biased on totals: rescale all three terms so the summed time matches

    def total(p: Dict[str, float]) -> float:
        return float(np.maximum.reduce([flops / (f_c * macs_per_cycle * p["e_c"]),
                                        nbytes / (f_m * emc_bytes_per_cycle * p["e_m"]),
                                        kernels * p["k"] / f_cpu]).sum())
    scale = total(best) / float(t_meas.sum())
    best = {"e_c": best["e_c"] * scale, "e_m": best["e_m"] * scale, "k": best["k"] / scale}
    best["rms_log_error"] = loss(best) ** 0.5
    return best


def _voltage_for(base_v: object, table: List[int]) -> object:
    if isinstance(base_v, list) and len(base_v) != len(table):
        vals = [float(v) for v in base_v]
        return {"v_min": min(vals), "v_max": max(vals), "knee_hz": table[0]}
    return base_v


def build_parser() -> argparse.ArgumentParser:
    from dvfo_ros.core.inference.models import ZOO
    p = argparse.ArgumentParser(prog="dvfo-profile", description="Measure per-stage latency/energy of the "
                                "zoo models over clock settings and write a twin profile YAML.")
    p.add_argument("--backend", default="auto", choices=BACKENDS,
                   help="hardware backend (auto: jetson -> linux -> sim)")
    p.add_argument("--root", default="/", help="sysfs root (a copied tree for dry runs)")
    p.add_argument("--models", default=",".join(ZOO), help=f"comma-separated zoo models ({', '.join(ZOO)})")
    p.add_argument("--input-size", type=int, default=224, help="square input size in pixels")
    p.add_argument("--repeats", type=int, default=5, help="timed frames per model and clock setting")
    p.add_argument("--warmup", type=int, default=1, help="untimed frames first")
    p.add_argument("--levels", type=int, default=3, help="levels per settable clock domain on the grid")
    p.add_argument("--base", default=None, help="profile whose power model/tables fill what is not measured "
                   "(default: the detected board, else xavier_nx)")
    p.add_argument("--name", default=None, help="profile name (default: measured_<hostname>)")
    p.add_argument("--out", default="measured_profile.yaml", help="profile YAML to write")
    p.add_argument("--csv", default=None, help="raw measurements CSV (default: <out>.csv)")
    p.add_argument("--plot", default=None, help="optional PNG: measured vs fitted stage latency")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"),
                   help="where the network runs, as the executor's 'device' parameter (measure what it will use)")
    p.add_argument("--fp16", action="store_true", help="half precision on CUDA, as the executor's 'fp16'")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["cloud"]:                    # the server's batch x instances table (dvfo_ros.cli.profile_cloud)
        from dvfo_ros.cli.profile_cloud import main as cloud
        return cloud(argv[1:])
    args = build_parser().parse_args(argv)
    from dvfo_ros.core.inference.models import ZOO
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = [m for m in models if m not in ZOO]
    problems = []
    if bad or not models:
        problems.append(f"--models: unknown {', '.join(bad) or '(none given)'}; choose from {', '.join(ZOO)}")
    for opt, val, lo in (("--input-size", args.input_size, 32), ("--repeats", args.repeats, 1),
                         ("--levels", args.levels, 1), ("--threads", args.threads, 1), ("--warmup", args.warmup, 0)):
        if val < lo:
            problems.append(f"{opt} must be >= {lo}")
    from dvfo_ros.core.inference.device import DeviceError, resolve_device
    try:
        place = resolve_device(args.device, args.fp16)
    except DeviceError as e:
        problems.append(f"--device: {e}")
    if problems:
        return error("dvfo-profile", problems[0])
    print(f"measuring the network on {place.note}")
    try:
        return run(args, models)
    except KeyboardInterrupt:
        print("dvfo-profile: interrupted; clocks restored", file=sys.stderr)
        return 130


def run(args: argparse.Namespace, models: List[str]) -> int:
    import torch
    from tqdm import tqdm

    from dvfo_ros.core.twin import DeviceProfile, DeviceTwin, ProfileError, load_profile
    from dvfo_ros.core.twin.workload import model_workload

    torch.set_num_threads(args.threads)
    logs: List[str] = []
    try:
        backend: HardwareBackend = open_backend(args.backend, root=args.root, profile=args.base or "xavier_nx",
                                                log=logs.append, profile_given=args.base is not None)
    except Exception as e:   # noqa: BLE001 - one line, no traceback
        return error("dvfo-profile", e, code=1)
    for line in logs:
        print(line)
    with restoring(backend):             # clocks put back however the run ends (also on SIGINT / SIGTERM)
        base_name = args.base or (backend.profile if backend.name in ("jetson", "sim") else "xavier_nx")
        try:
            base = load_profile(base_name)
        except ProfileError as e:
            return error("dvfo-profile", e, context="--base")
        table = backend.table().as_dict()
        settable = [d for d in DOMAINS if table[d]] if backend.name in REAL_CLOCK_BACKENDS else []
        grid = grid_points(table, args.levels, settable)
        power_source = backend.name in ("jetson", "linux", "nvml")
        rows: List[dict] = []
        frames: List[dict] = []
        notes: List[str] = []
        bar = tqdm(total=len(grid) * len(models), desc="dvfo-profile", unit="run", disable=args.no_progress)
        for gi, point in enumerate(grid):
            want = {d: point[d] for d in settable}
            applied: Dict[str, int] = {}
            if want:
                res = backend.apply(want.get("cpu"), want.get("gpu"), want.get("emc"))
                applied = res.applied        # the pinned clock: cur_freq may lag a moment
                for err in res.errors:
                    if err not in notes:
                        notes.append(err)
                        tqdm.write(f"refused: {err}")
            time.sleep(0.05 if want else 0.0)
            idle = backend.read()
            if backend.name not in REAL_CLOCK_BACKENDS:      # the sim's clocks do not run this CPU
                idle = dataclasses.replace(idle, cpu_freq_hz=0, gpu_freq_hz=0, emc_freq_hz=0)
            cpu_hz = applied.get("cpu") or idle.cpu_freq_hz or cpu_clock_hz_from_cpuinfo(args.root) or base.cpu_hz[-1]
            gpu_hz = applied.get("gpu") or idle.gpu_freq_hz or 0
            emc_hz = applied.get("emc") or idle.emc_freq_hz or base.emc_hz[-1]
            for model in models:
                bar.set_postfix_str(f"{model} cpu {cpu_hz / 1e6:.0f} gpu {gpu_hz / 1e6:.0f} emc {emc_hz / 1e6:.0f} MHz")
                e0, t0 = backend.read().energy_j, time.monotonic()
                names, times = measure_stages(model, args.input_size, args.repeats, args.warmup, args.device, args.fp16)
                after = backend.read()
                wall = time.monotonic() - t0
                work = model_workload(model, split=1, input_size=args.input_size)
                med = np.median(times, axis=0)
                energy = (after.energy_j - e0) * times.sum() / max(wall, 1e-9) / args.repeats \
                    if power_source and after.energy_j > e0 else None
                frames.append(dict(grid=gi, model=model, cpu_hz=cpu_hz, gpu_hz=gpu_hz, emc_hz=emc_hz,
                                   latency_ms=float(np.median(times.sum(axis=1)) * 1e3),
                                   energy_j_per_frame=energy, idle_power_w=idle.power_w,
                                   busy_power_w=after.power_w))
                for i, layer in enumerate(work.layers):
                    rows.append(dict(grid=gi, model=model, stage=names[i], flops=int(layer["flops"]),
                                     bytes=int(layer["bytes"]), kernels=int(layer.get("kernels", 1)),
                                     cpu_hz=cpu_hz, gpu_hz=gpu_hz, emc_hz=emc_hz,
                                     compute_hz=gpu_hz or cpu_hz, latency_s=float(med[i]),
                                     latency_p90_s=float(np.percentile(times[:, i], 90))))
                bar.update(1)
        bar.close()
    on_gpu = any(r["gpu_hz"] for r in rows)
    macs = base.gpu_macs_per_cycle if on_gpu else CPU_MACS_PER_CYCLE * args.threads
    fit = fit_roofline(rows, macs, base.emc_bytes_per_cycle)

    cpu_levels = table["cpu"] if "cpu" in settable else sorted({r["cpu_hz"] for r in rows})
    gpu_levels = table["gpu"] if "gpu" in settable else (sorted({r["gpu_hz"] for r in rows}) if on_gpu else cpu_levels)
    emc_levels = table["emc"] if "emc" in settable else sorted({r["emc_hz"] for r in rows})
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(DeviceProfile)}
    fields.update(name=args.name or f"measured_{socket.gethostname()}", cpu_hz=cpu_levels, gpu_hz=gpu_levels,
                  emc_hz=emc_levels, gpu_macs_per_cycle=macs, gpu_efficiency=fit["e_c"],
                  emc_efficiency=fit["e_m"], cpu_cycles_per_kernel=fit["k"])
    fields["voltage_v"] = {d: _voltage_for(base.voltage_v[d], fields[f"{d}_hz"]) for d in DOMAINS}
    power_note = f"power model copied from '{base.name}' (no power source on this machine)"
    measured = [f for f in frames if f["energy_j_per_frame"] is not None and f["busy_power_w"] > 0]
    if measured:
        twin = DeviceTwin(DeviceProfile(**fields))
        f0 = measured[0]
        comp = "gpu" if on_gpu else "cpu"
        idle_pred = twin.idle_power_w(f0["cpu_hz"], gpu_levels[-1], f0["emc_hz"])
        fields["static_w"] = max(0.1, base.static_w + statistics.median(f["idle_power_w"] for f in measured)
                                 - idle_pred)
        rise_meas = statistics.median(f["busy_power_w"] - f["idle_power_w"] for f in measured)
        busy = twin.domain_power_w(f0["cpu_hz"], f0["gpu_hz"] or gpu_levels[-1], f0["emc_hz"],
                                   1.0 if comp == "cpu" else 0.3, 1.0 if comp == "gpu" else 0.0, 0.5)
        rise_pred = sum(busy.values()) - idle_pred
        if rise_meas > 0 and rise_pred > 0:
            fields["c_eff_nf"] = dict(base.c_eff_nf, **{comp: base.c_eff_nf[comp] * rise_meas / rise_pred})
        power_note = f"static_w and c_eff_nf.{comp} scaled to measured idle/busy power ({backend.name})"
    fields["description"] = (f"measured by dvfo-profile on {socket.gethostname()} with the {backend.name} backend: "
                             f"{len(grid)} clock setting(s), models {', '.join(models)}, input {args.input_size} px, "
                             f"{args.repeats} repeats; DNN ran on the {'GPU' if on_gpu else 'CPU'}"
                             f"{' (gpu_hz = the CPU clock that ran it)' if not on_gpu else ''}; {power_note}; "
                             f"fit rms log error {fit['rms_log_error']:.3f}")
    try:
        prof = DeviceProfile(**fields)
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        prof.to_yaml(args.out)
        load_profile(os.path.abspath(args.out))          # what the twin will read must load
    except (ProfileError, OSError) as e:
        return error("dvfo-profile", e, code=1, context=f"cannot write {args.out}")
    csv_path = args.csv or os.path.splitext(args.out)[0] + ".csv"
    twin = DeviceTwin(prof)
    for r in rows:
        r["fitted_s"] = twin.stage_times_s(r, int(r["cpu_hz"]), int(r["compute_hz"]), int(r["emc_hz"]))["t"]
    with open(csv_path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    if args.plot:
        _plot(rows, args.plot, prof.name)
    print(f"wrote {args.out} ({prof.name}) and {csv_path}" + (f" and {args.plot}" if args.plot else ""))
    for f in frames:
        energy = (f"{f['energy_j_per_frame']:.3f} J/frame" if f["energy_j_per_frame"] is not None
                  else "no energy source")
        fitted_ms = 1e3 * sum(r["fitted_s"] for r in rows if r["grid"] == f["grid"] and r["model"] == f["model"])
        print(f"  {f['model']:16s} cpu {f['cpu_hz'] / 1e6:7.1f} gpu {f['gpu_hz'] / 1e6:7.1f} emc "
              f"{f['emc_hz'] / 1e6:7.1f} MHz: {f['latency_ms']:8.2f} ms/frame measured, "
              f"{fitted_ms:8.2f} ms twin (stages), {energy}")
    print(f"  fit: gpu_efficiency {fit['e_c']:.4f} (x {macs:g} MAC/cycle), emc_efficiency {fit['e_m']:.4f}, "
          f"cpu_cycles_per_kernel {fit['k']:.3g}, rms log error {fit['rms_log_error']:.3f}")
    for n in notes:
        print(f"  note: {n}")
    return 0


def _plot(rows: List[dict], path: str, name: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    for model in sorted({r["model"] for r in rows}):
        sel = [r for r in rows if r["model"] == model]
        ax.scatter([r["latency_s"] * 1e3 for r in sel], [r["fitted_s"] * 1e3 for r in sel], s=14, label=model)
    lo = min(min(r["latency_s"], r["fitted_s"]) for r in rows) * 1e3
    hi = max(max(r["latency_s"], r["fitted_s"]) for r in rows) * 1e3
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.set(xscale="log", yscale="log", xlabel="measured stage latency (ms)", ylabel="twin (fitted) latency (ms)",
           title=f"dvfo-profile: {name}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
