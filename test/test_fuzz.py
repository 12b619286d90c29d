"""Property-based fuzzing of the cloud server's request handling and the edge's reply decoder.

test_codec.py already fuzzes the codec's decoder with byte damage; here the unit under test is what
a hostile network reaches: CloudServer.handle (header limits, accept checks, payload decode, tail
run, error replies) and decode_reply on the edge. Contract: every request gets a well-formed reply
naming its seq, quickly; the reply decoder returns a Reply or raises CodecError, nothing else.
The 100k-example runs are `slow` (make test-slow, or python -m dvfo_ros.testing.reliability --figures fuzz).
"""
from __future__ import annotations

import json
import time

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from dvfo_ros.core.wire import codec
from dvfo_ros.testing import fuzz


class HypothesisDraw:
    def __init__(self, data) -> None:
        self.data = data

    def int(self, lo: int, hi: int) -> int:
        return self.data.draw(st.integers(lo, hi))

    def bytes(self, max_len: int) -> bytes:
        return self.data.draw(st.binary(max_size=max_len))


@pytest.fixture(scope="module")
def server():
    srv = fuzz.make_fuzz_server()   # bound but not serving: handle() is called directly
    yield srv
    srv.stop()


FAST = settings(max_examples=2500, deadline=None, suppress_health_check=list(HealthCheck))
SLOW = settings(max_examples=100_000, deadline=None, suppress_health_check=list(HealthCheck))


def _server_property(server, data) -> None:
    frames = fuzz.malformed_request(HypothesisDraw(data))
    tally = fuzz.Tally()
    fuzz.handle_one(server, frames, tally)
    assert not tally.failures, tally.failures[0]
    assert tally.hangs == 0, f"answer took {tally.max_s * 1000:.0f} ms"


def _reply_property(data) -> None:
    fuzz.check_reply_decoder(fuzz.malformed_reply(HypothesisDraw(data)))


@FAST
@given(data=st.data())
def test_every_malformed_request_gets_a_well_formed_reply(server, data):
    _server_property(server, data)


@FAST
@given(data=st.data())
def test_hostile_replies_never_crash_the_edge_decoder(data):
    _reply_property(data)


@pytest.mark.slow
@SLOW
@given(data=st.data())
def test_every_malformed_request_gets_a_well_formed_reply_100k(server, data):
    _server_property(server, data)


@pytest.mark.slow
@SLOW
@given(data=st.data())
def test_hostile_replies_never_crash_the_edge_decoder_100k(data):
    _reply_property(data)


def test_seed_requests_are_served_so_fuzzing_reaches_the_tail(server):
    """The generator starts from requests this server really runs: otherwise payload code goes unfuzzed."""
    tally = fuzz.Tally()
    for frames in fuzz.seed_requests(3):
        fuzz.handle_one(server, frames, tally)
    assert tally.failures == [] and tally.answered == {"error": 0, "result": 4, "pong": 1}


def test_the_contract_catches_a_server_that_echoes_the_wrong_seq():
    """check_reply is what every engine relies on: it must reject a mismatched or malformed answer."""
    request = fuzz.seed_requests(5)[0]
    assert fuzz.check_reply(request, codec.encode_reply(5, [1.0, 2.0])).kind == "result"
    with pytest.raises(fuzz.FuzzFailure, match="seq"):
        fuzz.check_reply(request, codec.encode_reply(6, [1.0, 2.0]))
    with pytest.raises(fuzz.FuzzFailure, match="malformed"):
        fuzz.check_reply(request, [b"{}", b""])
    garbage = [b"\xff", b""]
    assert fuzz.check_reply(garbage, codec.encode_reply(-1, None, error="bad request")).kind == "error"


def test_fuzzed_requests_over_a_real_socket_are_each_answered_and_the_server_keeps_serving():
    srv = fuzz.make_fuzz_server()
    srv.start_in_thread()
    try:
        tally = fuzz.socket_campaign(srv.endpoint, 400, seed=1)
        assert tally.failures == [] and tally.hangs == 0, tally.as_dict()
        assert sum(tally.answered.values()) == 400
        assert tally.answered["error"] > 300   # nearly all are refused, and a fresh client is still served
        from dvfo_ros.core.wire.link import CloudLink
        with CloudLink(srv.endpoint) as link:
            assert link.ping(3.0)
            frames = fuzz.seed_requests(9)[0]
            link.submit(frames, 9)
            reply = link.wait(9, 3.0)
            assert reply is not None and reply.kind == "result" and reply.seq == 9
    finally:
        srv.stop()
    assert srv.stats["requests"] >= 401 and srv.stats["errors"] >= 300


def test_seeds_carry_far_deadlines_and_all_header_fields():
    header = json.loads(fuzz.seed_requests(1)[0][0])
    assert set(fuzz.HEADER_KEYS) <= set(header)
    assert header["deadline"] > time.time() + 10 * 365 * 86400
