"""Map a generated answer to a label name. Failures are data: a reason string, never an exception."""

from __future__ import annotations

import re


def _norm(text: str) -> str:
    text = text.lower().replace("_", " ").replace("-", " ")
    text = re.sub(r"[^\w\s/]", " ", text)
    return " ".join(text.split())


def parse_answer(answer: str | None, labels: list[str]) -> tuple[str | None, str | None]:
    """(label, None) when `answer` names exactly one label, else (None, reason).

    Tries, in order: exact match (case/punctuation-insensitive), the answer starting with a label (longest first),
    and exactly one label appearing as whole words in the answer.
    """
    if answer is None or not answer.strip():
        return None, "empty answer"
    norm = _norm(answer)
    by_norm = {_norm(lab): lab for lab in labels}
    if norm in by_norm:
        return by_norm[norm], None
    for key in sorted(by_norm, key=len, reverse=True):
        if key and (norm.startswith(key + " ") or norm == key):
            return by_norm[key], None
    found = [lab for key, lab in by_norm.items() if key and re.search(rf"(?<!\w){re.escape(key)}(?!\w)", norm)]
    # Drop labels contained in a longer found label ("card" inside "card arrival").
    found = [f for f in found if not any(f != g and _norm(f) in _norm(g) for g in found)]
    if len(found) == 1:
        return found[0], None
    shown = answer.strip().replace("\n", " ")[:60]
    if found:
        return None, f"ambiguous answer '{shown}' names {len(found)} labels: {', '.join(found[:4])}"
    return None, f"no label in answer '{shown}'"
