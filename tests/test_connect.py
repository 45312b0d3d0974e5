"""Connecting: URLs, the embedded default, and errors that say what to check."""

from __future__ import annotations

import pytest

import rdebug_nb as rd
from tests.servers import free_port


def test_no_url_and_no_variable_starts_an_embedded_server() -> None:
    with rd.connect(env={}) as bus:
        assert bus.server is not None
        assert "embedded" in repr(bus)
        assert bus.guilds().empty


def test_the_environment_variable_is_used(valkey_url: str) -> None:
    with rd.connect(env={"RDEBUG_REDIS_URL": valkey_url}) as bus:
        assert bus.server is None
        bus.ping()


def test_demo_fills_the_embedded_server() -> None:
    with rd.connect(env={}, demo=True) as bus:
        guilds = bus.guilds()

    assert guilds["namespace"].tolist() == ["demo-orders"]
    assert guilds["messages"].iloc[0] > 100


def test_a_refused_connection_names_the_url_without_its_password() -> None:
    url = f"redis://alice:s3cret@127.0.0.1:{free_port()}/0"

    with pytest.raises(rd.ConnectionFailed) as caught:
        rd.connect(url, timeout=1, retries=0)

    message = str(caught.value)
    assert "redis://alice:***@127.0.0.1" in message
    assert "s3cret" not in message
    assert "check that the server runs" in message


def test_a_wrong_password_is_reported(redis_url: str) -> None:
    bad = redis_url.replace("redis://", "redis://nobody:wrong@")

    with pytest.raises(rd.ConnectionFailed, match="nobody:\\*\\*\\*@") as caught:
        rd.connect(bad, timeout=2, retries=0)

    assert "wrong" not in str(caught.value)


def test_a_bad_url_is_reported() -> None:
    with pytest.raises(rd.ConnectionFailed, match="not a Redis URL"):
        rd.connect("http://example.invalid", retries=0)


def test_unix_socket_urls_work(tmp_path: object) -> None:
    from rdebug_nb.server import EmbeddedServer

    socket = f"/tmp/rdebug-test-{free_port()}.sock"
    with EmbeddedServer(unixsocket=socket, unixsocketperm=700) as server:
        assert server.url
        with rd.connect(f"unix://{socket}") as bus:
            bus.ping()
