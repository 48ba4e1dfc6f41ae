"""A worker's supervision tree, one module per branch (see ``root`` and docs/design.md)."""
