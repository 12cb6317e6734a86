"""Building a registered task or environment by name: close-match hints for
unknown names, and constructor options checked against the signature."""

from __future__ import annotations

import difflib
import inspect
from typing import Any, Iterable


def did_you_mean(key: str, names: Iterable[str]) -> str:
    """" Did you mean: a, b?" for the close matches of `key` among `names` ("" if none)."""
    close = difflib.get_close_matches(key, list(names), n=3, cutoff=0.5)
    return f" Did you mean: {', '.join(close)}?" if close else ""


def construct(factory: Any, label: str, options: dict) -> Any:
    """factory(**options), after checking every option is a parameter of it:
    an unknown one is a ValueError naming `label`, the close matches and the options."""
    accepted = [n for n, p in inspect.signature(factory).parameters.items()
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        close = [m for u in unknown for m in difflib.get_close_matches(u, accepted, n=1)]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(f"{label} takes no option(s) {', '.join(unknown)}{hint}; its options: "
                         f"{', '.join(accepted) or 'none'}")
    return factory(**options)
