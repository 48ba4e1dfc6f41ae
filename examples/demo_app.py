"""The app behind ``actorstream demo``; it ships inside the package (``actorstream._demo.app``),
so the demo works from a wheel. This file re-exports it so that you can run its parts::

    actorstream worker examples/demo_app.py:system       # a worker (run several)
    actorstream top examples/demo_app.py:system          # watch it
    python examples/demo_app.py produce                  # a producer
"""

from __future__ import annotations

import sys

import trio

from actorstream._demo.app import Order, bill, orders, produce, stats, system

__all__ = ["Order", "bill", "orders", "produce", "stats", "system"]


async def _produce_main() -> None:
    async with system:
        await produce()


if __name__ == "__main__":
    trio.run(_produce_main if sys.argv[1:] == ["produce"] else system.start)
