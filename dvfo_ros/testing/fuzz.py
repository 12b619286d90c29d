"""Fuzz harness for the edge-cloud wire: malformed requests for the server, malformed replies for the edge.

Why a shared harness: the same input generator runs under hypothesis (test/test_fuzz.py), atheris
(test/fuzz_atheris.py, coverage-guided) and python -m dvfo_ros.testing.reliability, so every engine checks the
same contract: the server answers EVERY request with a well-formed reply (error, result or pong)
that carries the request's seq when the request's header is readable, within a bounded time, and
never raises; the edge's reply decoder either returns a Reply or raises CodecError, nothing else.

Inputs come from a `Draw` (a few typed choices), so hypothesis shrinks them and atheris steers
them by coverage. Most inputs start from a VALID request and break one thing (a header field's
type or range, a byte of the payload, the frame count), because purely random bytes never get past
the JSON parse and would leave the payload checks unfuzzed.
"""
from __future__ import annotations

import builtins
import functools
import json
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Protocol, Sequence

import numpy as np

from dvfo_ros.core.wire import codec
from dvfo_ros.core.wire.codec import CodecError

FUZZ_MODEL, FUZZ_SPLIT, FUZZ_CHANNELS, FUZZ_HW, FUZZ_CLASSES = "fuzz", 2, 16, (4, 4), 10
HANG_S = 1.0   # a request the server takes longer than this to answer counts as a hang
FAR_DEADLINE = 4.0e9   # year 2096: seed requests never expire while being fuzzed

# Values that break a header field's type or range: what a buggy or hostile edge would send.
HOSTILE_VALUES: List[Any] = [
    None, True, False, 0, -1, 1, 2, 3, 255, 256, 65535, 65536, 2 ** 31, 2 ** 63 - 1, 2 ** 63, 2 ** 64, -2 ** 63,
    10 ** 30, 0.5, -0.0, 1e308, -1e308, 5e-324, "", "x", "int8", "zlib", "none", "bitmap", "u16", "f16", "f32",
    "infer", "ping", "fuzz", "resnet18", "\u0000", "\udbff", "x" * 300, "x" * 70000, [], [1], [1, 1], [1, 4, 4],
    [16, 4, 4], [0, 4, 4], [-1, 4, 4], [1, 0, 4], [1, 4, 4, 4], [1.0, 4, 4], [True, 4, 4], ["1", 4, 4],
    [2 ** 40, 2 ** 40, 2 ** 40], [17, 4, 4], [4096, 256, 256], {}, {"a": 1}, [[[]]],
]
HEADER_KEYS = ("v", "kind", "model", "split", "artifact_id", "dtype", "shape", "total_channels", "index",
               "scale_dtype", "compression", "seq", "deadline")


class Draw(Protocol):
    """The few choices an input generator makes; hypothesis and atheris each provide one."""

    def int(self, lo: int, hi: int) -> int: ...

    # builtins.int: in the class body below the method, a bare `int` names the method
    def bytes(self, max_len: builtins.int) -> bytes: ...


def pick(draw: Draw, seq: Sequence[Any]) -> Any:
    return seq[draw.int(0, len(seq) - 1)]


