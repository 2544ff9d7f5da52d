"""What the emulated printer puts on paper: commands -> receipts as plain text.

Text is decoded with the code page the stream selected (ESC t, tables from
python-escpos's capability database); styles are kept per line; barcodes,
QR codes and images become labelled lines such as `[QR: payload]`. A cut
ends a receipt.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..devices.printer import codepages
from .escpos_codec import Command

_BARCODE_A = {0: "UPC-A", 1: "UPC-E", 2: "EAN13", 3: "EAN8", 4: "CODE39", 5: "ITF", 6: "CODABAR"}
_BARCODE_B_FIRST = 65  # GS k 65.. : function B numbers, same order, then more types
_BARCODE_B_MORE = {72: "CODE93", 73: "CODE128", 74: "GS1-128", 75: "GS1 DATABAR",
                   76: "GS1 DATABAR TRUNCATED", 77: "GS1 DATABAR LIMITED", 78: "GS1 DATABAR EXPANDED"}


def _code128_text(data: str) -> str:
    """What a CODE128 symbol encodes: "{A" / "{B" / "{C" select code sets and "{{" is a brace
    (ESC/POS GS k m=73); code set C packs two digits into each byte."""
    out, i, code_c = [], 0, False
    while i < len(data):
        if data[i] == "{" and i + 1 < len(data):
            sel = data[i + 1]
            if sel in "ABC":
                code_c = sel == "C"
            elif sel == "{":
                out.append("{")
            i += 2
            continue
        out.append(f"{ord(data[i]):02d}" if code_c else data[i])
        i += 1
    return "".join(out)


@dataclass
class Line:
    text: str
    align: str = "left"
    bold: bool = False
    underline: bool = False
    width: int = 1  # character magnification
    height: int = 1
    element: bool = False  # a labelled non-text element


@dataclass
class Receipt:
    lines: list[Line] = field(default_factory=list)
    cut: str = ""  # "full" / "partial" once cut

    def text(self, columns: int = 42) -> str:
        out = []
        for line in self.lines:
            visual = len(line.text) * line.width
            pad = max(columns - visual, 0)
            lead = {"left": 0, "center": pad // 2, "right": pad}[line.align]
            out.append((" " * lead + line.text).rstrip())
        return "\n".join(out) + "\n"


class Paper:
    """Executes printing commands; calls on_receipt(receipt) at every cut."""

    def __init__(self, on_receipt: Callable[[Receipt], None], profile: str = "default") -> None:
        self._on_receipt = on_receipt
        self._tables = codepages.tables(profile)
        self.unknown: list[str] = []  # commands we could not interpret, for the operator
        self.receipt = Receipt()
        self._reset()

    def _reset(self) -> None:
        self.codec = "cp437"
        self.bold = self.underline = False
        self.width = self.height = 1
        self.align = "left"
        self._line: list[str] = []
        self._line_style: tuple | None = None
        self._qr_data = b""
        self._graphics = (0, 0)  # size of the last GS ( L raster stored
        self._column_band = False  # inside a run of ESC * bands

    # --- text lines ---

    def _style(self) -> tuple:
        return (self.align, self.bold, self.underline, self.width, self.height)

    def _add_text(self, text: str) -> None:
        if self._line_style is None:
            self._line_style = self._style()  # justification is taken at the start of a line
        self._line.append(text)

    def _flush(self, force: bool = True) -> None:
        if not self._line and not force:
            return
        align, bold, underline, width, height = self._line_style or self._style()
        self.receipt.lines.append(Line("".join(self._line), align, bold, underline, width, height))
        self._line, self._line_style = [], None

    def _element(self, label: str) -> None:
        self._flush(force=False)
        self.receipt.lines.append(Line(f"[{label}]", self.align, element=True))

    # --- commands ---

    def execute(self, cmd: Command) -> None:
        handler = getattr(self, _HANDLERS.get(cmd.name, ""), None)
        if handler is None:
            if cmd.name.startswith(("unknown", "CTL")):
                self.unknown.append(cmd.name)
            return  # known but without effect on paper (spacing, density, buzzer ...)
        handler(cmd)

    def _do_text(self, cmd: Command) -> None:
        self._add_text(cmd.data.decode(self.codec, errors="replace"))

    def _do_LF(self, cmd: Command) -> None:
        if self._column_band and not self._line:
            return  # the LF that ends an image band is not a blank line
        self._flush()

    def _do_ESC_d(self, cmd: Command) -> None:
        self._flush(force=False)
        for _ in range(cmd.args[0]):
            self.receipt.lines.append(Line(""))

    def _do_ESC_at(self, cmd: Command) -> None:
        self._flush(force=False)
        self._reset()

    def _do_ESC_t(self, cmd: Command) -> None:
        name = self._tables.get(cmd.args[0])
        codec = codepages.python_codec(name) if name else None
        if codec is None:
            self.unknown.append(f"ESC t {cmd.args[0]} (code page not in the emulator's profile)")
        else:
            self.codec = codec

    def _do_ESC_E(self, cmd: Command) -> None:
        self.bold = bool(cmd.args[0] & 1)

    def _do_ESC_minus(self, cmd: Command) -> None:
        self.underline = cmd.args[0] in (1, 2, 49, 50)

    def _do_ESC_bang(self, cmd: Command) -> None:
        n = cmd.args[0]
        self.bold = bool(n & 0x08)
        self.underline = bool(n & 0x80)
        self.height = 2 if n & 0x10 else 1
        self.width = 2 if n & 0x20 else 1

    def _do_GS_bang(self, cmd: Command) -> None:
        self.width, self.height = (cmd.args[0] >> 4) + 1, (cmd.args[0] & 0x0F) + 1

    def _do_ESC_a(self, cmd: Command) -> None:
        self.align = {0: "left", 1: "center", 2: "right"}.get(cmd.args[0] % 48, "left")
        if self._line_style is not None and not "".join(self._line):
            self._line_style = None

    def _do_GS_V(self, cmd: Command) -> None:
        self._flush(force=False)
        self.receipt.cut = "partial" if cmd.args[0] in (1, 49, 66, 98, 104) else "full"
        done, self.receipt = self.receipt, Receipt()
        self._on_receipt(done)

    def _do_GS_k(self, cmd: Command) -> None:
        m = cmd.args[0]
        kind = _BARCODE_A.get(m) or _BARCODE_A.get(m - _BARCODE_B_FIRST) or _BARCODE_B_MORE.get(m, f"type {m}")
        value = cmd.data.decode("ascii", errors="replace")
        if kind in ("CODE128", "GS1-128"):
            value = _code128_text(value)
        self._element(f"BARCODE {kind}: {value}")

    def _do_GS_paren_k(self, cmd: Command) -> None:
        cn, fn = cmd.data[:1], cmd.data[1:2]
        if cn != b"1":  # PDF417, MaxiCode ...: only their print function leaves a mark
            if fn == b"Q":
                self._element("2D CODE (not QR)")
            return
        if fn == b"P":  # store data (after the m byte '0')
            self._qr_data = cmd.data[3:]
        elif fn == b"Q":  # print the stored symbol
            self._element(f"QR: {self._qr_data.decode('utf-8', errors='replace')}")

    def _do_GS_v_0(self, cmd: Command) -> None:
        self._element(f"IMAGE {cmd.args[0]}x{cmd.args[1]}")

    def _do_GS_paren_L(self, cmd: Command) -> None:
        # fn 'p' (112) stores a raster: m fn a bx by c xL xH yL yH; fn '2' (50) prints it
        if cmd.data[1:2] == b"p" and len(cmd.data) >= 10:
            w = cmd.data[6] + 256 * cmd.data[7]
            h = cmd.data[8] + 256 * cmd.data[9]
            self._graphics = (w, h)
        elif cmd.data[1:2] == b"2":
            w, h = self._graphics
            self._element(f"IMAGE {w}x{h}")

    def _do_ESC_star(self, cmd: Command) -> None:
        # Column images come as bands of 8 or 24 dots, each ended by LF: merge them.
        last = self.receipt.lines[-1] if self.receipt.lines else None
        if self._column_band and last is not None and last.text.startswith("[IMAGE "):
            w, h = last.text[7:-1].split("x")
            last.text = f"[IMAGE {max(int(w), cmd.args[1])}x{int(h) + cmd.args[2]}]"
        else:
            self._element(f"IMAGE {cmd.args[1]}x{cmd.args[2]}")
        self._column_band = True

    def after(self, cmd: Command) -> None:
        """Bookkeeping between commands: a column image run ends at anything but LF/ESC */spacing."""
        if cmd.name not in ("ESC *", "LF", "ESC 3", "ESC 2"):
            self._column_band = False


_HANDLERS = {
    "text": "_do_text", "LF": "_do_LF", "ESC d": "_do_ESC_d", "ESC @": "_do_ESC_at",
    "ESC t": "_do_ESC_t", "ESC E": "_do_ESC_E", "ESC -": "_do_ESC_minus", "ESC !": "_do_ESC_bang",
    "GS !": "_do_GS_bang", "ESC a": "_do_ESC_a", "GS V": "_do_GS_V", "GS k": "_do_GS_k",
    "GS ( k": "_do_GS_paren_k", "GS v 0": "_do_GS_v_0", "GS ( L": "_do_GS_paren_L",
    "ESC *": "_do_ESC_star",
}
