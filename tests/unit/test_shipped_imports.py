"""What importing the shipped entry points loads, at run time (import-linter checks the static
imports; this checks what a fresh interpreter really ends up with, lazy imports included)."""

from __future__ import annotations

import subprocess
import sys

import pytest

#: Each entry point, and what it must leave unloaded.
CASES = {
    "the CLI's parser": "from actorstream.cli import build_parser\nbuild_parser()\n",
    "the library": "import actorstream, actorstream.dlq\n",
    "the demo's embedded server": "from actorstream._embedded import EmbeddedRedis\n",
}
#: (Not ``opentelemetry``: the ``redis`` package itself imports it when it is installed.)
NEVER = ("actorstream.testing", "actorstream._testkit", "prometheus_client")


@pytest.mark.parametrize("code", CASES.values(), ids=list(CASES))
def test_entry_points_load_neither_the_test_kit_nor_the_extras(code: str) -> None:
    check = (
        "import sys\n" + code
        + f"loaded = sorted({{m.split('.')[0] if not m.startswith('actorstream') else m "
        f"for m in sys.modules}} & set({NEVER!r}))\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
