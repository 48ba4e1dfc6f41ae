"""MkDocs hooks for the documentation site (mkdocs.yml ``hooks:``).

Until the public ``actorstream.dlq`` module is merged (it replaces ``actorstream._dlq_admin``),
its API page documents the module it comes from, with a note; once ``actorstream.dlq`` exists
this hook changes nothing and can be deleted with its ``hooks:`` entry.
"""

from __future__ import annotations

import importlib.util
from typing import Any

PUBLIC, INTERIM = "actorstream.dlq", "actorstream._dlq_admin"


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    if f"::: {PUBLIC}\n" not in markdown or importlib.util.find_spec(PUBLIC) is not None:
        return markdown
    note = (
        f'!!! note "Interim"\n    `{PUBLIC}` is not in this build yet; this page documents '
        f"`{INTERIM}`, the module it is made from.\n\n"
    )
    return note + markdown.replace(f"::: {PUBLIC}\n", f"::: {INTERIM}\n")
