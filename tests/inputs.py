"""Fake scanners for tests: the key events a scanner programmed for a layout sends, to write
into a pipe-backed InputDevice (edged.sim.wedge)."""
from __future__ import annotations

from evdev import ecodes
from xkbcommon import xkb


def typing(text: str, layout: str, start: float = 1000.0, gap: float = 0.004, suffix: int | None = ecodes.KEY_ENTER,
           ) -> list[tuple[float, int, int, int]]:
    """The key events a scanner programmed for `layout` sends for `text` (found by asking
    libxkbcommon which key and modifiers produce each character)."""
    table = _reverse(layout)
    events, t = [], start
    for ch in text:
        code, mods = table[ch]
        for m in mods:
            events.append((t, ecodes.EV_KEY, m, 1))
        events += [(t, ecodes.EV_KEY, code, 1), (t + gap / 2, ecodes.EV_KEY, code, 0)]
        for m in reversed(mods):
            events.append((t + gap / 2, ecodes.EV_KEY, m, 0))
        t += gap
    if suffix is not None:
        events += [(t, ecodes.EV_KEY, suffix, 1), (t + gap / 2, ecodes.EV_KEY, suffix, 0)]
    return events


_MOD_SETS = ((), (ecodes.KEY_LEFTSHIFT,), (ecodes.KEY_RIGHTALT,), (ecodes.KEY_LEFTSHIFT, ecodes.KEY_RIGHTALT),
             (ecodes.KEY_LEFTCTRL,))


def _reverse(layout: str) -> dict[str, tuple[int, tuple[int, ...]]]:
    keymap = xkb.Context().keymap_new_from_names(layout=layout)
    # Scanners send GS as Ctrl+] (the key right of P), whatever else might produce 0x1D.
    table: dict[str, tuple[int, tuple[int, ...]]] = {"\x1d": (ecodes.KEY_RIGHTBRACE, (ecodes.KEY_LEFTCTRL,))}
    for mods in _MOD_SETS:
        for code in range(1, 120):
            state = keymap.state_new()
            for m in mods:
                state.update_key(m + 8, xkb.XKB_KEY_DOWN)
            ch = state.key_get_string(code + 8)
            if len(ch) == 1 and ch not in table and code not in (ecodes.KEY_ENTER, ecodes.KEY_TAB):
                table[ch] = (code, mods)
    return table
