"""A payload is read as ``json.loads`` reads it, whichever way the parser takes: at once for a
document that fills the payload (every frame of ours), through the full decode otherwise."""

from __future__ import annotations

import json

import pytest

from drc.link.protocol import FrameError, Request, Response

REQUEST = b'{"id":7,"method":"NodeAccess","args":[{"uid":1000,"job":1,"node":"n1"},42],"rid":"r-1"}'


@pytest.mark.parametrize("around", [(b"", b""), (b" \n", b""), (b"", b"\r\n "), (b"\t", b"\t")])
def test_whitespace_around_the_document_is_json_and_read_alike(around: tuple[bytes, bytes]) -> None:
    payload = around[0] + REQUEST + around[1]
    request = Request.from_payload(payload)
    assert request == Request(7, "NodeAccess", [{"uid": 1000, "job": 1, "node": "n1"}, 42], "r-1")
    assert json.loads(payload)["args"] == request.args


@pytest.mark.parametrize("payload", [REQUEST + b"{}", REQUEST + b" 1", b"", b"  ", b"{"])
def test_anything_but_one_document_is_refused(payload: bytes) -> None:
    with pytest.raises(json.JSONDecodeError):
        json.loads(payload)
    with pytest.raises(FrameError, match="not JSON"):
        Request.from_payload(payload)


def test_an_answer_is_read_whole() -> None:
    answer = {"credential": 7, "cookie1": 3758096384, "grants": ["uid:2000"], "state": "ACTIVE"}
    payload = Response(9, ok=[answer]).to_payload()
    assert Response.from_payload(payload) == Response(9, ok=[answer])
    assert Response.from_payload(b" " + payload + b"\n") == Response(9, ok=[answer])
