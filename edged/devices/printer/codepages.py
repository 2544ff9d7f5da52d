"""Code pages and printer profiles, looked up in python-escpos's capability database.

edged sends one fixed code page per printer (no mid-line page hopping, see
FACTS.md); these helpers validate that choice and map ESC t table numbers back
to Python codecs for the emulator.
"""
from __future__ import annotations

from escpos.capabilities import CAPABILITIES


def canonical(name: str) -> str:
    """Epson's names (PC858, WPC1252) to the database's (CP858, CP1252)."""
    upper = name.upper()
    for prefix in ("WPC", "PC"):
        if upper.startswith(prefix) and upper[len(prefix):].isdigit():
            return "CP" + upper[len(prefix):]
    return upper


def profiles() -> list[str]:
    return sorted(CAPABILITIES["profiles"])


def profile_problem(profile: str) -> str | None:
    if profile in CAPABILITIES["profiles"]:
        return None
    return f"unknown python-escpos profile {profile!r} (known: {', '.join(profiles())})"


def tables(profile: str = "default") -> dict[int, str]:
    """ESC t table number -> code page name, for one profile."""
    pages = CAPABILITIES["profiles"][profile]["codePages"]
    return {int(n): name for n, name in pages.items() if name != "Unknown"}


def python_codec(name: str) -> str | None:
    return CAPABILITIES["encodings"].get(canonical(name), {}).get("python_encode")


def codepage_problem(profile: str, name: str) -> str | None:
    page = canonical(name)
    usable = sorted(p for p in tables(profile).values() if python_codec(p))
    if page not in usable:
        return f"code page {name!r} is not usable with profile {profile!r} (usable: {', '.join(usable)})"
    return None


def table_number(profile: str, name: str) -> int:
    page = canonical(name)
    return next(n for n, p in tables(profile).items() if p == page)


def columns(profile: str = "default") -> int:
    """Characters per line in Font A, as the profile says."""
    return int(CAPABILITIES["profiles"][profile]["fonts"]["0"]["columns"])


def profile_dots(profile: str) -> int | None:
    """The print head's width in dots, when the profile knows it."""
    pixels = CAPABILITIES["profiles"][profile].get("media", {}).get("width", {}).get("pixels")
    return int(pixels) if str(pixels).isdigit() else None
