"""Size limits: no module over 500 lines, no function over 60. No exceptions.

    python tools/check_sizes.py [package_dir]   (default: actorstream)

Prints every oversize module and function; exits 1 if there is any.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

MODULE_MAX = 500
FUNCTION_MAX = 60


def check(root: Path) -> list[str]:
    report: list[str] = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        lines = text.splitlines()
        if len(lines) > MODULE_MAX:
            report.append(f"{path}: {len(lines)} lines (at most {MODULE_MAX})")
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            assert node.end_lineno is not None
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            length = node.end_lineno - first + 1
            if length > FUNCTION_MAX:
                report.append(
                    f"{path}:{node.lineno} {node.name}(): {length} lines (at most {FUNCTION_MAX})"
                )
    return report


def main() -> int:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "actorstream")
    report = check(root)
    print("\n".join(report) if report else "no oversize module or function")
    return 1 if report else 0


if __name__ == "__main__":
    sys.exit(main())