class RandomDraw:
    """A Draw from numpy's RNG: for quick campaigns without a fuzzing engine (socket fuzzing)."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def int(self, lo: int, hi: int) -> int:
        return int(self.rng.integers(lo, hi + 1))

    def bytes(self, max_len: builtins.int) -> bytes:   # builtins.int: `int` is the method above
        return self.rng.integers(0, 256, size=int(self.rng.integers(0, max_len + 1)), dtype=np.uint8).tobytes()


# ----------------------------------------------------------------------------- seeds

@functools.lru_cache(maxsize=1)
def _seed_templates() -> List[List[bytes]]:
    rng = np.random.default_rng(7)
    out: List[List[bytes]] = []
    for k, compression in ((3, "zlib"), (12, "none"), (1, "zlib"), (FUZZ_CHANNELS, "zlib")):
        feat = np.maximum(rng.normal(size=(k, *FUZZ_HW)), 0).astype(np.float32)
        idx = np.sort(rng.choice(FUZZ_CHANNELS, size=k, replace=False))
        out.append(codec.encode_features(feat, idx, model=FUZZ_MODEL, split=FUZZ_SPLIT, seq=0,
                                         deadline=FAR_DEADLINE, total_channels=FUZZ_CHANNELS,
                                         compression=compression))
    out.append(codec.encode_ping(0))
    return out


def seed_requests(seq: int = 7) -> List[List[bytes]]:
    """Valid requests the fuzzing server accepts: infer (zlib, raw, bitmap and u16 indices) and ping."""
    out = []
    for header, payload in _seed_templates():
        fields = json.loads(header)
        fields["seq"] = int(seq)
        out.append([json.dumps(fields, separators=(",", ":")).encode(), payload])
    return out


@functools.lru_cache(maxsize=1)
def _zip_bomb() -> bytes:
    return zlib.compress(b"\x00" * (1 << 22), 9)


def seed_replies(seq: int = 7) -> List[List[bytes]]:
    return [codec.encode_reply(seq, np.linspace(-1, 1, FUZZ_CLASSES), 3.0), codec.encode_reply(seq, None, error="no"),
            codec.encode_reply(seq, None, kind="pong")]


# ----------------------------------------------------------------------------- generators

def _mutate_bytes(draw: Draw, raw: bytes) -> bytes:
    buf = bytearray(raw)
    for _ in range(draw.int(1, 4)):
        op = draw.int(0, 3)
        pos = draw.int(0, max(0, len(buf) - 1))
        if op == 0 and buf:
            buf[pos] ^= draw.int(1, 255)
        elif op == 1:
            del buf[pos:pos + draw.int(1, 64)]
        elif op == 2:
            buf[pos:pos] = draw.bytes(16)
        else:
            buf[pos:pos + 1] = bytes([pick(draw, b'{}[]",:0-9e\\')])
    return bytes(buf)


def _mutate_header(draw: Draw, header: Dict[str, Any]) -> bytes:
    header = dict(header)
    for _ in range(draw.int(1, 3)):
        op = draw.int(0, 3)
        key = pick(draw, HEADER_KEYS)
        if op == 0:
            header[key] = pick(draw, HOSTILE_VALUES)
        elif op == 1:
            header.pop(key, None)
        elif op == 2:
            header[draw.bytes(8).decode("latin-1")] = pick(draw, HOSTILE_VALUES)
        else:
            value = header.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                header[key] = value + draw.int(-3, 3)   # off by a little: the boundary cases
    text = json.dumps(header, allow_nan=True)
    if draw.int(0, 7) == 0:   # NaN / Infinity are not JSON; Python's json writes them anyway
        text = text.replace("4000000000.0", pick(draw, ["NaN", "Infinity", "-Infinity", "1e999"]))
    return text.encode("utf-8", "surrogatepass")


def _payload(draw: Draw, header: Dict[str, Any], valid: bytes) -> bytes:
    op = draw.int(0, 5)
    if op == 0:
        return draw.bytes(512)
    if op == 1:   # well-formed zlib of the wrong size
        return zlib.compress(draw.bytes(600))
    if op == 2:   # a small zip bomb: inflates far beyond anything the header allows
        return _zip_bomb()
    if op == 3:
        return valid + draw.bytes(8)
    if op == 4:
        return valid[: draw.int(0, max(0, len(valid) - 1))]
    return _mutate_bytes(draw, valid)


def malformed_request(draw: Draw) -> List[bytes]:
    """A request as a buggy or hostile edge might send it (it may, rarely, still be valid)."""
    seeds = seed_requests(draw.int(0, 1 << 20))
    frames = list(pick(draw, seeds))
    header = json.loads(frames[0])
    mode = draw.int(0, 5)
    if mode == 0:          # raw garbage, any number of frames
        return [draw.bytes(256) for _ in range(draw.int(0, 4))]
    if mode == 1:          # one header field broken
        frames[0] = _mutate_header(draw, header)
    elif mode == 2:        # header bytes damaged
        frames[0] = _mutate_bytes(draw, frames[0])
    elif mode == 3:        # valid header, bad payload
        frames[1] = _payload(draw, header, frames[1])
    elif mode == 4:        # frame count wrong
        frames = frames[: draw.int(0, 1)] if draw.int(0, 1) else frames + [draw.bytes(32)] * draw.int(1, 3)
    else:                  # header broken AND payload broken
        frames[0] = _mutate_header(draw, header)
        frames[1] = _payload(draw, header, frames[1])
    return frames


def malformed_reply(draw: Draw) -> List[bytes]:
    """A reply as a broken or hostile server might send it."""
    frames = list(pick(draw, seed_replies(draw.int(-2, 1 << 20))))
    mode = draw.int(0, 3)
    if mode == 0:
        return [draw.bytes(128) for _ in range(draw.int(0, 3))]
    if mode == 1:
        header = json.loads(frames[0])
        for _ in range(draw.int(1, 3)):
            header[pick(draw, ("v", "kind", "seq", "cloud_ms", "error"))] = pick(draw, HOSTILE_VALUES)
        frames[0] = json.dumps(header, allow_nan=True).encode("utf-8", "surrogatepass")
    elif mode == 2:
        frames[0] = _mutate_bytes(draw, frames[0])
    else:
        frames[1] = _mutate_bytes(draw, frames[1]) if frames[1] and draw.int(0, 1) else draw.bytes(64)
    return frames


# ----------------------------------------------------------------------------- the contract

class FuzzFailure(AssertionError):
    """The server or decoder broke its contract on one input (the message says how)."""


def readable_seq(frames: Sequence[bytes]) -> Optional[int]:
    """The seq the server must echo: the header's int seq when the header is a JSON object."""
    if len(frames) < 1:
        return None
    try:
        header = json.loads(bytes(frames[0])[:1 << 18])
    except Exception:  # noqa: BLE001 - unreadable: no seq to echo
        return None
    seq = header.get("seq") if isinstance(header, dict) else None
    return seq if isinstance(seq, int) and not isinstance(seq, bool) and 0 <= seq < 1 << 63 else None


