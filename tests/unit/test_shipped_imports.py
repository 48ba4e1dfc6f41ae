"""Shipped code never imports the public test helpers (``actorstream.testing``)."""

from __future__ import annotations

import subprocess
import sys


def test_cli_and_embedded_server_do_not_import_the_test_helpers() -> None:
    code = (
        "import sys, actorstream, actorstream.cli, actorstream._embedded, actorstream.dlq\n"
        "from actorstream.cli import build_parser\n"
        "build_parser()\n"
        "assert 'actorstream.testing' not in sys.modules, 'shipped code imports the test kit'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr


def test_testing_carries_no_redis_protocol_client_of_its_own() -> None:
    import inspect

    from actorstream._servers import ping, process, server
    from actorstream._testkit import worker

    for module in (ping, process, server, worker):
        source = inspect.getsource(module)
        assert "sendall" not in source and "recv(" not in source, module.__name__
