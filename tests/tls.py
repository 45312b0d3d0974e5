"""TLS for the tests: a private CA made with the ``openssl`` command line, and a
redis-server that accepts only TLS clients holding a certificate from that CA."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import redis

from tests.servers import RedisServerProcess, free_port

_DAYS = "2"


@dataclass(frozen=True)
class Certificates:
    """Files of a private CA, a server certificate and a client certificate."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_certificates(folder: Path) -> Certificates:
    """A self-signed CA and two certificates it signed (server for 127.0.0.1)."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca = folder / "ca.key", folder / "ca.crt"
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", _DAYS,
        "-subj", "/CN=rdebug test CA", "-keyout", ca_key, "-out", ca,
    )  # fmt: skip
    server = _signed(folder, "server", ca, ca_key, "subjectAltName=IP:127.0.0.1")
    client = _signed(folder, "client", ca, ca_key, "extendedKeyUsage=clientAuth")
    return Certificates(ca, *server, *client)


def _signed(
    folder: Path, name: str, ca: Path, ca_key: Path, extension: str
) -> tuple[Path, Path]:
    key, request, cert = (folder / f"{name}.{ext}" for ext in ("key", "csr", "crt"))
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN=rdebug test {name}",
        "-keyout", key, "-out", request,
    )  # fmt: skip
    extensions = folder / f"{name}.ext"
    extensions.write_text(extension + "\n")
    _openssl(
        "x509", "-req", "-in", request, "-CA", ca, "-CAkey", ca_key,
        "-CAcreateserial", "-days", _DAYS, "-extfile", extensions, "-out", cert,
    )  # fmt: skip
    return cert, key


def _openssl(*args: str | Path) -> None:
    subprocess.run(
        ["openssl", *map(str, args)], check=True, capture_output=True, timeout=60
    )


class TlsRedisServer(RedisServerProcess):
    """redis-server listening on TLS only, requiring client certificates."""

    def __init__(self, workdir: Path, certs: Certificates) -> None:
        self.certs = certs
        port = free_port()
        super().__init__(
            workdir,
            "--port", "0",
            "--tls-port", str(port),
            "--tls-cert-file", str(certs.server_cert),
            "--tls-key-file", str(certs.server_key),
            "--tls-ca-cert-file", str(certs.ca),
            "--tls-auth-clients", "yes",
            port=port,
        )  # fmt: skip

    @property
    def url(self) -> str:
        """``rediss://`` URL with the CA and the client certificate."""
        return self.url_with(self.certs.client_cert, self.certs.client_key)

    def url_with(self, cert: Path | None, key: Path | None) -> str:
        """The URL with another client certificate (or none)."""
        options = {"ssl_ca_certs": str(self.certs.ca)}
        if cert and key:
            options |= {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
        return f"rediss://127.0.0.1:{self.port}/0?{urlencode(options, safe='/')}"

    def wait_ready(self, timeout: float = 20.0) -> None:
        client = redis.Redis.from_url(self.url, socket_connect_timeout=1)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                try:
                    if client.ping():
                        return
                except redis.exceptions.ConnectionError:
                    if self.process.poll() is not None:
                        break
                time.sleep(0.05)
        finally:
            client.close()
        raise RuntimeError(f"TLS redis-server on port {self.port} did not start")
