"""Events sent by this process's producers, per (app, stream): ``events_sent_total``.

A plain counter the producer path bumps once per ``send``/``send_many`` call (not per event),
read by the metrics collector at scrape time. Kept apart so producers import nothing else.
"""

from __future__ import annotations

import collections

EVENTS_SENT: collections.Counter[tuple[str, str]] = collections.Counter()


def count_sent(app: str, stream: str, n: int) -> None:
    EVENTS_SENT[(app, stream)] += n


def sent_for(app: str) -> dict[str, int]:
    return {stream: n for (a, stream), n in EVENTS_SENT.items() if a == app}
