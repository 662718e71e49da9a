"""Where each key of a TOML document sits: key path -> line number.

Part of config loading (startup only, outside the onion): ``tomllib`` gives no
positions, so config errors ask this scanner for the line of a key path such as
``tenants.acme.chains.smart[1]``. It runs only on text ``tomllib`` has already
accepted, so it can skip values instead of checking them. It follows headers,
dotted keys, inline tables and arrays (each element gets its own path); inside
an array of tables (``[[x]]``) a sub-table header is not re-rooted under the
last element, which our config never needs.
"""

from __future__ import annotations

import bisect
import json
import re
from typing import Final

KeyPath = tuple[str | int, ...]

_BARE: Final = re.compile(r"[A-Za-z0-9_-]+")
_PART: Final = re.compile(r'([A-Za-z0-9_-]+)|"((?:[^"\\]|\\.)*)"|\[(\d+)\]')
_SCALAR_END: Final = frozenset(",]}#\r\n")


def render(path: KeyPath) -> str:
    """Render ``("a", "b c", 1)`` as ``a."b c"[1]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        piece = part if _BARE.fullmatch(part) else json.dumps(part, ensure_ascii=False)
        out += f".{piece}" if out else piece
    return out


def parse(dotted: str) -> KeyPath:
    """Split a rendered path (``a."b c"[1]``) back into its parts."""
    parts: list[str | int] = []
    for bare, quoted, index in _PART.findall(dotted):
        if index:
            parts.append(int(index))
        elif quoted:
            parts.append(json.loads(f'"{quoted}"'))
        else:
            parts.append(bare)
    return tuple(parts)


def key_lines(source: str) -> dict[KeyPath, int]:
    """Map every key path (tables, keys, array elements) to its 1-based line."""
    scanner = _Scanner(source)
    scanner.document()
    return scanner.found


class _Scanner:
    """A structure-only TOML reader: records where keys are, skips values."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.found: dict[KeyPath, int] = {}
        self._newlines = [i for i, ch in enumerate(text) if ch == "\n"]
        self._array_tables: dict[KeyPath, int] = {}

    def line(self) -> int:
        return bisect.bisect_left(self._newlines, self.pos) + 1

    def peek(self, width: int = 1) -> str:
        return self.text[self.pos : self.pos + width]

    def record(self, path: KeyPath, line: int) -> None:
        # Intermediate tables count too: ``breaker.open_s = 20`` locates ``breaker``.
        for depth in range(1, len(path) + 1):
            self.found.setdefault(path[:depth], line)

    def document(self) -> None:
        table: KeyPath = ()
        while True:
            self.skip_blank(newlines=True)
            start = self.pos
            if start >= len(self.text):
                return
            if self.peek() == "[":
                table = self.header()
            else:
                self.keyval(table)
            if self.pos == start:  # never loop on text we do not understand
                self.pos += 1

    def header(self) -> KeyPath:
        width = 2 if self.peek(2) == "[[" else 1
        self.pos += width
        line = self.line()
        path: KeyPath = tuple(self.key())
        self.pos += width
        if width == 2:  # noqa: PLR2004 - ``[[`` opens an array of tables
            index = self._array_tables.get(path, -1) + 1
            self._array_tables[path] = index
            path = (*path, index)
        self.record(path, line)
        return path

    def keyval(self, table: KeyPath) -> None:
        line = self.line()
        path = (*table, *self.key())
        self.record(path, line)
        if self.peek() == "=":
            self.pos += 1
        self.value(path)

    def key(self) -> list[str]:
        parts: list[str] = []
        while True:
            self.skip_spaces()
            parts.append(self.key_part())
            self.skip_spaces()
            if self.peek() != ".":
                return parts
            self.pos += 1

    def key_part(self) -> str:
        start = self.pos
        if self.peek() in {'"', "'"}:
            self.string()
            raw = self.text[start : self.pos]
            if raw.startswith("'"):
                return raw[1:-1]
            try:
                return str(json.loads(raw))
            except ValueError:  # a TOML-only escape such as \U0001F600
                return raw[1:-1]
        match = _BARE.match(self.text, self.pos)
        if match is None:
            return ""
        self.pos = match.end()
        return match.group()

    def value(self, path: KeyPath) -> None:
        self.skip_spaces()
        first = self.peek()
        if first == "{":
            self.inline_table(path)
        elif first == "[":
            self.array(path)
        elif first in {'"', "'"}:
            self.string()
        else:
            while self.pos < len(self.text) and self.text[self.pos] not in _SCALAR_END:
                self.pos += 1

    def inline_table(self, path: KeyPath) -> None:
        self.pos += 1
        while self.pos < len(self.text):
            self.skip_blank(newlines=True)
            if self.peek() == "}":
                self.pos += 1
                return
            if self.peek() == ",":
                self.pos += 1
                continue
            start = self.pos
            self.keyval(path)
            if self.pos == start:
                self.pos += 1

    def array(self, path: KeyPath) -> None:
        self.pos += 1
        index = 0
        while self.pos < len(self.text):
            self.skip_blank(newlines=True)
            if self.peek() == "]":
                self.pos += 1
                return
            if self.peek() == ",":
                self.pos += 1
                index += 1
                continue
            start = self.pos
            self.record((*path, index), self.line())
            self.value((*path, index))
            if self.pos == start:
                self.pos += 1

    def string(self) -> None:
        quote = self.peek()
        if self.peek(3) == quote * 3:
            self.pos = self.closing(quote * 3, self.pos + 3)
            # A multi-line string may end with up to two extra quotes of content.
            for _ in range(2):
                if self.peek() == quote:
                    self.pos += 1
            return
        self.pos = self.closing(quote, self.pos + 1)

    def closing(self, delimiter: str, start: int) -> int:
        """Return the index just past the ``delimiter`` that ends a string."""
        escapes = delimiter.startswith('"')
        end = self.text.find(delimiter, start)
        while end > 0 and escapes and _escaped(self.text, end):
            end = self.text.find(delimiter, end + 1)
        return len(self.text) if end < 0 else end + len(delimiter)

    def skip_spaces(self) -> None:
        while self.peek() in {" ", "\t"} and self.pos < len(self.text):
            self.pos += 1

    def skip_blank(self, *, newlines: bool) -> None:
        blank = " \t\r\n" if newlines else " \t"
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch == "#":
                end = self.text.find("\n", self.pos)
                self.pos = len(self.text) if end < 0 else end
            elif ch in blank:
                self.pos += 1
            else:
                return


def _escaped(text: str, index: int) -> bool:
    """Tell whether the character at ``index`` follows an odd run of backslashes."""
    count = 0
    while index - count - 1 >= 0 and text[index - count - 1] == "\\":
        count += 1
    return count % 2 == 1
