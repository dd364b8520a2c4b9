"""The one exception type users see: raised where user input enters, with a message that names the
fix."""

import difflib
from collections.abc import Iterable


class SaeInterpError(Exception):
    """Bad input from the user (model_args, --metadata, paths, corpora). The message says what to
    fix."""


def closest(name: str, choices: Iterable[str], n: int = 5) -> list[str]:
    """The choices most like `name`, best first; substring matches count as close too."""
    choices = list(choices)
    near = difflib.get_close_matches(name, choices, n=n, cutoff=0.5)
    lowered = name.lower()
    near += [c for c in choices if lowered in c.lower() and c not in near]
    return near[:n]


def unknown(kind: str, name: str, choices: Iterable[str], fix: str = "") -> SaeInterpError:
    """An error for an unknown name, listing the closest valid names (or all of them when few)."""
    choices = sorted(choices)
    near = closest(name, choices)
    if near:
        listing = f"closest: {', '.join(near)}"
    elif len(choices) <= 30:
        listing = f"valid: {', '.join(choices)}"
    else:
        listing = f"{len(choices)} valid names, none close"
    return SaeInterpError(f"unknown {kind} {name!r} ({listing}){'; ' + fix if fix else ''}")
