"""Colour for what Conduit prints: plain ANSI SGR codes, no colour library.

Whether a stream gets colour, first rule that applies wins:

1. ``--color always`` / ``--color never`` (the global option; :data:`MODE`);
2. ``NO_COLOR`` set to any non-empty value: no colour;
3. ``FORCE_COLOR`` set to a non-empty value other than ``0``/``false``: colour;
4. otherwise colour when the stream is a terminal (and ``TERM`` is not ``dumb``).

Only Conduit adds colour codes, and only around its own words (``error:``, table
headers, plugin states); text from a plugin is made inert (:mod:`conduit.text`) before
it is painted. Imported on the error and warning path and by the built-in commands that
print tables, never by a successful ``--help`` or completion. Standard library only,
nothing imported.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import TextIO

__all__ = ["MODE", "MODES", "click_color", "enabled", "paint"]

MODES = ("auto", "always", "never")
#: the ``--color`` option of this run (set by the CLI)
MODE = "auto"

_CODES = {
    "error": "1;31",
    "warning": "1;33",
    "hint": "36",
    "usage": "1",
    "header": "1",
    # plugin states (``plugins list``)
    "enabled": "32",
    "disabled": "2",
    "broken": "31",
    "blocked": "31",
}


def _forced() -> bool | None:
    """True/False when the option or the environment decides, None for "a terminal"."""
    if MODE == "always":
        return True
    if MODE == "never":
        return False
    if os.environ.get("NO_COLOR", ""):
        return False
    force = os.environ.get("FORCE_COLOR", "")
    if force and force.strip().lower() not in ("0", "false"):
        return True
    return None


def enabled(stream: TextIO | None) -> bool:
    """Whether text written to ``stream`` gets colour."""
    forced = _forced()
    if forced is not None:
        return forced
    if os.environ.get("TERM") == "dumb":
        return False
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


def click_color() -> bool | None:
    """Click's ``color`` setting for a command's context: the same rules, with the
    terminal test left to Click (None)."""
    return _forced()


def paint(text: str, role: str, on: bool) -> str:
    """``text`` in the colour of ``role`` when ``on`` (an unknown role: unchanged)."""
    code = _CODES.get(role)
    if not on or not code or not text:
        return text
    return f"\033[{code}m{text}\033[0m"
