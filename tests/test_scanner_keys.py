"""Keyboard-wedge scanners: real input_event structs through a pipe-backed evdev.InputDevice,
turned into text by libxkbcommon with the layout the scanner is programmed for."""
from __future__ import annotations

import os

import pytest
from evdev import ecodes

from edged.devices.scanner.assemble import Assembler
from edged.devices.scanner.decode import decode
from edged.devices.scanner.keymap import KeyDecoder, check_layout
from edged.sim.wedge import packed, pipe_device, typing


def scans(events, layout="us", **kw) -> list[tuple[str, str]]:
    dev, w = pipe_device()
    try:
        os.write(w, packed(events))
        asm = Assembler(layout, **kw)
        out = []
        while True:
            try:
                batch = list(dev.read())  # evdev reads a bounded batch per call
            except BlockingIOError:
                break
            for ev in batch:
                if ev.type == ecodes.EV_KEY:
                    out += asm.key(ev.code, ev.value, ev.timestamp())
        tail = asm.idle(events[-1][0] + 1.0)
        return out + ([tail] if tail else [])
    finally:
        os.close(w)
        dev.close()


@pytest.mark.parametrize("layout,text", [
    ("us", "Zy-#/@ 4006381333931"),
    ("de", "Zy-#/@ ß § ö Ä ü €"),
    ("no", "æ ø å Æ Ø Å @ 1234"),
])
def test_a_scanner_read_with_the_layout_it_is_programmed_for(layout, text):
    assert scans(typing(text, layout), layout) == [(text, "suffix")]


def test_the_wrong_layout_garbles_symbols_but_not_digits():
    us_scanner = typing("Zy-#/@", "us")
    assert scans(us_scanner, "de") == [('Yzß§-"', "suffix")]  # FACTS.md: why the layout is configuration
    assert scans(typing("4006381333931", "us"), "de") == [("4006381333931", "suffix")]


def test_caps_lock_repeats_and_modifier_state():
    t = 1000.0
    caps = [(t, ecodes.EV_KEY, ecodes.KEY_CAPSLOCK, 1), (t, ecodes.EV_KEY, ecodes.KEY_CAPSLOCK, 0)]
    body = typing("ab", "us", start=t + 0.004, suffix=None)
    repeat = [(t + 0.02, ecodes.EV_KEY, ecodes.KEY_C, 1), (t + 0.021, ecodes.EV_KEY, ecodes.KEY_C, 2),
              (t + 0.022, ecodes.EV_KEY, ecodes.KEY_C, 2), (t + 0.023, ecodes.EV_KEY, ecodes.KEY_C, 0)]
    enter = [(t + 0.03, ecodes.EV_KEY, ecodes.KEY_ENTER, 1), (t + 0.031, ecodes.EV_KEY, ecodes.KEY_ENTER, 0)]
    assert scans(caps + body + repeat + enter) == [("ABC", "suffix")]


def test_two_scanners_interleaving_keep_their_own_state():
    a = typing("AAAA", "us", gap=0.004)  # holds Shift for each letter
    b = typing("bbbb", "us", start=1000.001, gap=0.004)
    merged = sorted([(e, "a") for e in a] + [(e, "b") for e in b], key=lambda x: x[0][0])
    asm = {"a": Assembler("us"), "b": Assembler("us")}
    out = {"a": [], "b": []}
    for (t, _, code, value), who in merged:
        out[who] += asm[who].key(code, value, t)
    assert out == {"a": [("AAAA", "suffix")], "b": [("bbbb", "suffix")]}


def test_a_pause_longer_than_the_timeout_splits_a_scan_from_typing():
    scan = typing("4006381333931", "us", suffix=None)
    person = typing("42", "us", start=scan[-1][0] + 0.5, gap=0.3)
    # a person types a key every 0.3 s: each is its own "scan", never glued to the real one
    assert scans(scan + person) == [("4006381333931", "timeout"), ("4", "timeout"), ("2", "timeout")]
    assert scans(typing("ABC", "us", suffix=None), suffix="none") == [("ABC", "timeout")]
    assert scans(typing("ABC", "us", suffix=ecodes.KEY_TAB), suffix="tab") == [("ABC", "suffix")]


def test_gs1_128_with_group_separators():
    data = "]C1010950600013435217211231\x1d10AB123"
    got = scans(typing(data, "us"))
    assert got == [(data, "suffix")]  # Ctrl+] under US gives GS
    assert decode(got[0][0])["gs1"] == {"01": "09506000134352", "17": "211231", "10": "AB123"}
    # a US-programmed scanner read as German: Ctrl+] is Ctrl++ there, and GS is lost
    assert scans(typing("10AB\x1d21", "us"), "de") == [("10AB+21", "suffix")]


def test_layouts_are_checked():
    assert check_layout("de", "nodeadkeys") is None
    assert check_layout("xx") == "unknown keyboard layout 'xx' (see /usr/share/X11/xkb/symbols)"
    assert KeyDecoder("us").key(ecodes.KEY_LEFTSHIFT, 1) == ""


@pytest.mark.parametrize("raw,fields", [
    ("]E04006381333931", {"code": "4006381333931", "symbology": "]E0", "valid": True}),
    ("]E04006381333932", {"code": "4006381333932", "symbology": "]E0", "valid": False}),
    ("4006381333932", {"symbology": None, "valid": False, "gs1": None}),
    ("]E496385074", {"code": "96385074", "valid": True}),
    ("]Q1https://example.test", {"code": "https://example.test", "symbology": "]Q1", "gs1": None, "valid": True}),
    ("]d2010950600013435217211231\x1d10AB", {"gs1": {"01": "09506000134352", "17": "211231", "10": "AB"}}),
    ("]C101095060001343537172112", {"valid": False}),
    ("SKU-0042", {"code": "SKU-0042", "symbology": None, "gs1": None, "valid": True}),
])
def test_decoding_aim_gs1_and_check_digits(raw, fields):
    got = decode(raw)
    assert {k: got[k] for k in fields} == fields
    if not got["valid"]:
        assert "check digit" in got["error"]


def test_syn_dropped_tears_the_scan_in_progress():
    """The kernel dropped events (the reader fell behind): what came before, and what follows up to
    the scan's end (suffix, or the timeout for suffix none), is no scan; Shift held at the drop,
    whose release was lost, does not capitalise the next scan."""
    asm = Assembler("us")
    got = []
    for t, _, code, value in typing("AB", "us", suffix=None)[:-2]:  # ends with Shift still down
        got += asm.key(code, value, t)
    assert asm.pending
    assert asm.dropped(1000.01) == "AB" and not asm.pending
    for t, _, code, value in typing("cd-9", "us", start=1000.011):  # the rest of the torn scan
        got += asm.key(code, value, t)
    for t, _, code, value in typing("ef-1", "us", start=1001):
        got += asm.key(code, value, t)
    assert got == [("ef-1", "suffix")]

    quiet = Assembler("us", suffix="none")
    quiet.dropped(1000.0)
    got = [quiet.key(code, value, t) for t, _, code, value in typing("xy", "us", start=1000.001, suffix=None)]
    assert quiet.idle(1000.5) is None  # the torn rest ended by the timeout: nothing
    got += [quiet.key(code, value, t) for t, _, code, value in typing("ok", "us", start=1001, suffix=None)]
    assert [s for batch in got for s in batch] == [] and quiet.idle(1002) == ("ok", "timeout")
