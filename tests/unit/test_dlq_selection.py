"""``actorstream.dlq.Selection``: one frozen value says which dead letters an operation touches."""

from __future__ import annotations

import pytest

from actorstream import ConfigError
from actorstream.dlq import ALL, Selection


def test_all_selects_everything() -> None:
    assert Selection() == ALL
    assert ALL.everything
    assert Selection(stream="orders", partition=2).everything
    assert not Selection(kind="decode").everything
    assert ALL.ranges() == [("-", "+")]


def test_time_range_and_ids_become_xrange_bounds() -> None:
    assert Selection(since_ms=10, until_ms=20).ranges() == [("10", "20")]
    ids = Selection(ids=["2-0", "1-5", "2-0"])
    assert ids.ids == ("2-0", "1-5", "2-0")
    assert ids.ranges() == [("1-5", "1-5"), ("2-0", "2-0")]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"partition": -1}, "partition must be an int >= 0"),
        ({"partition": True}, "partition must be an int >= 0"),
        ({"since_ms": "yesterday"}, "since_ms is milliseconds since the epoch"),
        ({"since_ms": 5, "until_ms": 4}, "since (5) is after until (4)"),
        ({"kind": ""}, "kind must be a non-empty str"),
        ({"ids": "1-0"}, "ids is a list of entry ids, not one string"),
        ({"ids": ["nope"]}, "'nope' is not a stream entry id"),
    ],
)
def test_bad_selections_are_rejected_precisely(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Selection(**kwargs)  # type: ignore[arg-type]


def test_a_selection_is_frozen() -> None:
    import attrs

    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        ALL.kind = "decode"  # type: ignore[misc]
