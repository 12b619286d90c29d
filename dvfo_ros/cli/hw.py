"""dvfo-hw: what a hardware backend finds (clock tables, current clocks, power rails) and applies.

    dvfo-hw                                   # auto: jetson -> linux -> sim
    dvfo-hw --backend jetson --set cpu=1.2G,gpu=600M,emc=1600M
    dvfo-hw --backend jetson --root /tmp/xavier_copy --json
    dvfo-hw --restore                         # clocks a SIGKILLed governor left changed (its state file)

With --set the request is clamped to the tables and applied; the original settings are put back
when the command exits unless --keep is given (the board is never left changed by accident).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import Dict, List, Optional

from dvfo_ros.cli.common import error, format_table
from dvfo_ros.core.errors import DvfoError
from dvfo_ros.core.hardware import BACKENDS, HardwareBackend, open_backend
from dvfo_ros.core.hardware.base import DOMAINS

_UNITS = {"": 1, "hz": 1, "k": 1e3, "khz": 1e3, "m": 1e6, "mhz": 1e6, "g": 1e9, "ghz": 1e9}


class UsageError(ValueError, DvfoError):
    """Bad command-line input: one line, exit code 2."""


def parse_freq(text: str) -> int:
    """'1200000000', '1.2e9', '1.2G', '600MHz' -> Hz."""
    t = text.strip().lower()
    num = t.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = t[len(num):]
    if unit not in _UNITS:
        raise UsageError(f"unknown unit '{unit}' in '{text}' (use Hz, k, M, G)")
    try:
        value = float(num) * _UNITS[unit]
    except ValueError:
        raise UsageError(f"'{text}' is not a frequency") from None
    if value <= 0:
        raise UsageError(f"'{text}' must be > 0")
    return int(round(value))


def parse_set(text: str) -> Dict[str, int]:
    """'cpu=1.2G,gpu=600M' -> {'cpu': 1200000000, 'gpu': 600000000}."""
    out: Dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        if "=" not in part:
            raise UsageError(f"'{part}' is not DOMAIN=HZ (domains: {', '.join(DOMAINS)})")
        dom, val = (s.strip().lower() for s in part.split("=", 1))
        if dom not in DOMAINS:
            raise UsageError(f"unknown domain '{dom}' (domains: {', '.join(DOMAINS)})")
        out[dom] = parse_freq(val)
    if not out:
        raise UsageError("--set needs at least one DOMAIN=HZ")
    return out


def _mhz(hz: float) -> str:
    return f"{hz / 1e6:.1f} MHz"


def report(backend: HardwareBackend) -> dict:
    describe = getattr(backend, "describe", None)
    return {"backend": backend.name, "profile": str(getattr(backend, "profile", "")),
            "description": describe() if callable(describe) else "",
            "table_hz": backend.table().as_dict(), "reading": dataclasses.asdict(backend.read())}


def print_report(rep: dict, out=sys.stdout) -> None:
    print(f"backend: {rep['backend']} ({rep['profile']})", file=out)
    if rep["description"] and not any(rep["description"] in line for line in rep.get("log", [])):
        print(f"  {rep['description']}", file=out)
    r = rep["reading"]
    rows = [(d, len(levels) or "not settable", levels[0] / 1e6 if levels else None,
             levels[-1] / 1e6 if levels else None, r[f"{d}_freq_hz"] / 1e6, f"{r[f'{d}_util']:.0%}")
            for d, levels in rep["table_hz"].items()]
    print(format_table(rows, ("domain", "levels", "min MHz", "max MHz", "now MHz", "load"),
                       floatfmt=("", "", ".1f", ".1f", ".1f", ""), align=("left",) + ("right",) * 5, indent="  "),
          file=out)
    rails = ", ".join(f"{k} {v:.2f} W" for k, v in r["rails_w"].items()) or "no power rails"
    print(f"  power: {r['power_w']:.2f} W ({rails}); energy {r['energy_j']:.2f} J; "
          f"temperature {r['temperature_c']:.1f} C", file=out)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dvfo-hw", description="Show what a hardware backend finds and, with "
                                "--set, apply clamped clocks (restored on exit unless --keep).")
    p.add_argument("--backend", default="auto", choices=BACKENDS, help="backend (auto: jetson -> linux -> sim)")
    p.add_argument("--root", default="/", help="root of the sysfs/debugfs tree (a copied or fake tree)")
    p.add_argument("--profile", default=None, help="twin profile for sim (nano, tx2, xavier_nx, orin_nx or YAML)")
    p.add_argument("--set", dest="set_", default=None, metavar="cpu=HZ,gpu=HZ,emc=HZ",
                   help="frequencies to apply (units Hz/k/M/G accepted, e.g. cpu=1.2G,gpu=600M)")
    p.add_argument("--keep", action="store_true", help="leave the --set clocks applied after exit")
    p.add_argument("--allow-set", action="store_true", help="nvml: allow locking clocks (read-only otherwise)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--restore", action="store_true",
                   help="put back the clocks a killed governor left changed (from its state file for --root)")
    return p


def restore_leftover(root: str) -> int:
    """dvfo-hw --restore: write back the originals in the state file for ``root``, delete it."""
    from dvfo_ros.core.hardware import state
    path = state.state_path(root)
    doc = state.read_state(path)
    if doc is None:
        print(f"nothing to restore: no state file {path}")
        return 0
    pid = int(doc.get("pid", 0) or 0)
    if pid and pid != os.getpid() and state.pid_alive(pid):
        return error("dvfo-hw", f"governor pid {pid} still runs and owns {path}; stop it (it restores on exit)",
                     code=1)
    errors = state.restore_state(path)
    for line in errors:
        print(f"  ERROR {line}")
    print(f"restored {len(doc['originals']) - len(errors)} of {len(doc['originals'])} settings from {path}"
          + ("" if errors else "; state file removed"))
    return 1 if errors else 0


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.restore:
        return restore_leftover(args.root)
    try:
        request = parse_set(args.set_) if args.set_ is not None else None
    except UsageError as e:
        return error("dvfo-hw", e, context="--set")
    logs: List[str] = []
    try:
        if args.backend == "nvml" and args.allow_set:
            from dvfo_ros.core.hardware.nvml import NvmlBackend
            backend: HardwareBackend = NvmlBackend(allow_set=True, log=logs.append)
        else:
            backend = open_backend(args.backend, root=args.root, profile=args.profile or "xavier_nx",
                                   log=logs.append, profile_given=args.profile is not None)
    except Exception as e:   # noqa: BLE001 - one line, no traceback
        return error("dvfo-hw", e, code=1)
    rc = 0
    try:
        rep = report(backend)
        rep["log"] = logs
        if request is not None:
            res = backend.apply(request.get("cpu"), request.get("gpu"), request.get("emc"))
            rep["apply"] = {"requested": res.requested, "clamped": res.clamped, "applied": res.applied,
                            "errors": res.errors}
            rep["after"] = dataclasses.asdict(backend.read())
            rc = 0 if res.ok else 1
        if request is not None and not args.keep:
            rep["restore_errors"] = backend.restore() or []
        if args.json:
            print(json.dumps(rep, indent=2))
        else:
            for line in logs:
                print(line)
            print_report(rep)
            if "apply" in rep:
                a = rep["apply"]
                for d in a["requested"]:
                    got = a["applied"].get(d)
                    print(f"  set {d}: requested {_mhz(a['requested'][d])} -> clamped "
                          f"{_mhz(a['clamped'][d]) if d in a['clamped'] else '-'} -> applies "
                          f"{_mhz(got) if got else 'nothing'}")
                for problem in a["errors"]:
                    print(f"  ERROR {problem}")
                if args.keep:
                    print("  --keep: settings left applied")
                else:
                    errs = rep.get("restore_errors") or []
                    print("  original settings restored" if not errs else f"  restore failed: {'; '.join(errs)}")
    finally:
        if not (args.keep and request is not None):
            backend.close()
    return rc


if __name__ == "__main__":
    sys.exit(main())