def check_reply(request: Sequence[bytes], reply_frames: Sequence[bytes]) -> codec.Reply:
    """The reply must decode, and carry the request's seq when it could be read (else -1 or that seq)."""
    try:
        reply = codec.decode_reply(list(reply_frames))
    except CodecError as exc:
        raise FuzzFailure(f"server sent a malformed reply: {exc}") from None
    want = readable_seq(request)
    if reply.kind == "error":
        if not reply.error or "\n" in reply.error:
            raise FuzzFailure(f"error reply without a one-line reason: {reply.error!r}")
        if reply.seq not in ((-1, want) if want is not None else (-1,)):
            raise FuzzFailure(f"error reply seq {reply.seq}, request seq {want}")
    elif reply.seq != want:
        raise FuzzFailure(f"{reply.kind} reply seq {reply.seq} for a request with seq {want}")
    return reply


def check_reply_decoder(frames: Sequence[bytes]) -> Optional[codec.Reply]:
    """The edge's decoder on a hostile reply: a Reply with finite logits, or CodecError, nothing else."""
    try:
        reply = codec.decode_reply(list(frames))
    except CodecError as exc:
        if "\n" in str(exc):
            raise FuzzFailure(f"multi-line CodecError: {exc!r}") from None
        return None
    if reply.logits is not None and not np.all(np.isfinite(reply.logits)):
        raise FuzzFailure("decoded reply has non-finite logits")
    return reply


@dataclass
class Tally:
    """What a campaign saw: every input is answered (error/result/pong) or it is a failure."""

    inputs: int = 0
    answered: Dict[str, int] = field(default_factory=lambda: {"error": 0, "result": 0, "pong": 0})
    failures: List[str] = field(default_factory=list)
    hangs: int = 0
    stalls: int = 0   # slow once, fast when the same input ran again: the machine, not the input
    max_s: float = 0.0

    def as_dict(self) -> Dict[str, Any]:
        return {"inputs": self.inputs, "answered": sum(self.answered.values()), "by_kind": dict(self.answered),
                "crashes": len([f for f in self.failures if not f.startswith("hang:")]),
                "hangs": self.hangs, "stalls": self.stalls, "max_ms": round(self.max_s * 1000, 2),
                "first_failures": self.failures[:5]}


