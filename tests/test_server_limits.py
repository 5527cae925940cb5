"""The connection admission rule (RELIABILITY K6, K12) without sockets: a per-user share, and
the last slots kept for root and the daemon's own user."""

from __future__ import annotations

from pathlib import Path

from syncd.control.auth import Authorizer
from syncd.control.server import Server
from tests.helpers.server import OPS, FakeHandler

USER = 4242


def server_with(connections: int, **per_uid: int) -> Server:
    server = Server(Path("/nonexistent/s.sock"), 0o600, FakeHandler(), Authorizer(None), ops=OPS)
    server.daemon_uid = 999
    server._conns = {object() for _ in range(connections)}  # type: ignore[misc]
    server._per_uid = {int(k[1:]): v for k, v in per_uid.items()}
    return server


def test_one_user_gets_its_share_and_no_more() -> None:
    assert server_with(63, u4242=63)._refusal(USER) is None
    refused = server_with(64, u4242=64)._refusal(USER)
    assert refused is not None and f"from uid {USER} (limit 64 per user)" in refused
    assert server_with(64, u4242=64)._refusal(USER + 1) is None  # another user is not


def test_the_last_slots_are_kept_for_root_and_the_daemons_user() -> None:
    full_for_users = server_with(240)  # 256 - 16 reserved
    refused = full_for_users._refusal(USER)
    assert refused is not None and "too many connections (limit 256)" in refused
    assert full_for_users._refusal(0) is None
    assert full_for_users._refusal(999) is None
    assert server_with(255)._refusal(0) is None
    assert server_with(256)._refusal(0) is not None  # the global cap holds for everyone
