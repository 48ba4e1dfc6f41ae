"""Sessions: tests (the default CI run), chaos, lint, typecheck, docs, bench."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests"]
nox.options.default_venv_backend = "venv"

#: pytest-xdist workers. The machine the figures in docs/design.md come from has 2 cores, and
#: the suite spends about half its time waiting (worker processes starting, lease timing), so a
#: third worker fills the cores (docs/design.md). Every test starts its own redis-server
#: processes on free ports, so tests share nothing across workers.
WORKERS = "3"


@nox.session
def tests(session: nox.Session) -> None:
    """Unit and integration tests against real redis-server processes (no chaos/soak), in
    parallel; a test that hangs fails after pyproject.toml's per-test `timeout`, by name."""
    session.install("-e", ".[test]")
    # pytest exits 5 when nothing was collected; nox treats any non-zero code as failure.
    session.run("pytest", "-q", "-p", "no:cacheprovider", "-n", WORKERS, *session.posargs)


@nox.session
def chaos(session: nox.Session) -> None:
    """Slow fault-injection scenarios (marked chaos), one at a time (they measure recovery times
    against the lease timing), with a longer per-test timeout."""
    session.install("-e", ".[test]")
    session.run(
        "pytest", "-q", "-p", "no:cacheprovider", "-m", "chaos", "--timeout", "900",
        *session.posargs,
    )


@nox.session
def soak(session: nox.Session) -> None:
    """The soak under a random fault schedule (marked soak): as long as ``SOAK_SECONDS`` says
    (75 s by default), so it runs on its own, not inside the chaos run's time."""
    session.install("-e", ".[test]")
    session.run(
        "pytest", "-q", "-p", "no:cacheprovider", "-m", "soak", "--timeout", "3600",
        *session.posargs,
    )


@nox.session
def lint(session: nox.Session) -> None:
    """ruff, import-linter's layer contracts (pyproject.toml: layers only point down), and the
    size limits (modules <= 500 lines, functions <= 60)."""
    session.install("ruff", "import-linter>=2.6", "-e", ".")
    session.run("ruff", "check", ".")
    session.run("lint-imports")
    session.run("python", "tools/check_sizes.py", "actorstream")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[dev]")
    session.run("mypy", "actorstream")


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site (MkDocs) into site/, strict: a broken link or reference fails."""
    session.install("-e", ".[docs]")
    # Quiet Material's end-of-life banner; nothing is fetched from the network while building.
    session.run("mkdocs", "build", "--strict", env={"NO_MKDOCS_2_WARNING": "1"})


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks: ratios against redis-benchmark and a raw loop measured in the same run."""
    session.install("-e", ".[fast,test]")
    session.run("python", "benchmarks/bench_transport.py", *session.posargs)
    session.run("python", "benchmarks/bench_runtime.py", "--rss", *session.posargs)
    session.run("python", "benchmarks/bench_concurrency.py", *session.posargs)
    session.run("python", "benchmarks/bench_rebalance.py", *session.posargs)
    session.run("python", "benchmarks/bench_processes.py", *session.posargs)
    session.run("python", "benchmarks/bench_cluster.py", *session.posargs)
    session.run("python", "benchmarks/bench_containment.py")
    session.run("python", "benchmarks/bench_state.py")
    session.run("python", "benchmarks/bench_windows.py")