def fuzz_tail(seed: int = 0) -> Callable[[Dict[str, Any], np.ndarray, np.ndarray], np.ndarray]:
    """A real (tiny) torch tail on FUZZ_CHANNELS x FUZZ_HW maps, so accepted requests run a model."""
    import torch
    from torch import nn
    torch.manual_seed(seed)
    tail = nn.Sequential(nn.Conv2d(FUZZ_CHANNELS, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, FUZZ_CLASSES)).eval()

    def run(header: Dict[str, Any], feat: np.ndarray, idx: np.ndarray) -> np.ndarray:
        x = torch.zeros(1, FUZZ_CHANNELS, *feat.shape[1:])
        x[0, torch.from_numpy(idx)] = torch.from_numpy(feat)
        with torch.inference_mode():
            return tail(x)[0].numpy()
    return run


def fuzz_accept() -> Dict[str, Any]:
    return {"model": FUZZ_MODEL, "split": FUZZ_SPLIT, "artifact_id": "", "total_channels": FUZZ_CHANNELS,
            "hw": list(FUZZ_HW)}


def make_fuzz_server(bind: str = "tcp://127.0.0.1:*", **kwargs: Any):
    """A CloudServer with the fuzz tail, serving exactly what seed_requests() asks for."""
    import logging

    from dvfo_ros.cloud.server import CloudServer
    logging.getLogger("dvfo_ros.cloud").setLevel(logging.ERROR)   # every refusal is a warning: too many
    return CloudServer(bind, fuzz_tail(), accept=fuzz_accept(), **kwargs)


def handle_one(server: Any, frames: List[bytes], tally: Tally) -> None:
    """Run one request through server.handle (the code the serving loop runs) and check the contract."""
    tally.inputs += 1
    t0 = time.perf_counter()
    try:
        reply_frames = server.handle(frames)
    except Exception as exc:  # noqa: BLE001 - that is the finding
        tally.failures.append(f"server.handle raised {type(exc).__name__}: {exc}")
        return
    elapsed = time.perf_counter() - t0
    if elapsed > HANG_S:
        # Slow once: the input, or this machine pausing us? Time it again; only an input that is slow
        # every time is a hang (on a shared 2-core machine a process can lose the CPU for a second).
        again = []
        for _ in range(2):
            t1 = time.perf_counter()
            server.handle(frames)
            again.append(time.perf_counter() - t1)
        if min(again) > HANG_S / 2:
            tally.hangs += 1
            tally.failures.append(f"hang: {min(again) * 1000:.0f} ms on {[bytes(f[:60]) for f in frames]}")
        else:
            tally.stalls += 1
            elapsed = min(again)
    tally.max_s = max(tally.max_s, elapsed)
    try:
        reply = check_reply(frames, reply_frames)
    except FuzzFailure as exc:
        tally.failures.append(str(exc))
        return
    tally.answered[reply.kind] += 1


def socket_campaign(endpoint: str, n: int, seed: int = 0, timeout_s: float = 2.0,
                    curve: Optional[Dict[str, bytes]] = None) -> Tally:
    """Send n malformed requests over a real DEALER socket, one at a time; each must be answered."""
    import zmq
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    for key, value in (curve or {}).items():
        setattr(sock, key, value)
    sock.connect(endpoint)
    draw, tally = RandomDraw(seed), Tally()
    try:
        while tally.inputs < n:
            frames = malformed_request(draw)
            if not frames:
                continue   # a message of zero frames cannot exist on the wire
            tally.inputs += 1
            t0 = time.perf_counter()
            sock.send_multipart(frames)
            if not sock.poll(int(timeout_s * 1000)):
                tally.hangs += 1
                tally.failures.append(f"no reply within {timeout_s} s to {[f[:40] for f in frames]}")
                continue
            reply_frames = sock.recv_multipart()
            tally.max_s = max(tally.max_s, time.perf_counter() - t0)
            try:
                tally.answered[check_reply(frames, reply_frames).kind] += 1
            except FuzzFailure as exc:
                tally.failures.append(str(exc))
    finally:
        sock.close(0)
        ctx.term()
    return tally
