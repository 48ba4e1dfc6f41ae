"""``actorstream demo`` from a wheel: built from this tree, installed into a fresh venv.

The demo app ships inside the package; a wheel that forgot it fails here. Takes ~15-20 s
(pip's cache and the local index make the install quick; the venv is made without a pip).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from actorstream.testing import RedisServer

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None,
        timeout: float = 180) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout, env=env)
    assert done.returncode == 0, f"{args}:\n{done.stdout}\n{done.stderr}"
    return done


def test_demo_runs_from_an_installed_wheel(tmp_path: Path, redis_server: RedisServer) -> None:
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", tmp_path / "dist", ROOT,
        cwd=tmp_path)
    wheel = next((tmp_path / "dist").glob("actorstream-*.whl"))
    venv = tmp_path / "venv"
    # No pip of its own (ensurepip takes seconds): this pip installs into it, dependencies too.
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    run(sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "-q", wheel,
        cwd=tmp_path)
    # Outside the source tree, with no PYTHONPATH of ours: only the installed wheel can be imported.
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "ACTORSTREAM_REDIS_URL": redis_server.url}
    where = run(venv / "bin" / "python", "-c", "import actorstream; print(actorstream.__file__)",
                cwd=tmp_path, env=env)
    assert where.stdout.startswith(str(venv)), where.stdout
    demo = run(venv / "bin" / "actorstream", "demo", "--no-top", "--duration", "3", "--rate",
               "100", cwd=tmp_path, env=env, timeout=60)
    assert "starting an embedded" not in demo.stderr, demo.stderr
    summary = demo.stdout.strip().splitlines()[-1]
    assert summary.startswith("demo: sent "), demo.stdout
    sent = int(summary.split()[2])
    assert sent > 0
