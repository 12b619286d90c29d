#!/usr/bin/env python3
"""Print the README's parameter table from the nodes' declared parameters (one source of truth)."""
import importlib


def rows():
    for node in ("camera", "governor", "executor", "policy"):
        mod = importlib.import_module(f"dvfo_ros.nodes.{node}")
        for p in mod.PARAMS:
            if p.choices:
                rng = " / ".join(map(str, p.choices))
            elif p.low is not None:
                rng = f"{p.low:g} … {p.high:g}"
            else:
                rng = ""
            yield node, p.name, repr(p.default) if isinstance(p.default, str) else str(p.default), rng, p.description


def main() -> None:
    print("| node | parameter | default | range | what it does |")
    print("|---|---|---|---|---|")
    for node, name, default, rng, desc in rows():
        print(f"| {node} | `{name}` | `{default}` | {rng} | {desc} |")


if __name__ == "__main__":
    main()
