"""Coverage-guided fuzzing (atheris / libFuzzer) of the cloud server's request handling and the edge's
reply decoder, with the contract of dvfo_ros.testing.fuzz: every request answered, nothing raises.

    .venv/bin/python test/fuzz_atheris.py -runs=100000 -timeout=5
    (python -m dvfo_ros.testing.reliability --figures fuzz runs it and reads the tally it writes)

The first input byte picks the target: structure-aware malformed requests (most inputs), raw
bytes split into frames (what pure coverage guidance finds on its own), or hostile replies. A
broken contract raises, which atheris reports as a crash with the reproducing input; an input the
server takes longer than libFuzzer's -timeout on is a hang. DVFO_FUZZ_STATS=FILE: the tally as JSON.
"""
from __future__ import annotations

import json
import os
import sys

import atheris

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

with atheris.instrument_imports(include=["dvfo_ros"]):
    from dvfo_ros.core.wire import codec
    from dvfo_ros.testing import fuzz  # noqa: E402
    from dvfo_ros.cloud import server as _server  # noqa: E402,F401  (instrumented: coverage of handle())

STATS = os.environ.get("DVFO_FUZZ_STATS", "")
SERVER = None
TALLY = fuzz.Tally()
REPLIES = {"inputs": 0, "decoded": 0, "refused": 0}


class AtherisDraw:
    def __init__(self, fdp: "atheris.FuzzedDataProvider") -> None:
        self.fdp = fdp

    def int(self, lo: int, hi: int) -> int:
        return self.fdp.ConsumeIntInRange(lo, hi)

    def bytes(self, max_len: int) -> bytes:
        return self.fdp.ConsumeBytes(self.fdp.ConsumeIntInRange(0, max_len))


def _raw_frames(fdp: "atheris.FuzzedDataProvider") -> list:
    count = fdp.ConsumeIntInRange(0, 3)
    return [fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 4096)) for _ in range(count)]


def _write_stats() -> None:
    if STATS:
        with open(STATS + ".tmp", "w") as f:
            json.dump({"server": TALLY.as_dict(), "replies": REPLIES}, f)
        os.replace(STATS + ".tmp", STATS)


def test_one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    target = fdp.ConsumeIntInRange(0, 7)
    if target <= 4:
        frames = fuzz.malformed_request(AtherisDraw(fdp))
    elif target == 5:
        frames = _raw_frames(fdp)
    else:
        frames = fuzz.malformed_reply(AtherisDraw(fdp)) if target == 6 else _raw_frames(fdp)
        REPLIES["inputs"] += 1
        REPLIES["decoded" if fuzz.check_reply_decoder(frames) is not None else "refused"] += 1
        frames = None
    if frames is not None:
        before = len(TALLY.failures)
        fuzz.handle_one(SERVER, frames, TALLY)
        if len(TALLY.failures) > before:
            _write_stats()
            raise fuzz.FuzzFailure(TALLY.failures[-1])
    if (TALLY.inputs + REPLIES["inputs"]) % 1000 == 0:
        _write_stats()


def main() -> None:
    global SERVER
    import torch
    torch.set_num_threads(1)
    SERVER = fuzz.make_fuzz_server()
    for seed in fuzz.seed_requests(1):          # the contract holds on valid input too
        fuzz.handle_one(SERVER, seed, TALLY)
    assert not TALLY.failures, TALLY.failures
    atheris.Setup(sys.argv, test_one_input)
    try:
        atheris.Fuzz()
    finally:
        _write_stats()
    _ = codec  # instrumented above so coverage reaches the decoder


if __name__ == "__main__":
    main()
