"""Receipt documents (docs/PROTOCOL.md, "Receipt documents"): checked, then rendered
to ESC/POS bytes by python-escpos.

`check` refuses a bad document with `bad_request` naming the block index and
field, before anything is journaled or printed. `render` writes one fixed code
page per printer (FACTS.md: no mid-line page hopping); a character the page
lacks comes out as "?" rather than switching pages.
"""
from __future__ import annotations

import contextlib
import io
import textwrap
from typing import TYPE_CHECKING, Any

from ...relay import protocol as p
from . import codepages

if TYPE_CHECKING:
    from escpos.printer import Dummy

    from ...config import PrinterSettings

ALIGN = ("left", "center", "right")
SIZES = ("normal", "double", "double_width", "double_height")
BARCODES = ("EAN13", "EAN8", "UPC-A", "CODE39", "CODE128", "ITF")
CUTS = {"full": "FULL", "partial": "PART"}
_FIELDS: dict[str, dict[str, Any]] = {  # kind -> optional field -> allowed (a type or a tuple of values)
    "text": {"align": ALIGN, "bold": bool, "underline": bool, "size": SIZES},
    "row": {},
    "rule": {},
    "barcode": {"type": BARCODES, "hri": bool},
    "qr": {"size": range(1, 17)},
    "image": {},
    "feed": {},
    "cut": {},
}
_MAIN: dict[str, Any] = {"text": str, "row": list, "rule": str, "barcode": str, "qr": str, "image": bytes,
                         "feed": int, "cut": tuple(CUTS)}


def _bad(msg: str) -> p.RequestError:
    return p.RequestError(p.BAD_REQUEST, f"document: {msg}")


def _allowed(value: Any, rule: Any) -> bool:
    if isinstance(rule, type):
        return isinstance(value, rule) and not (rule is int and isinstance(value, bool))
    return isinstance(value, (str, int)) and not isinstance(value, bool) and value in rule


def _describe(rule: Any) -> str:
    if isinstance(rule, type):
        return {"str": "a string", "bool": "true or false", "int": "an integer", "bytes": "binary (msgpack bin)",
                "list": "a list"}[rule.__name__]
    if isinstance(rule, range):
        return f"an integer {rule.start}..{rule.stop - 1}"
    return "one of " + ", ".join(map(str, rule))


def check(doc: Any) -> dict[str, Any]:
    """The document, checked; bad_request naming the first problem otherwise."""
    if not isinstance(doc, dict):
        raise _bad("must be a map with 'blocks'")
    unknown = set(doc) - {"blocks", "copy", "open_drawer"}
    if unknown:
        raise _bad(f"unknown field {p.shown(sorted(map(str, unknown))[0])}")
    for flag in ("copy", "open_drawer"):
        if flag in doc and not isinstance(doc[flag], bool):
            raise _bad(f"'{flag}' must be true or false")
    blocks = doc.get("blocks")
    if not isinstance(blocks, list):
        raise _bad("'blocks' must be a list")
    for i, block in enumerate(blocks):
        if not isinstance(block, dict):
            raise _bad(f"blocks[{i}] must be a map")
        kinds = [k for k in block if k in _FIELDS]
        if len(kinds) != 1:
            raise _bad(f"blocks[{i}] must hold exactly one of {', '.join(_FIELDS)}")
        kind = kinds[0]
        if not _allowed(block[kind], _MAIN[kind]):
            raise _bad(f"blocks[{i}].{kind} must be {_describe(_MAIN[kind])}")
        for field, value in block.items():
            if field == kind:
                continue
            rule = _FIELDS[kind].get(field)
            if rule is None:
                raise _bad(f"blocks[{i}]: unknown field {p.shown(field)} for a {kind} block")
            if not _allowed(value, rule):
                raise _bad(f"blocks[{i}].{field} must be {_describe(rule)}")
        _check_kind(i, kind, block)
    return doc


def _check_kind(i: int, kind: str, block: dict[str, Any]) -> None:
    value = block[kind]
    if kind == "row" and (len(value) != 2 or not all(isinstance(v, str) for v in value)):
        raise _bad(f"blocks[{i}].row must be two strings [left, right]")
    if kind == "barcode":
        if "type" not in block:
            raise _bad(f"blocks[{i}].type is missing (one of {', '.join(BARCODES)})")
        if not value or not value.isascii():
            raise _bad(f"blocks[{i}].barcode must be non-empty ASCII")
    if kind == "feed" and not 0 <= value <= 255:
        raise _bad(f"blocks[{i}].feed must be 0..255")
    if kind == "image" and not value.startswith(b"\x89PNG\r\n\x1a\n"):
        raise _bad(f"blocks[{i}].image must be a PNG")


