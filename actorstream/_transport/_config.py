"""Connection settings parsed from a Redis URL (the ``redis`` package does the parsing)."""

from __future__ import annotations

import re
import ssl
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import attrs
from attrs import frozen
from redis.connection import parse_url

from .._core.errors import ConfigError

_CERT_REQS = {
    "none": ssl.CERT_NONE,
    "optional": ssl.CERT_OPTIONAL,
    "required": ssl.CERT_REQUIRED,
}


_QUERY_SECRET = re.compile(r"((?:^|[?&])(?:password|ssl_password)=)[^&#]*", re.IGNORECASE)


def redact_url(url: str) -> str:
    """The URL with every password (user part or query) replaced by ``***``: safe to print."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable redis url>"
    if parts.password is not None:
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        netloc = f"{parts.username or ''}:***@{host}"
        url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    head, sep, query = url.partition("?")
    return head + sep + _QUERY_SECRET.sub(r"\1***", query)


@frozen
class ConnectionConfig:
    """Where and how to connect. ``repr`` never shows the password."""

    host: str = "127.0.0.1"
    port: int = 6379
    path: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = attrs.field(default=None, repr=False)
    tls: bool = False
    ssl_ca_certs: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_cert_reqs: str = "required"
    ssl_check_hostname: bool = True
    connect_timeout: float = 5.0
    socket_timeout: float | None = 10.0
    #: More Cluster seed nodes, from ``?cluster_nodes=host:port,host:port`` (ignored on one Redis).
    cluster_nodes: tuple[tuple[str, int], ...] = ()

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> ConnectionConfig:
        """Parse ``redis://``, ``rediss://`` or ``unix://`` URLs (ACL user, password, db, TLS).

        TLS options come from the query string: ``ssl_ca_certs``, ``ssl_certfile``,
        ``ssl_keyfile``, ``ssl_cert_reqs`` (none/optional/required), ``ssl_check_hostname``.
        """
        try:
            kw: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
        except ValueError as exc:
            raise ConfigError(f"bad Redis URL {redact_url(url)!r}: {exc}") from None
        scheme = url.split("://", 1)[0].lower()
        values: dict[str, Any] = {
            "db": int(kw.get("db", 0) or 0),
            "username": kw.get("username"),
            "password": kw.get("password"),
        }
        if scheme == "unix":
            values["path"] = kw["path"]
        else:
            values["host"] = kw.get("host") or "127.0.0.1"
            values["port"] = int(kw.get("port") or 6379)
        if scheme == "rediss":
            values["tls"] = True
            for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
                if kw.get(name):
                    values[name] = str(kw[name])
            reqs = str(kw.get("ssl_cert_reqs") or "required").lower()
            if reqs not in _CERT_REQS:
                raise ConfigError(
                    f"ssl_cert_reqs must be one of {sorted(_CERT_REQS)}, got {reqs!r}"
                )
            values["ssl_cert_reqs"] = reqs
            check = kw.get("ssl_check_hostname")
            if check is not None:
                values["ssl_check_hostname"] = str(check).lower() in ("1", "true", "yes")
        if kw.get("cluster_nodes"):
            values["cluster_nodes"] = _parse_nodes(str(kw["cluster_nodes"]), redact_url(url))
        for name in ("socket_timeout", "socket_connect_timeout"):
            if kw.get(name) is not None:
                key = "connect_timeout" if name == "socket_connect_timeout" else name
                values[key] = float(kw[name])
        values.update(overrides)
        return cls(**values)

    def for_node(self, host: str, port: int) -> ConnectionConfig:
        """The same settings (credentials, TLS, timeouts) for another node of a Cluster."""
        return attrs.evolve(self, host=host, port=port, path=None, cluster_nodes=())

    def ssl_context(self) -> ssl.SSLContext:
        """The client TLS context: CA from the URL (else system roots), optional client cert."""
        ctx = ssl.create_default_context(cafile=self.ssl_ca_certs)
        ctx.verify_mode = _CERT_REQS[self.ssl_cert_reqs]
        ctx.check_hostname = self.ssl_check_hostname and ctx.verify_mode != ssl.CERT_NONE
        if self.ssl_certfile:
            ctx.load_cert_chain(self.ssl_certfile, self.ssl_keyfile)
        return ctx

    def describe(self) -> str:
        """Where this points, without secrets."""
        scheme = "unix" if self.path else ("rediss" if self.tls else "redis")
        where = self.path if self.path else f"{self.host}:{self.port}"
        user = f"{self.username}@" if self.username else ""
        return f"{scheme}://{user}{where}/{self.db}"


def _parse_nodes(text: str, where: str) -> tuple[tuple[str, int], ...]:
    nodes: list[tuple[str, int]] = []
    for item in text.split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(
                f"bad cluster_nodes entry {item!r} in {where!r}: expected host:port[,host:port]"
            )
        nodes.append((host.strip("[]"), int(port)))
    return tuple(nodes)
