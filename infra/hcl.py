"""A reader for the subset of HCL that infra/terraform uses, so tests can compare what it declares.

Blocks, attributes, comments, strings (``${...}`` kept verbatim), heredocs, numbers, booleans,
null, tuples and object constructors become Python values; any other expression (a reference, a
function call, an operator) becomes an ``Expr`` holding its source text. It checks structure,
not meaning: ``terraform validate`` is the real check.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class HclError(ValueError):
    """The text is not HCL this reader understands."""


@dataclass(frozen=True)
class Expr:
    """An expression kept as source text, e.g. ``var.stage`` or ``jsonencode(x)``."""

    text: str


@dataclass
class Block:
    type: str
    labels: list[str]
    attributes: dict[str, Any] = field(default_factory=dict)
    blocks: list[Block] = field(default_factory=list)

    def children(self, type_: str, *labels: str) -> list[Block]:
        """Nested blocks of ``type_`` whose labels start with ``labels``."""
        n = len(labels)
        return [b for b in self.blocks if b.type == type_ and tuple(b.labels[:n]) == labels]


@dataclass(frozen=True)
class _Tok:
    kind: str  # str, heredoc, num, ident, op, nl
    text: str
    start: int
    end: int
    value: Any = None


_SPACE = re.compile(r"[ \t\r]+|#[^\n]*|//[^\n]*|/\*.*?\*/", re.S)
_NUM = re.compile(r"\d+(\.\d+)?([eE][+-]?\d+)?")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_OPS = ("==", "!=", "<=", ">=", "&&", "||", "=>", "...")
_HEREDOC = re.compile(r"<<(-?)([A-Za-z_][A-Za-z0-9_]*)\n")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}


def _scan_string(src: str, i: int) -> tuple[int, str]:
    """From the opening quote at ``i``: (index after the closing quote, decoded value)."""
    out: list[str] = []
    i += 1
    while i < len(src):
        c = src[i]
        if c == '"':
            return i + 1, "".join(out)
        if c == "\n":
            break
        if c == "\\" and i + 1 < len(src):
            out.append(_ESCAPES.get(src[i + 1], "\\" + src[i + 1]))
            i += 2
        elif src.startswith(("${", "%{"), i) and not src.startswith(("$${", "%%{"), i - 1):
            end = _scan_template(src, i + 2)
            out.append(src[i:end])
            i = end
        else:
            out.append(c)
            i += 1
    raise HclError(f"unterminated string at offset {i}")


def _scan_template(src: str, i: int) -> int:
    """From just inside ``${``: the index after its matching ``}``."""
    depth = 1
    while i < len(src):
        if src[i] == '"':
            i = _scan_string(src, i)[0]
            continue
        depth += {"{": 1, "}": -1}.get(src[i], 0)
        i += 1
        if depth == 0:
            return i
    raise HclError("unterminated ${...} interpolation")


def _heredoc(src: str, i: int, m: re.Match[str]) -> tuple[int, str]:
    strip, tag = m.group(1), m.group(2)
    lines: list[str] = []
    pos = m.end()
    while pos < len(src):
        nl = src.find("\n", pos)
        line = src[pos : nl if nl >= 0 else len(src)]
        pos = nl + 1 if nl >= 0 else len(src)
        if line.strip() == tag:
            if strip:
                indent = min((len(x) - len(x.lstrip()) for x in lines if x.strip()), default=0)
                lines = [x[indent:] for x in lines]
            return pos - 1 if nl >= 0 else pos, "".join(x + "\n" for x in lines)
        lines.append(line)
    raise HclError(f"heredoc {tag} at offset {i} is never closed")


def tokenize(src: str) -> list[_Tok]:
    toks: list[_Tok] = []
    i = 0
    while i < len(src):
        m = _SPACE.match(src, i)
        if m:
            i = m.end()
            continue
        c = src[i]
        if c == "\n":
            toks.append(_Tok("nl", c, i, i + 1))
            i += 1
        elif c == '"':
            end, value = _scan_string(src, i)
            toks.append(_Tok("str", src[i:end], i, end, value))
            i = end
        elif m := _HEREDOC.match(src, i):
            end, value = _heredoc(src, i, m)
            toks.append(_Tok("heredoc", src[i:end], i, end, value))
            i = end
        elif m := _NUM.match(src, i):
            num = m.group()
            number = float(num) if m.group(1) or m.group(2) else int(num)
            toks.append(_Tok("num", num, i, m.end(), number))
            i = m.end()
        elif m := _IDENT.match(src, i):
            toks.append(_Tok("ident", m.group(), i, m.end()))
            i = m.end()
        else:
            op = next((o for o in _OPS if src.startswith(o, i)), c)
            toks.append(_Tok("op", op, i, i + len(op)))
            i += len(op)
    return toks


_OPEN = {"{": "}", "[": "]", "(": ")"}
_LITERALS: dict[str, Any] = {"true": True, "false": False, "null": None}


class _Parser:
    def __init__(self, src: str) -> None:
        self.src = src
        self.toks = tokenize(src)
        self.i = 0

    def peek(self, skip_nl: bool = False) -> _Tok | None:
        j = self.i
        while skip_nl and j < len(self.toks) and self.toks[j].kind == "nl":
            j += 1
        return self.toks[j] if j < len(self.toks) else None

    def take(self, text: str | None = None) -> _Tok:
        tok = self.peek()
        if tok is None or (text is not None and tok.text != text):
            where = tok.start if tok else len(self.src)
            raise HclError(f"expected {text!r} at offset {where}, got {tok.text if tok else 'EOF'}")
        self.i += 1
        return tok

    def skip_nl(self) -> None:
        while (t := self.peek()) is not None and t.kind == "nl":
            self.i += 1

    def body(self, into: Block, closing: str | None) -> None:
        while True:
            self.skip_nl()
            tok = self.peek()
            if tok is None or tok.text == closing:
                if tok is None and closing is not None:
                    raise HclError(f"missing {closing!r} for block {into.type}")
                return
            name = self.take()
            if name.kind != "ident":
                raise HclError(f"expected a name at offset {name.start}, got {name.text!r}")
            if (nxt := self.peek()) is not None and nxt.text == "=":
                self.take("=")
                if name.text in into.attributes:
                    raise HclError(f"attribute {name.text} set twice in {into.type}")
                into.attributes[name.text] = self.expr(("}",))
            else:
                into.blocks.append(self.block(name.text))

    def block(self, type_: str) -> Block:
        labels: list[str] = []
        while (tok := self.peek()) is not None and tok.kind in ("str", "ident"):
            labels.append(self.take().value if tok.kind == "str" else tok.text)
        self.take("{")
        block = Block(type_, labels)
        self.body(block, "}")
        self.take("}")
        return block

    def expr(self, stops: tuple[str, ...]) -> Any:
        """One expression, ending before a newline or one of ``stops`` at bracket depth 0."""
        first = self.peek()
        if first is None:
            raise HclError("expression expected at end of input")
        value: Any
        if first.text in ("[", "{") and self.for_expression():
            value = self.balanced()
        elif first.text == "[":
            value = self.tuple_()
        elif first.text == "{":
            value = self.object_()
        else:
            self.take()
            value = first.value if first.kind in ("str", "heredoc", "num") else None
            if first.kind not in ("str", "heredoc", "num") and first.text not in _LITERALS:
                value = Expr(first.text)
            elif first.kind == "ident":
                value = _LITERALS[first.text]
        last, depth = None, 0
        while (tok := self.peek()) is not None:
            if depth == 0 and (tok.kind == "nl" or tok.text in stops):
                break
            depth += 1 if tok.text in _OPEN else -1 if tok.text in _OPEN.values() else 0
            if depth < 0:
                raise HclError(f"unbalanced {tok.text!r} at offset {tok.start}")
            last = self.take()
        return value if last is None else Expr(self.src[first.start : last.end])

    def for_expression(self) -> bool:
        """The bracket at the cursor opens ``[for ...]`` or ``{for ...}``."""
        j = self.i + 1
        while j < len(self.toks) and self.toks[j].kind == "nl":
            j += 1
        return j < len(self.toks) and self.toks[j].text == "for"

    def balanced(self) -> Expr:
        """The bracketed span at the cursor, kept as source text."""
        first, depth = self.take(), 1
        while depth:
            tok = self.take()
            depth += 1 if tok.text in _OPEN else -1 if tok.text in _OPEN.values() else 0
        return Expr(self.src[first.start : tok.end])

    def tuple_(self) -> list[Any]:
        self.take("[")
        items: list[Any] = []
        while True:
            self.skip_nl()
            if (tok := self.peek()) is not None and tok.text == "]":
                self.take("]")
                return items
            items.append(self.expr((",", "]")))
            self.skip_nl()
            if (tok := self.peek()) is not None and tok.text == ",":
                self.take(",")

    def object_(self) -> dict[str, Any]:
        self.take("{")
        items: dict[str, Any] = {}
        while True:
            self.skip_nl()
            key = self.take()
            if key.text == "}":
                return items
            if key.kind not in ("str", "ident"):
                raise HclError(f"unsupported object key {key.text!r} at offset {key.start}")
            sep = self.take()
            if sep.text not in ("=", ":"):
                raise HclError(f"expected '=' after key {key.text!r} at offset {sep.start}")
            items[key.value if key.kind == "str" else key.text] = self.expr((",", "}"))
            if (tok := self.peek()) is not None and tok.text == ",":
                self.take(",")


def parse(src: str) -> Block:
    """The whole file as a root Block (type ``""``)."""
    root = Block("", [])
    _Parser(src).body(root, None)
    return root


def parse_dir(directory: Path) -> Block:
    """Every ``*.tf`` file of one module merged into one root Block."""
    root = Block("", [])
    for path in sorted(directory.glob("*.tf")):
        try:
            part = parse(path.read_text())
        except HclError as exc:
            raise HclError(f"{path}: {exc}") from exc
        root.blocks.extend(part.blocks)
        root.attributes.update(part.attributes)
    return root
