"""A real Redis Cluster for the tests: three primaries made with ``redis-cli``."""

from __future__ import annotations

import random
import socket
import subprocess
import time
from pathlib import Path

import redis

from tests.servers import RedisServerProcess

PRIMARIES = 3
BUS_OFFSET = 10_000
"""A node also listens on its port + 10000 (the cluster bus)."""


class RedisClusterProcesses:
    """Three ``redis-server --cluster-enabled yes`` joined by ``redis-cli``."""

    def __init__(self, workdir: Path) -> None:
        settings = (
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", "5000",
        )  # fmt: skip
        self.nodes = [
            RedisServerProcess(workdir / f"node{n}", *settings, port=cluster_port())
            for n in range(PRIMARIES)
        ]
        try:
            self._create()
            self._wait_ok()
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        """URL of the first node (any node reaches the whole cluster)."""
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    def node_clients(self) -> list[redis.Redis]:
        """A plain client on each node, for checks behind the cluster client."""
        return [redis.Redis(port=node.port) for node in self.nodes]

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def _create(self) -> None:
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        subprocess.run(
            ["redis-cli", "--cluster", "create", *addresses,
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip

    def _wait_ok(self, timeout: float = 30.0) -> None:
        clients = self.node_clients()
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                states = [c.cluster("INFO")["cluster_state"] for c in clients]
                if all(state == "ok" for state in states):
                    return
                time.sleep(0.1)
        finally:
            for client in clients:
                client.close()
        raise RuntimeError("the test cluster did not reach cluster_state:ok")


def cluster_port() -> int:
    """A free port whose cluster-bus port (+10000, below 65536) is free too."""
    for _ in range(200):
        port = random.randint(20_000, 55_000)
        if _free(port) and _free(port + BUS_OFFSET):
            return port
    raise RuntimeError("no free pair of ports for a cluster node")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True