def _dummy(profile: str, codepage: str) -> Dummy:
    # python-escpos is imported here, on the first job: a till without a printer never loads it.
    from escpos.printer import Dummy

    out = Dummy(profile=profile)
    out.magic.force_encoding(codepages.canonical(codepage))
    out.set_with_default()
    return out


def render(doc: dict[str, Any], *, profile: str = "default", codepage: str = "PC858", columns: int = 0,
           dots: int = 0, kick: bytes = b"") -> bytes:
    """ESC/POS bytes for a checked document.

    `columns` and `dots` are the paper's width in characters and print-head dots
    (0: the profile's); `kick` is the drawer's ESC p sequence for `open_drawer`."""
    cols = columns or codepages.columns(profile)
    out = _dummy(profile, codepage)
    if doc.get("copy"):
        copy_banner(out)
    for i, block in enumerate(doc["blocks"]):
        try:
            # python-escpos print()s remarks ("Using hardware barcode renderer") on every
            # barcode and image; on a daemon's stdout (the system journal) that is noise.
            with contextlib.redirect_stdout(io.StringIO()):
                _render_block(out, block, cols, dots or codepages.profile_dots(profile))
        except Exception as e:  # python-escpos refusing a value: name the block
            raise _bad(f"blocks[{i}] cannot be printed: {e}") from None
    if doc.get("open_drawer") and kick:
        out._raw(kick)
    return out.output


def render_for(s: PrinterSettings, doc: dict[str, Any], kick: bytes = b"") -> bytes:
    """`render` for a configured printer (its profile, code page and paper): the bytes the spooler
    sends, and the golden test (tests/golden.py) pins."""
    return render(doc, profile=s.profile, codepage=s.codepage, columns=s.line_columns(), dots=s.head_dots(),
                  kick=kick)


def copy_banner(out: Dummy) -> None:
    """The mark on every receipt printed again: a shop must never hand out two originals."""
    out.set(align="center", bold=True)
    out.textln("*** COPY ***")
    out.set_with_default()


def raw_copy(raw: bytes, *, profile: str = "default", codepage: str = "PC858") -> bytes:
    """A client-rendered (raw) job printed again: the copy banner, then its bytes."""
    out = _dummy(profile, codepage)
    copy_banner(out)
    return out.output + raw


def _render_block(out: Dummy, block: dict[str, Any], cols: int, dots: int | None) -> None:
    if "text" in block:
        size = block.get("size", "normal")
        out.set(align=block.get("align", "left"), bold=block.get("bold", False),
                underline=1 if block.get("underline") else 0, normal_textsize=size == "normal",
                double_width=size in ("double", "double_width"), double_height=size in ("double", "double_height"))
        width = cols // 2 if size in ("double", "double_width") else cols
        for line in block["text"].split("\n"):
            for part in textwrap.wrap(line, width) or [""]:
                out.textln(part)
        out.set_with_default()
    elif "row" in block:
        for line in _row(block["row"][0], block["row"][1], cols):
            out.textln(line)
    elif "rule" in block:
        out.textln(((block["rule"] or "-")[0]) * cols)
    elif "barcode" in block:
        kind = block["type"]
        code = ("{B" + block["barcode"]) if kind == "CODE128" else block["barcode"]
        out.barcode(code, kind, pos="BELOW" if block.get("hri", True) else "OFF",
                    function_type="B" if kind == "CODE128" else None, check=kind != "CODE128")
    elif "qr" in block:
        out.set(align="center")  # native QR cannot center itself
        out.qr(block["qr"], size=block.get("size", 4), native=True)
        out.set_with_default()
    elif "image" in block:
        from PIL import Image

        image: Image.Image = Image.open(io.BytesIO(block["image"]))
        limit = dots or 512  # the narrowest 80 mm head (58 mm paper is 384, 80 mm is 512-576)
        if image.width > limit:
            image = image.resize((limit, max(1, image.height * limit // image.width)))
        if dots and image.width < dots:  # python-escpos centers only with a width from the profile
            rgba = image.convert("RGBA")  # transparent parts print as paper, not black
            image = Image.new("RGB", (dots, rgba.height), "white")
            image.paste(rgba, ((dots - rgba.width) // 2, 0), rgba)
        out.image(image)
    elif "feed" in block:
        out.ln(block["feed"])
    elif "cut" in block:
        out.cut(mode=CUTS[block["cut"]])


def _row(left: str, right: str, cols: int) -> list[str]:
    """Left text wrapped to the paper, right text right-justified on its last line (or the next)."""
    lines = textwrap.wrap(left, cols) or [""]
    last = lines[-1]
    if len(last) + 1 + len(right) <= cols:
        lines[-1] = last + " " * (cols - len(last) - len(right)) + right
    else:
        lines.append(right.rjust(cols)[-cols:])
    return lines
