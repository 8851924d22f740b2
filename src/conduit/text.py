"""Text from plugins made inert for a terminal, and the check that refuses it in names.

A plugin's manifest, its errors and its log lines end up on the user's terminal. A
control character there is an instruction to the terminal, not text: ``ESC [1A ESC [2K``
moves the cursor up and erases a line Conduit printed (a grant prompt that hides one of
the capabilities it asks for), and a bidi override (U+202E) shows the characters after
it in another order. So:

* :func:`unsafe_char` finds the first such character; manifest, config and capability
  validation refuse identifiers (names, versions, capabilities, commands, services,
  hooks) that contain one, with the character shown escaped;
* :func:`inert` escapes them visibly (``\\x1b``, ``\\u202e``) in any text Conduit
  prints on a plugin's behalf: help, ``plugins info``/``list``/``permissions``, the
  grant prompt, warnings, errors, WebAssembly log lines. Ordinary text (accents, CJK,
  emoji and their joiners) is left as it is.

What counts as unsafe: C0 controls (tab and newline included), DEL, C1 controls, lone
surrogates, the bidi embeddings, overrides, isolates and marks (U+202A-U+202E,
U+2066-U+2069, U+200E, U+200F, U+061C), and the invisible format characters that could
hide or reorder text (U+200B, U+2028, U+2029, U+2060-U+2064, U+206A-U+206F, U+FEFF,
U+FFF9-U+FFFB, U+00AD, U+180E, U+1D173-U+1D17A, and the tag characters U+E0000-U+E007F,
which spell invisible ASCII: a name or a help line could carry hidden text; :func:`inert`
and :func:`unsafe_char` keep them inside a subdivision flag), and the characters
Python counts as printable that show nothing (U+034F and the Hangul fillers U+115F,
U+1160, U+3164, U+FFA0), which make two names look alike. The zero-width joiner and
non-joiner stay: emoji and several scripts need them.

On the start-up path (warnings and errors are printed through it): standard library
only, nothing imported. The common case costs ``str.isprintable()`` and ``str.isascii()``;
non-ASCII text is also checked against the few printable blanks.
"""

from __future__ import annotations

__all__ = ["inert", "unsafe_char"]

# Format characters that reorder or hide text; every C0/C1 control and surrogate is
# unsafe too (tested by range in _unsafe, not listed here).
_FORMAT = frozenset(
    [
        *(0x00AD, 0x061C, 0x180E, 0x200B, 0x200E, 0x200F, 0x2028, 0x2029, 0xFEFF),
        *range(0x202A, 0x202F),  # LRE RLE PDF LRO RLO
        *range(0x2060, 0x2065),  # word joiner, invisible operators
        *range(0x2066, 0x206A),  # LRI RLI FSI PDI
        *range(0x206A, 0x2070),  # deprecated shaping and swapping controls
        *range(0xFFF9, 0xFFFC),  # interlinear annotation
    ]
)
# Printable to Python (``str.isprintable()`` is true) yet invisible: the combining
# grapheme joiner and the Hangul fillers, which make two names look alike.
_BLANK = frozenset([0x034F, 0x115F, 0x1160, 0x3164, 0xFFA0])
_SHORT = {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}


def _unsafe(code: int) -> bool:
    return (
        code < 0x20
        or 0x7F <= code < 0xA0
        or 0xD800 <= code < 0xE000
        or code in _FORMAT
        or code in _BLANK
        or 0xE0000 <= code < 0xE0080  # tags: invisible ASCII look-alikes
        or 0x1D173 <= code < 0x1D17B  # musical symbol format controls
    )


def _plain(text: str) -> bool:
    """The fast path: nothing in ``text`` needs a look of its own."""
    return text.isprintable() and (text.isascii() or _BLANK.isdisjoint(map(ord, text)))


def _escape(code: int) -> str:
    if code in _SHORT:
        return _SHORT[code]
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def unsafe_char(text: str) -> str | None:
    """The first character of ``text`` that must not reach a terminal, escaped
    (``\\x1b``), or None when there is none (tag characters pass only inside a
    subdivision flag, as :func:`inert` leaves them)."""
    if _plain(text):
        return None
    i, n = 0, len(text)
    while i < n:
        code = ord(text[i])
        if code == 0x1F3F4 and (end := _flag_end(text, i + 1)):
            i = end
            continue
        if _unsafe(code):
            return _escape(code)
        i += 1
    return None


def inert(text: str, *, keep_newlines: bool = False) -> str:
    """``text`` with every unsafe character escaped visibly (``ESC`` becomes ``\\x1b``);
    with ``keep_newlines``, line breaks stay (for multi-line text such as a traceback).
    Tag characters stay only inside an emoji tag sequence (a subdivision flag: U+1F3F4,
    tags, U+E007F)."""
    if _plain(text):
        return text
    out = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        code = ord(ch)
        if code == 0x1F3F4 and (end := _flag_end(text, i + 1)):
            out.append(text[i:end])
            i = end
            continue
        if _unsafe(code) and not (keep_newlines and code == 0x0A):
            out.append(_escape(code))
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def _flag_end(text: str, start: int) -> int:
    """The end of the tag characters of a subdivision flag starting at ``start`` (after
    its U+1F3F4), or 0 when they do not form one."""
    j = start
    while j < len(text) and 0xE0020 <= ord(text[j]) <= 0xE007E:
        j += 1
    if j > start and j < len(text) and ord(text[j]) == 0xE007F:
        return j + 1
    return 0
