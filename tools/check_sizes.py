"""Size limits: no module over 500 lines, no function over 60, unless explained.

    python tools/check_sizes.py [package_dir]   (default: actorstream)

An exception is explained by a one-line comment saying why: ``# Over 500 lines: ...`` among a
module's first lines, or ``# Over 60 lines: ...`` right above the ``def`` (or its decorators).
Prints every oversize module and function, explained or not; exits 1 if any is unexplained.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

MODULE_MAX = 500
FUNCTION_MAX = 60


def _reason(lines: list[str], before: int, tag: str) -> str | None:
    """The ``# Over N lines:`` comment in the comment block ending just above line ``before``."""
    i = before - 1
    while i >= 0 and lines[i].strip().startswith("#"):
        text = lines[i].strip()
        if text.startswith(tag):
            return text[len(tag) :].strip()
        i -= 1
    return None


def check(root: Path) -> tuple[list[str], int]:
    report: list[str] = []
    unexplained = 0
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        lines = text.splitlines()
        if len(lines) > MODULE_MAX:
            head = [ln.strip() for ln in lines[:40]]
            why = next((h for h in head if h.startswith("# Over 500 lines:")), None)
            unexplained += why is None
            report.append(f"{path}: {len(lines)} lines  {why or 'UNEXPLAINED'}")
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            assert node.end_lineno is not None
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            length = node.end_lineno - first + 1
            if length > FUNCTION_MAX:
                why = _reason(lines, first - 1, "# Over 60 lines:")
                unexplained += why is None
                report.append(
                    f"{path}:{node.lineno} {node.name}(): {length} lines  "
                    f"{'# Over 60 lines: ' + why if why else 'UNEXPLAINED'}"
                )
    return report, unexplained


def main() -> int:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "actorstream")
    report, unexplained = check(root)
    print("\n".join(report) if report else "no oversize module or function")
    print(f"{len(report)} oversize, {unexplained} unexplained")
    return 1 if unexplained else 0


if __name__ == "__main__":
    sys.exit(main())
