"""What the benchmark scripts share: writing a results file and the README section built from it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
#: the shared data folder (`../shared/data` beside the repository, or $LLMLABEL_SHARED_DATA)
DATA = Path(os.environ.get("LLMLABEL_SHARED_DATA", ROOT.parent / "shared" / "data"))


def save_results(path: Path, results: Any) -> None:
    """Write `results` to the results file `path` (JSON, indent 1, newline at the end), making its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n")


def update_readme(marker: str, table: str) -> None:
    """Replace the text between `<!-- marker:start -->` and `<!-- marker:end -->` in README.md."""
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        readme.write_text(f"{head}{start}\n{table}\n{end}{tail}", encoding="utf-8")
