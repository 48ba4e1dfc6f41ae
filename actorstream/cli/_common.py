"""What every subcommand shares: exit codes, loading ``module:attr``, the Redis URL, errors.

Errors a user can fix are ``CliError``: ``main()`` prints their one-line message (never a
traceback) and exits with their code.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import shutil
import sys
import textwrap
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import trio
from redis import exceptions as rex

from .._core.errors import ConfigError
from .._core.exits import (
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    UNREACHABLE,
    Exit,
    classify_exit,
)
from .._streams import Stream
from .._system import DEFAULT_URL, System, default_redis_url
from .._transport import Client, redact_url

URL_ENV = "ACTORSTREAM_REDIS_URL"

T = TypeVar("T")


class CliError(Exception):
    """An error to report as one line, with an exit code.

    Raised ``from`` an exception in the user's code (an import error), the cause's traceback
    is printed too with ``-v``: the line says what failed, the traceback says where.
    """

    def __init__(self, message: str, code: int = EXIT_USAGE, *, transient: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        #: Redis did not answer (it may later); not refused credentials or a bad database.
        self.transient = transient


def add_command(
    subparsers: Any,
    name: str,
    help_text: str,
    description: str,
    *,
    parents: Sequence[argparse.ArgumentParser] = (),
    epilog: str | None = None,
    target: str | None = None,
    handler: Callable[[argparse.Namespace], int] | None = None,
) -> argparse.ArgumentParser:
    """A subcommand's parser: ``help_text`` is its line in ``actorstream --help``; ``epilog``
    (examples: command lines) is printed as written, the description wrapped as argparse would.
    ``target`` is the help of its positional TARGET argument (``module:attr``), if it takes one;
    ``handler`` runs the parsed command."""
    if epilog:
        # The raw formatter keeps the epilog's lines, and would leave the description one line.
        description = textwrap.fill(description, shutil.get_terminal_size().columns - 2)
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name,
        parents=list(parents),
        help=help_text,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter if epilog else argparse.HelpFormatter,
    )
    if target is not None:
        parser.add_argument("target", metavar="TARGET", help=target)
    if handler is not None:
        parser.set_defaults(handler=handler)
    return parser


def add_url_option(parser: argparse.ArgumentParser, *, top_level: bool = False) -> None:
    parser.add_argument(
        "--url",
        metavar="URL",
        # Sub-parsers must not overwrite a --url given before the subcommand.
        default=None if top_level else argparse.SUPPRESS,
        help=f"Redis URL (redis://, rediss://, unix://); default: the redis_url the app's "
        f"System is given in code, else ${URL_ENV}, else {DEFAULT_URL}",
    )


def configured_url(args: argparse.Namespace) -> str | None:
    """``--url``, else ``$ACTORSTREAM_REDIS_URL``, else None (the caller decides)."""
    url: str | None = getattr(args, "url", None) or os.environ.get(URL_ENV) or None
    return url


def resolve_url(args: argparse.Namespace, system: System | None = None) -> str:
    """The one rule (docs/redis-url.md): --url, else the System's own (its ``redis_url=``, else
    $ACTORSTREAM_REDIS_URL, else the default), else $ACTORSTREAM_REDIS_URL, else the default."""
    url: str | None = getattr(args, "url", None)
    if url:
        return url
    return system.redis_url if system is not None else default_redis_url()


# -- loading the user's app -------------------------------------------------------------------


def split_target(target: str) -> tuple[str, str]:
    module, sep, attr = target.rpartition(":")
    if not sep or not module or not attr:
        raise CliError(
            f"bad target {target!r}: expected module:attribute (e.g. myapp.workers:system "
            "or path/to/app.py:system)"
        )
    return module, attr


def import_module(name: str) -> Any:
    """Import ``pkg.mod`` (the current directory is importable) or a ``path/to/file.py``."""
    if name.endswith(".py") or os.sep in name:
        path = Path(name)
        if not path.is_file():
            raise CliError(f"cannot load {name!r}: no such file")
        mod_name = path.stem
        if mod_name in sys.modules and getattr(sys.modules[mod_name], "__file__", None) == str(
            path.resolve()
        ):
            return sys.modules[mod_name]
        spec = importlib.util.spec_from_file_location(mod_name, path.resolve())
        if spec is None or spec.loader is None:
            raise CliError(f"cannot load {name!r}: not a Python file")
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = module
        sys.path.insert(0, str(path.resolve().parent))
        try:
            spec.loader.exec_module(module)
        except ConfigError as exc:
            raise CliError(f"cannot load {name!r}: {exc}") from None
        except Exception as exc:
            del sys.modules[mod_name]
            raise CliError(f"cannot load {name!r}: {type(exc).__name__}: {exc}") from exc
        return module
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, "")
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            raise CliError(f"cannot import module {name!r}: no module named {exc.name!r}") from None
        raise CliError(f"cannot import module {name!r}: {exc}") from exc
    except ConfigError as exc:
        raise CliError(f"cannot import module {name!r}: {exc}") from None
    except Exception as exc:
        raise CliError(f"cannot import module {name!r}: {type(exc).__name__}: {exc}") from exc


def _systems_in(module: Any) -> list[System]:
    return [v for v in vars(module).values() if isinstance(v, System)]


def system_of(stream: Stream[Any]) -> System:
    """The System that declared ``stream`` (a stream knows it only as its ``Owner``)."""
    owner = stream.system
    if not isinstance(owner, System):
        raise CliError(f"{stream!r} was not declared by an actorstream System")
    return owner


def load_system(target: str) -> System:
    """``module:attr`` naming a System."""
    module_name, attr = split_target(target)
    module = import_module(module_name)
    value = getattr(module, attr, None)
    if value is None:
        found = [k for k, v in vars(module).items() if isinstance(v, System)]
        hint = f" (Systems there: {', '.join(found)})" if found else ""
        raise CliError(f"module {module_name!r} has no attribute {attr!r}{hint}")
    if isinstance(value, Stream):
        names = [k for k, v in vars(module).items() if v is system_of(value)]
        suggest = f" ({module_name}:{names[0]})" if names else ""
        raise CliError(f"{target!r} is a Stream, not a System: name its System{suggest}")
    if not isinstance(value, System):
        raise CliError(
            f"{target!r} is a {type(value).__name__}, not an actorstream System"
        )
    return value


def load_stream(target: str) -> Stream[Any]:
    """``module:attr`` naming a Stream, or ``module:name`` where name is a stream of its System."""
    stream: Stream[Any] = load_declared(target, Stream, "stream", lambda system: system.streams)
    return stream


def load_declared(
    target: str, kind: type[T], what: str, declared: Callable[[System], Mapping[str, Any]]
) -> T:
    """``module:attr`` naming a ``kind`` (a Stream, a Table), or ``module:name`` where name is
    one of the ``what``s a System of the module declared (``declared(system)``, by name)."""
    module_name, attr = split_target(target)
    module = import_module(module_name)
    value = getattr(module, attr, None)
    if isinstance(value, kind):
        return value
    if value is not None and not isinstance(value, System):
        raise CliError(
            f"{target!r} is a {type(value).__name__}, not an actorstream {kind.__name__}"
        )
    systems = _systems_in(module)
    for system in systems:
        if attr in declared(system):
            found: T = declared(system)[attr]
            return found
    if isinstance(value, System):
        names = ", ".join(sorted(declared(value))) or "none"
        raise CliError(f"{target!r} is a System; name one of its {what}s ({what}s: {names})")
    names = ", ".join(sorted({n for s in systems for n in declared(s)})) or "none declared"
    raise CliError(f"unknown {what} {attr!r} in module {module_name!r} ({what}s: {names})")


def is_target(text: str) -> bool:
    """A ``module:attr`` target (else an app name)."""
    return ":" in text


# -- Redis -------------------------------------------------------------------------------------

def unreachable(url: str, exc: BaseException) -> CliError:
    """The one line for a Redis that cannot be used: the URL named once (and redacted)."""
    found = classify_exit(exc, redact_url(url))
    if found is None:
        found = Exit(f"cannot reach Redis at {redact_url(url)}: {exc}", EXIT_UNREACHABLE)
    transient = isinstance(exc, UNREACHABLE) and not isinstance(exc, rex.AuthenticationError)
    return CliError(found.message, found.code, transient=transient)


async def check_reachable(url: str, *, within: float = 3.0) -> None:
    """PING once, fast: an unreachable Redis is reported in one line with exit code 3."""
    try:
        client = Client.from_url(url, connect_timeout=within, socket_timeout=within)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    client.connect_retry_for = 0.0
    try:
        with trio.fail_after(within + 1):
            await client.execute("PING")
    except trio.TooSlowError:
        raise unreachable(url, rex.TimeoutError(f"no answer within {within:g}s")) from None
    except rex.ResponseError as exc:
        # NOPERM for PING still means it answers.
        if "NOPERM" not in str(exc):
            raise unreachable(url, exc) from None
    except (rex.AuthenticationError, *UNREACHABLE) as exc:
        raise unreachable(url, exc) from None
    finally:
        with trio.CancelScope(shield=True):
            await client.aclose()


def run_async(fn: Callable[[], Awaitable[T]], *, url: str | None = None) -> T:
    """``trio.run`` that turns a lost Redis connection into a one-line CliError."""
    try:
        return trio.run(fn)
    except (rex.RedisError, OSError) as exc:
        found = classify_exit(exc, redact_url(url) if url is not None else None)
        if found is None:
            raise
        raise CliError(found.message, found.code) from None
