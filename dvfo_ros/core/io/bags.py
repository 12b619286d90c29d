"""Read and write rosbag2 bags (mcap or sqlite3) with ``rosbags``: no ROS installation needed.

Reading streams: messages come one at a time from the storage (mcap chunk by chunk, sqlite3 through
a cursor), so a bag of any length needs the memory of one chunk. Every problem is reported through
``warn`` as one line naming the file and topic, and what can be read is still read:
- a truncated or damaged bag (recorder killed, disk full): the messages before the damage;
- a message type whose definition differs from this version's: decoded with the bag's own
  definition (the names that still match are used); no definition at all: that topic is skipped;
- a message that does not decode: skipped and counted.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, Optional, Tuple, cast

from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness
from rosbags.interfaces import QosReliability, QosTime
from rosbags.rosbag2 import Reader, ReaderError, StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from dvfo_ros.core.errors import DvfoError
from dvfo_ros.core.io.bagtypes import default_typestore, ensure_type

log = logging.getLogger("dvfo_ros.bags")
Warn = Callable[[str], None]
STORAGES = ("mcap", "sqlite3")
BAG_VERSION = 8      # read by Humble..Kilted's rosbag2 (9 changed the QoS layout that older distros parse)


class BagError(DvfoError):
    """A bag that cannot be used at all; the message names the file (and topic)."""


def reliable_qos(depth: int = 100) -> Qos:
    """The QoS our publishers offer (reliable, volatile, keep-last): what ``ros2 bag play`` re-offers."""
    inf = QosTime(2147483647, 4294967295)     # rosbag2's spelling of "no deadline / lifespan / lease"
    return Qos(QosHistory.KEEP_LAST, depth, QosReliability.RELIABLE, QosDurability.VOLATILE, inf, inf,
               QosLiveliness.AUTOMATIC, inf, False)


# ---------------------------------------------------------------------------------------------- writing
class BagWriter:
    """A rosbag2 bag directory being written; ``flush()`` makes what is written so far survive a crash."""

    def __init__(self, path: Path | str, storage: str = "mcap", typestore: Optional[Typestore] = None,
                 version: int = BAG_VERSION) -> None:
        if storage not in STORAGES:
            raise BagError(f"storage must be one of {', '.join(STORAGES)}, got '{storage}'")
        self.path = Path(path)
        if self.path.exists():
            raise BagError(f"{self.path} already exists; rosbag2 bags are never overwritten")
        self.storage = storage
        self.store = typestore or default_typestore()
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self._writer = Writer(self.path, version=version, storage_plugin=plugin)  # type: ignore[arg-type]
        self._writer.open()
        self._conns: Dict[str, Any] = {}
        self.counts: Dict[str, int] = {}

    def add_topic(self, topic: str, msgtype: str, qos: Optional[Qos] = None) -> None:
        """Declare a topic; its definition and RIHS01 hash are written as rosbag2 expects them."""
        if topic in self._conns:
            return
        if not ensure_type(self.store, msgtype):
            raise BagError(f"{self.path}: no definition for {msgtype} (topic {topic})")
        self._conns[topic] = self._writer.add_connection(topic, msgtype, typestore=self.store,
                                                         offered_qos_profiles=[qos or reliable_qos()])
        self.counts[topic] = 0

    def write_raw(self, topic: str, stamp_ns: int, data: bytes | memoryview) -> None:
        """Store one CDR-serialised message (what an rclpy ``raw=True`` subscription delivers)."""
        self._writer.write(self._conns[topic], int(stamp_ns), data)
        self.counts[topic] += 1

    def write(self, topic: str, stamp_ns: int, msg: Any) -> None:
        """Serialise a rosbags message object and store it."""
        self.write_raw(topic, stamp_ns, self.store.serialize_cdr(msg, self._conns[topic].msgtype))

    def flush(self) -> None:
        """Push buffered messages to disk (mcap: close the pending chunk; sqlite3: commit)."""
        st = self._writer.storage
        if st is None:
            return
        if self.storage == "mcap":
            if st.chunk.bio.tell():   # type: ignore[attr-defined]
                st.close_chunk()      # type: ignore[attr-defined]
            st.bio.flush()            # type: ignore[attr-defined]
        else:
            st.conn.commit()          # type: ignore[attr-defined]

    def close(self) -> None:
        """Finish the storage file and write metadata.yaml (what ``ros2 bag info`` reads)."""
        if self._writer.storage is not None:
            self._writer.close()

    def __enter__(self) -> "BagWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def make_message(store: Typestore, msgtype: str, stamp_ns: int = 0, **fields: Any) -> Any:
    """A rosbags message object with every field at its zero value unless given (header stamped)."""
    import numpy as np
    cls = store.types[msgtype]
    values: Dict[str, Any] = {}
    for name, (kind, detail) in store.fielddefs[msgtype][1]:
        if name in fields:
            values[name] = fields[name]
            continue
        if name == "header" and detail == "std_msgs/msg/Header":
            time_cls = store.types["builtin_interfaces/msg/Time"]
            values[name] = store.types["std_msgs/msg/Header"](
                stamp=time_cls(sec=int(stamp_ns // 10**9), nanosec=int(stamp_ns % 10**9)), frame_id="")
        elif kind.name == "BASE":
            t = detail[0]
            values[name] = "" if t == "string" else (False if t == "bool" else (0.0 if "float" in t else 0))
        elif kind.name == "SEQUENCE":
            sub = cast(Tuple[Any, Any], detail[0])   # a SEQUENCE's detail: (element desc, bound)
            if sub[0].name == "BASE" and sub[1][0] != "string":
                values[name] = np.zeros(0, dtype=_NP_DTYPES.get(sub[1][0], "float64"))
            else:
                values[name] = []
        else:
            values[name] = make_message(store, cast(str, detail), stamp_ns)   # a NAME's detail: the type
    return cls(**values)


_NP_DTYPES = {"float32": "float32", "float64": "float64", "int8": "int8", "uint8": "uint8", "int16": "int16",
              "uint16": "uint16", "int32": "int32", "uint32": "uint32", "int64": "int64", "uint64": "uint64",
              "bool": "bool", "byte": "uint8", "char": "uint8"}


# ---------------------------------------------------------------------------------------------- reading
@dataclass
class TopicInfo:
    topic: str
    msgtype: str
    count: int                 # from the bag's index; -1 when unknown (salvaged bag)
    msgdef: str = ""
    digest: str = ""


@dataclass
class Message:
    topic: str
    msgtype: str
    stamp_ns: int
    msg: Any


class BagReader:
    """One bag (directory, .mcap or .db3 file), opened for streaming reads of decoded messages."""

    def __init__(self, path: Path | str, typestore: Optional[Typestore] = None, warn: Optional[Warn] = None) -> None:
        self.path = Path(path)
        self.store = typestore or default_typestore()
        self.warn: Warn = warn or log.warning
        self.salvaged = False
        self._reader: Optional[Reader] = None
        self._salvage: Optional[Any] = None            # a McapScan of a damaged mcap file
        if not self.path.exists():
            raise BagError(f"{self.path}: no such bag")
        self._open()
        self._decoders: Dict[str, Optional[Callable[[bytes], Any]]] = {}

    # -- opening ---------------------------------------------------------------------------------
    def _storage_file(self) -> Optional[Path]:
        if self.path.is_file():
            return self.path
        files = sorted(self.path.glob("*.mcap")) + sorted(self.path.glob("*.db3"))
        return files[0] if files else None

    def _open(self) -> None:
        first_err: Optional[Exception] = None
        for target in (self.path, self._storage_file()):
            if target is None:
                continue
            try:
                r = Reader(target)
                r.open()
                self._reader = r
                if target != self.path:
                    self.warn(f"{self.path}: metadata.yaml missing or unreadable ({first_err}); "
                              f"read {target.name} directly (was the recorder stopped uncleanly?)")
                return
            except (ReaderError, OSError, Exception) as e:  # noqa: BLE001 - any failure: try the next way in
                first_err = first_err or e
        f = self._storage_file()
        if f is not None and f.suffix == ".mcap":
            try:
                from dvfo_ros.core.io.mcap_scan import McapScan
                self._salvage = McapScan(f)
                self.salvaged = True
                self.warn(f"{f}: bag is truncated or damaged ({first_err}); reading the complete records "
                          f"before the damage")
                return
            except BagError:
                pass
        raise BagError(f"{self.path}: not a readable rosbag2 bag ({first_err})")

    # -- what is in it ---------------------------------------------------------------------------
    @property
    def storage(self) -> str:
        f = self._storage_file()
        return "mcap" if f is not None and f.suffix == ".mcap" else "sqlite3"

    def topics(self) -> Dict[str, TopicInfo]:
        if self._salvage is not None:
            return dict(self._salvage.topics)
        assert self._reader is not None
        out: Dict[str, TopicInfo] = {}
        for c in self._reader.connections:
            t = out.get(c.topic)
            if t is None:
                out[c.topic] = TopicInfo(c.topic, c.msgtype, c.msgcount, c.msgdef.data or "", c.digest or "")
            else:
                t.count += c.msgcount
        return out

    def time_range_ns(self) -> Tuple[int, int]:
        """(first, last) message stamp from the index; (0, 0) for an empty or salvaged bag."""
        if self._reader is None or self._reader.message_count == 0:
            return 0, 0
        return self._reader.start_time, self._reader.end_time - 1

    # -- decoding --------------------------------------------------------------------------------
    def _decoder(self, info: TopicInfo) -> Optional[Callable[[bytes], Any]]:
        """How to decode one topic, chosen once: our definition, else the bag's own, else none."""
        key = info.topic
        if key in self._decoders:
            return self._decoders[key]
        dec: Optional[Callable[[bytes], Any]] = None
        ours = ensure_type(self.store, info.msgtype)
        same = False
        if ours:
            our_hash = self.store.hash_rihs01(info.msgtype)
            if info.digest.startswith("RIHS01_"):
                same = info.digest == our_hash
            elif info.msgdef:
                same = _same_fields(info.msgdef, info.msgtype, self.store)
            else:
                same = True     # nothing to compare with: trust the name
        if same:
            store, mt = self.store, info.msgtype
            dec = lambda raw: store.deserialize_cdr(raw, mt)  # noqa: E731
        elif info.msgdef:
            try:
                own = get_typestore(Stores.LATEST)
                own.register(get_types_from_msg(info.msgdef, info.msgtype))
                mt = info.msgtype
                dec = lambda raw: own.deserialize_cdr(raw, mt)  # noqa: E731
                self.warn(f"{self.path} topic {info.topic}: {info.msgtype} was recorded with a different "
                          f"definition than this version's; decoding with the bag's own definition")
            except Exception as e:  # noqa: BLE001
                self.warn(f"{self.path} topic {info.topic}: cannot parse the bag's definition of {info.msgtype} "
                          f"({e}); topic skipped")
        elif ours:
            self.warn(f"{self.path} topic {info.topic}: {info.msgtype} definition differs from this version's "
                      f"and the bag carries none; topic skipped")
        else:
            self.warn(f"{self.path} topic {info.topic}: unknown message type {info.msgtype} and no definition "
                      f"in the bag; topic skipped")
        self._decoders[key] = dec
        return dec

    def messages(self, topics: Optional[Iterable[str]] = None, msgtypes: Optional[Iterable[str]] = None
                 ) -> Iterator[Message]:
        """Decoded messages of the chosen topics/types (all when both are None), in storage order."""
        infos = self.topics()
        want_t = set(topics) if topics is not None else None
        want_m = set(msgtypes) if msgtypes is not None else None
        chosen = {t: i for t, i in infos.items()
                  if (want_t is None or t in want_t) and (want_m is None or i.msgtype in want_m)}
        decoders = {t: self._decoder(i) for t, i in chosen.items()}
        live = {t for t, d in decoders.items() if d is not None}
        bad: Dict[str, int] = {}
        n = 0
        raw_iter: Iterator[Tuple[str, int, bytes]]
        if self._salvage is not None:
            raw_iter = self._salvage.messages(live)
        else:
            assert self._reader is not None
            conns = [c for c in self._reader.connections if c.topic in live]
            raw_iter = ((c.topic, ts, data) for c, ts, data in self._reader.messages(connections=conns)) \
                if conns else iter(())
        try:
            for topic, ts, data in raw_iter:
                try:
                    msg = decoders[topic](data)  # type: ignore[misc]
                except Exception:  # noqa: BLE001 - one bad message must not end the read
                    bad[topic] = bad.get(topic, 0) + 1
                    continue
                n += 1
                yield Message(topic, chosen[topic].msgtype, ts, msg)
        except Exception as e:  # noqa: BLE001 - ReaderError, sqlite/apsw errors, struct.error: the bag ends here
            self.warn(f"{self.path}: bag is truncated or damaged after {n} messages ({e}); using what was read")
        finally:
            for topic, k in bad.items():
                self.warn(f"{self.path} topic {topic}: {k} messages did not decode and were skipped")

    def close(self) -> None:
        if self._reader is not None and self._reader.is_open:
            self._reader.close()
        if self._salvage is not None:
            self._salvage.close()

    def __enter__(self) -> "BagReader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _same_fields(msgdef: str, msgtype: str, store: Typestore) -> bool:
    try:
        theirs = get_types_from_msg(msgdef, msgtype)[msgtype]
    except Exception:  # noqa: BLE001
        return False
    return list(theirs[1]) == list(store.fielddefs[msgtype][1])
