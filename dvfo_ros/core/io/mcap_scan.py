"""Salvage reading of a damaged MCAP bag: record by record from the start, without footer or index.

``BagReader`` falls back to this when a recorder died before writing the file's summary, so the
messages written before the damage are still read.
"""
from __future__ import annotations

import struct
from pathlib import Path
from typing import Dict, Iterator, Sequence, Tuple

from dvfo_ros.core.io.bags import BagError, TopicInfo


class McapScan:
    """Reads an MCAP file record by record from the start, without its footer or index: the way into
    a file whose writer died. Stops quietly at the first incomplete record."""

    MAGIC = b"\x89MCAP0\r\n"

    def __init__(self, path: Path) -> None:
        from rosbags.rosbag2.storage_mcap import decompress
        self._decompress = decompress
        self.path = path
        self.f = path.open("rb")
        if self.f.read(8) != self.MAGIC:
            self.f.close()
            raise BagError(f"{path}: not an MCAP file")
        self.start = self.f.tell()
        self.schemas: Dict[int, Tuple[str, str]] = {}
        self.channels: Dict[int, Tuple[str, int]] = {}
        self.topics: Dict[str, TopicInfo] = {}
        for _ in self._records(want=set(), meta_only=True):
            pass

    def _records(self, want: set, meta_only: bool = False) -> Iterator[Tuple[str, int, bytes]]:
        f = self.f
        f.seek(self.start)
        while True:
            head = f.read(9)
            if len(head) < 9:
                return
            op, size = head[0], struct.unpack_from("<Q", head, 1)[0]
            body = f.read(size)
            if len(body) < size:
                return
            if op == 0x06:
                yield from self._chunk(body, want, meta_only)
            else:
                yield from self._record(op, body, want, meta_only)

    def _chunk(self, body: bytes, want: set, meta_only: bool) -> Iterator[Tuple[str, int, bytes]]:
        usize, crc = struct.unpack_from("<QI", body, 16)
        (clen,) = struct.unpack_from("<I", body, 28)
        comp = body[32:32 + clen].decode()
        off = 32 + clen
        (dlen,) = struct.unpack_from("<Q", body, off)
        raw = self._decompress(body[off + 8:off + 8 + dlen], comp, usize, crc)
        pos = 0
        while pos + 9 <= len(raw):
            op, size = raw[pos], struct.unpack_from("<Q", raw, pos + 1)[0]
            yield from self._record(op, raw[pos + 9:pos + 9 + size], want, meta_only)
            pos += 9 + size

    def _record(self, op: int, b: bytes, want: set, meta_only: bool) -> Iterator[Tuple[str, int, bytes]]:
        def string(pos: int) -> Tuple[str, int]:
            (n,) = struct.unpack_from("<I", b, pos)
            return b[pos + 4:pos + 4 + n].decode(), pos + 4 + n
        if op == 0x03:
            (sid,) = struct.unpack_from("<H", b, 0)
            name, pos = string(2)
            _, pos = string(pos)
            data, _ = string(pos)
            self.schemas[sid] = (name, data)
        elif op == 0x04:
            cid, sid = struct.unpack_from("<HH", b, 0)
            topic, _ = string(4)
            self.channels[cid] = (topic, sid)
            name, data = self.schemas.get(sid, ("", ""))
            self.topics.setdefault(topic, TopicInfo(topic, name, -1, data, ""))
        elif op == 0x05 and not meta_only:
            cid = struct.unpack_from("<H", b, 0)[0]
            topic = self.channels.get(cid, ("", 0))[0]
            if topic in want:
                yield topic, struct.unpack_from("<Q", b, 6)[0], b[22:]

    def messages(self, topics: Sequence[str] | set) -> Iterator[Tuple[str, int, bytes]]:
        yield from self._records(set(topics))

    def close(self) -> None:
        self.f.close()
