"""``RedisServer``: a real redis-server subprocess, public in ``actorstream.testing``; the demo
starts one too."""

from __future__ import annotations

import re
import shlex
import signal
import subprocess
import tempfile
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Self
from urllib.parse import quote, urlencode

from .ping import Answer, wait_answers
from .process import (
    START_TIMEOUT,
    STOP_TIMEOUT,
    Managed,
    Owned,
    config_value,
    find_redis_server,
    free_port,
    server_version,
    signal_process,
    spawn,
    stop_process,
    wait_state,
)

__all__ = ["RedisServer"]

_USER_PASSWORD = re.compile(r"^\s*user\s+(\S+)\s.*?(?:^|\s)>(\S+)")


class RedisServer(Managed):
    """A real ``redis-server`` subprocess on a free port, with a temporary directory of its own.

    The process can be killed (``kill``, SIGKILL), stopped gracefully (``terminate``), frozen
    (``pause``/``resume``, SIGSTOP/SIGCONT) and ``restart``-ed on the same port and directory, so
    with ``appendonly=True`` the data written before a kill -9 comes back (up to the last second,
    ``appendfsync everysec``). Without AOF, persistence is off entirely (``save ""``): a restart
    gives an empty server.

    Options:

    - ``password``: ``requirepass``; ``url`` then carries it.
    - ``acl_users``: ACL rule lines as in redis.conf, e.g. ``"user app on >secret ~* &* +@all"``.
      Connect as one of them with ``url_for("app", "secret")``.
    - ``tls``: TLS only (``--port 0``, ``--tls-port``), certificates made with ``trustme`` in the
      server's directory (``ca_path``, ``client_cert_path``, ``client_key_path``).
      ``tls_auth_clients=True`` makes the server require a client certificate, which ``url``
      then names.
    - ``unix_socket``: also listen on a unix socket (``unix_socket_path``, ``unix_url``).
    - ``maxmemory`` (e.g. ``"2mb"``) and ``maxmemory_policy`` (default ``noeviction``).
    - ``extra_args``: appended to the command line, e.g. ``["--hz", "100"]``.

    Use it as a context manager (sync or async), or call ``start()`` and ``close()``.
    """

    def __init__(
        self,
        *,
        appendonly: bool = False,
        password: str | None = None,
        acl_users: Sequence[str] = (),
        tls: bool = False,
        tls_auth_clients: bool = False,
        unix_socket: bool = False,
        maxmemory: str | None = None,
        maxmemory_policy: str = "noeviction",
        extra_args: Sequence[str] = (),
        binary: str | None = None,
        port: int | None = None,
    ) -> None:
        if tls_auth_clients and not tls:
            raise ValueError("tls_auth_clients=True needs tls=True")
        if isinstance(acl_users, str):
            raise TypeError("acl_users is a list of ACL rule lines, not one string")
        self.binary = binary or find_redis_server()
        self.appendonly = appendonly
        self.password = password
        self.acl_users: tuple[str, ...] = tuple(acl_users)
        self.tls = tls
        self.tls_auth_clients = tls_auth_clients
        self.unix_socket = unix_socket
        self.maxmemory = maxmemory
        self.maxmemory_policy = maxmemory_policy
        self.extra_args: tuple[str, ...] = tuple(extra_args)
        self._fixed_port = port
        self._port: int | None = port
        self._owned = Owned()
        self._finalizer = weakref.finalize(self, self._owned.release)
        self._paused = False
        self._closed = False

    @property
    def _proc(self) -> subprocess.Popen[bytes] | None:
        return self._owned.proc

    @property
    def _dir(self) -> Path | None:
        return self._owned.dir

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> Self:
        """Start the server and wait until it answers PING (raises ``RuntimeError`` if it won't)."""
        if self._closed:
            raise RuntimeError("this RedisServer was closed; make a new one")
        if self.running:
            raise RuntimeError("redis-server is already running; use restart()")
        if self._dir is None:
            self._owned.dir = Path(tempfile.mkdtemp(prefix="actorstream-redis-"))
            if self.tls:
                self._make_certificates()
        # A restart keeps its port (clients reconnect to it); a first start on a port we chose
        # retries on another one if something grabbed it between our probe and the bind.
        retry_ports = self._proc is None and self._fixed_port is None
        if self._port is None:
            self._port = free_port()
        attempts = 5 if retry_ports else 1
        for attempt in range(attempts):
            if attempt > 0:
                self._port = free_port()
            try:
                self._spawn(timeout)
            except _AddressInUse:
                if attempt == attempts - 1:
                    raise RuntimeError(
                        f"redis-server could not bind port {self._port}: address in use\n"
                        + self.log()[-2000:]
                    ) from None
                continue
            return self
        raise AssertionError("unreachable")  # pragma: no cover

    def kill(self) -> None:
        """SIGKILL the server (a crash: no AOF rewrite, no goodbye to clients) and reap it."""
        if self._proc is not None:
            signal_process(self._proc, signal.SIGKILL)
            self._proc.wait()
            self._paused = False

    def terminate(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop the server gracefully (SIGCONT, SIGTERM); SIGKILL it after ``timeout``."""
        if self._proc is not None:
            stop_process(self._proc, graceful=True, timeout=timeout)
            self._paused = False

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open, nothing is answered."""
        if not self.running:
            raise RuntimeError("redis-server is not running")
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)
        wait_state(self._proc, stopped=True)
        self._paused = True

    def resume(self) -> None:
        """Continue a paused server (SIGCONT)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGCONT)
            wait_state(self._proc, stopped=False)
        self._paused = False

    def restart(self, timeout: float = START_TIMEOUT) -> Self:
        """Start again on the same port and directory; a running server is terminated first."""
        if self.running:
            self.terminate()
        return self.start(timeout)

    def close(self) -> None:
        """Kill the server if it still runs, reap it and delete its directory. Idempotent."""
        self._finalizer()
        self._paused = False
        self._closed = True

    stop = close

    # -- state -----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True while the process exists (paused counts as running)."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def paused(self) -> bool:
        return self._paused and self.running

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def port(self) -> int:
        """The TCP port (the TLS port when ``tls=True``); fixed for the server's whole life."""
        if self._port is None:
            raise RuntimeError("redis-server has not been started")
        return self._port

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def dir(self) -> Path:
        """The server's working directory (AOF, certificates, socket, log)."""
        if self._dir is None:
            raise RuntimeError("redis-server has not been started")
        return self._dir

    @property
    def log_path(self) -> Path:
        return self.dir / "redis.log"

    def log(self) -> str:
        """The server's log so far (useful in assertion messages)."""
        try:
            return self.log_path.read_text(errors="replace")
        except (OSError, RuntimeError):
            return ""

    @property
    def ca_path(self) -> Path:
        """The CA certificate that signed the server and client certificates (``tls=True``)."""
        self._require_tls()
        return self.dir / "ca.pem"

    @property
    def client_cert_path(self) -> Path:
        self._require_tls()
        return self.dir / "client.crt"

    @property
    def client_key_path(self) -> Path:
        self._require_tls()
        return self.dir / "client.key"

    @property
    def unix_socket_path(self) -> Path:
        if not self.unix_socket:
            raise RuntimeError("this RedisServer has no unix socket (unix_socket=False)")
        return self.dir / "redis.sock"

    # -- URLs ------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """A URL with full rights: ``redis://127.0.0.1:PORT/0``, or ``rediss://...`` with TLS.

        It carries the ``requirepass`` password, and for TLS the CA (``ssl_ca_certs``) and, when
        the server requires one, the client certificate (``ssl_certfile``, ``ssl_keyfile``).
        """
        return self.url_for(None, self.password)

    def url_for(self, username: str | None, password: str | None, *, db: int = 0) -> str:
        """A TCP URL that authenticates as ``username`` (None: the default user)."""
        scheme = "rediss" if self.tls else "redis"
        auth = ""
        if username is not None or password is not None:
            user = quote(username or "", safe="")
            auth = user + (":" + quote(password, safe="") if password is not None else "") + "@"
        query = ""
        if self.tls:
            params = {"ssl_ca_certs": str(self.ca_path)}
            if self.tls_auth_clients:
                params["ssl_certfile"] = str(self.client_cert_path)
                params["ssl_keyfile"] = str(self.client_key_path)
            query = "?" + urlencode(params)
        return f"{scheme}://{auth}{self.host}:{self.port}/{db}{query}"

    @property
    def unix_url(self) -> str:
        """``unix:///path/redis.sock?db=0`` (with ``password=`` when the server has one)."""
        return self.unix_url_for(None, self.password)

    def unix_url_for(self, username: str | None, password: str | None, *, db: int = 0) -> str:
        params: dict[str, str] = {"db": str(db)}
        if password is not None:
            params["password"] = password
        user = quote(username, safe="") + "@" if username is not None else ""
        return f"unix://{user}{self.unix_socket_path}?{urlencode(params)}"

    # -- internals -------------------------------------------------------------------------

    def _require_tls(self) -> None:
        if not self.tls:
            raise RuntimeError("this RedisServer does not use TLS (tls=False)")

    def _make_certificates(self) -> None:
        try:
            import trustme
        except ImportError as exc:  # pragma: no cover - trustme is a test dependency
            raise RuntimeError(
                "RedisServer(tls=True) needs the trustme package: pip install trustme"
            ) from exc
        ca = trustme.CA()
        ca.cert_pem.write_to_path(str(self.dir / "ca.pem"))
        server = ca.issue_cert("127.0.0.1", "localhost")
        server.cert_chain_pems[0].write_to_path(str(self.dir / "server.crt"))
        for extra in server.cert_chain_pems[1:]:
            extra.write_to_path(str(self.dir / "server.crt"), append=True)
        server.private_key_pem.write_to_path(str(self.dir / "server.key"))
        client = ca.issue_cert("actorstream-test-client")
        client.cert_chain_pems[0].write_to_path(str(self.dir / "client.crt"))
        client.private_key_pem.write_to_path(str(self.dir / "client.key"))

    def _config(self) -> str:
        port = self.port
        lines = [
            "daemonize no",
            "bind 127.0.0.1",
            f"dir {config_value(str(self.dir))}",
            'logfile ""',
            "loglevel notice",
            "databases 16",
            'save ""',
        ]
        if server_version(self.binary) >= (7, 0, 0):
            lines.append("enable-debug-command local")
        if self.tls:
            lines += [
                "port 0",
                f"tls-port {port}",
                f"tls-cert-file {config_value(str(self.dir / 'server.crt'))}",
                f"tls-key-file {config_value(str(self.dir / 'server.key'))}",
                f"tls-ca-cert-file {config_value(str(self.dir / 'ca.pem'))}",
                f"tls-auth-clients {'yes' if self.tls_auth_clients else 'no'}",
            ]
        else:
            lines.append(f"port {port}")
        if self.unix_socket:
            lines += [
                f"unixsocket {config_value(str(self.unix_socket_path))}",
                "unixsocketperm 700",
            ]
        if self.appendonly:
            lines += ["appendonly yes", "appendfsync everysec"]
        else:
            lines.append("appendonly no")
        if self.password is not None:
            lines.append(f"requirepass {config_value(self.password)}")
        if self.maxmemory is not None:
            lines += [
                f"maxmemory {self.maxmemory}",
                f"maxmemory-policy {self.maxmemory_policy}",
            ]
        lines += list(self.acl_users)
        return "\n".join(lines) + "\n"

    def _spawn(self, timeout: float) -> None:
        conf = self.dir / "redis.conf"
        conf.write_text(self._config())
        with self.log_path.open("ab") as log:
            log.write(f"--- actorstream.testing: starting on port {self.port}\n".encode())
            log.flush()
            proc = self._owned.proc = spawn(
                [self.binary, str(conf), *self.extra_args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                # Its own session: a Ctrl-C in the terminal reaches pytest, not the servers.
                start_new_session=True,
            )
        self._paused = False
        answer = wait_answers(self._readiness_url(), timeout, lambda: proc.poll() is None)
        if answer is Answer.READY:
            return
        if answer is Answer.EXITED:
            log_text = self.log()
            if "Address already in use" in log_text.rsplit("--- actorstream.testing", 1)[-1]:
                raise _AddressInUse
            raise RuntimeError(
                f"redis-server exited with code {proc.returncode} at start-up "
                f"({shlex.join([self.binary, str(conf), *self.extra_args])}); its log:\n"
                + log_text[-3000:]
            )
        self.kill()
        raise RuntimeError(
            f"redis-server on port {self.port} did not answer PING within {timeout}s; "
            "its log:\n" + self.log()[-3000:]
        )

    def _readiness_url(self) -> str:
        """A URL that may PING: the password's, else the first enabled ACL user's."""
        if self.password is None:
            for line in self.acl_users:
                match = _USER_PASSWORD.match(line)
                if match is not None and " on " in f" {line} ":
                    return self.url_for(match.group(1), match.group(2))
        return self.url

    def __repr__(self) -> str:
        state = "paused" if self.paused else "running" if self.running else "stopped"
        return f"<RedisServer port={self._port} {state}>"


class _AddressInUse(Exception):
    pass
