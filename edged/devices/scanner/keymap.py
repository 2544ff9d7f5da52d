"""Key events -> text, through libxkbcommon with the layout the scanner is programmed for.

A keyboard-wedge scanner sends key codes, not characters: which character a
code means depends on the layout it was programmed for (a German-programmed
scanner sends the key labelled Z on a German keyboard for "z"). libxkbcommon
turns codes into text with that layout's real keymap, Shift, AltGr, Caps Lock
and Ctrl included (Ctrl+] gives GS, 0x1D, where the layout has "]").
Each scanner has its own KeyDecoder: modifier state never leaks between them.
"""
from __future__ import annotations

import functools
from collections.abc import Iterable

from xkbcommon import xkb

EVDEV_OFFSET = 8  # xkb keycodes are evdev codes + 8
PRESS, RELEASE, REPEAT = 1, 0, 2


class LayoutError(ValueError):
    """The layout/variant is not in the system's xkb data."""


@functools.cache
def _keymap(layout: str, variant: str) -> xkb.Keymap:
    context = xkb.Context()
    # libxkbcommon writes its compile errors to stderr; ours names the key instead.
    context.set_log_fn(lambda *args: None)
    try:
        return context.keymap_new_from_names(layout=layout, variant=variant or None)
    except xkb.XKBKeymapCreationFailure:
        raise LayoutError(f"unknown keyboard layout {layout!r}" + (f" variant {variant!r}" if variant else "")
                          + " (see /usr/share/X11/xkb/symbols)") from None


def check_layout(layout: str, variant: str = "") -> str | None:
    """None when the layout compiles, else why not (for config checks)."""
    try:
        _keymap(layout, variant)
    except LayoutError as e:
        return str(e)
    return None


class KeyDecoder:
    def __init__(self, layout: str = "us", variant: str = "") -> None:
        self.layout, self.variant = layout, variant
        self._state = _keymap(layout, variant).state_new()

    def reset(self, pressed: Iterable[int] = ()) -> None:
        """Start over with only these keys (evdev codes) down: after the kernel dropped events,
        the releases of Shift or AltGr may be among what was lost."""
        self._state = _keymap(self.layout, self.variant).state_new()
        for code in pressed:
            self._state.update_key(code + EVDEV_OFFSET, xkb.XKB_KEY_DOWN)

    def key(self, code: int, value: int) -> str:
        """One EV_KEY event; the text a press produces ('' for modifiers, releases, repeats).

        Repeats are ignored: a scanner never holds a key, so a repeat is a stuck
        key or a human, never data."""
        if value == REPEAT:
            return ""
        keycode = code + EVDEV_OFFSET
        if value == PRESS:
            text = self._state.key_get_string(keycode)
            self._state.update_key(keycode, xkb.XKB_KEY_DOWN)
            return text
        self._state.update_key(keycode, xkb.XKB_KEY_UP)
        return ""
