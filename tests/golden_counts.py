"""Golden cycle counts: a JSON file of {name: cycles} that a change to any count must update visibly.

`check(path, new, what)` fails with a readable per-entry diff when the counts differ from the file;
`DOJOC_UPDATE_GOLDEN=1` rewrites the file instead, so the change shows up as a reviewed diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def diff(old: dict[str, int], new: dict[str, int]) -> list[str]:
    """One line per entry that changed, appeared or disappeared."""
    lines = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if a is None:
            lines.append(f"  {key}: new, {b:,} cycles (not in the golden file)")
        elif b is None:
            lines.append(f"  {key}: in the golden file ({a:,} cycles) but no longer measured")
        else:
            lines.append(f"  {key}: golden {a:,} cycles, now {b:,} ({b - a:+,}, {(b - a) / a:+.2%})")
    return lines


def check(path: Path, new: dict[str, int], what: str) -> None:
    """Compare `new` with the golden file at `path` (or rewrite it under DOJOC_UPDATE_GOLDEN=1)."""
    if os.environ.get("DOJOC_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(new, indent=2, sort_keys=True) + "\n")
        return
    assert path.is_file(), f"{path} is missing: create it with DOJOC_UPDATE_GOLDEN=1"
    changes = diff(json.loads(path.read_text()), new)
    assert not changes, (f"cycle counts of {what} differ from {path.relative_to(ROOT)}:\n" + "\n".join(changes)
                         + "\nif intended, rerun with DOJOC_UPDATE_GOLDEN=1 and review the diff")
