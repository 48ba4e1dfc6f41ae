"""The API reference (docs/api/*.md) has an entry for every public name, and no stale ones."""

from __future__ import annotations

import re
from pathlib import Path

import actorstream

API = Path(__file__).resolve().parents[2] / "docs" / "api"
PUBLIC_MODULES = {"testing", "dlq"}


def documented() -> set[str]:
    text = "\n".join(page.read_text() for page in API.glob("*.md"))
    return set(re.findall(r"^::: actorstream\.(\w+)$", text, re.MULTILINE))


def test_every_public_name_is_in_the_api_reference() -> None:
    missing = set(actorstream.__all__) - {"__version__"} - documented()
    assert not missing, f"add these to a page of docs/api/: {sorted(missing)}"


def test_the_api_reference_names_only_public_names() -> None:
    stale = documented() - set(actorstream.__all__) - PUBLIC_MODULES
    assert not stale, f"not in actorstream.__all__: {sorted(stale)}"
    assert documented() >= PUBLIC_MODULES
