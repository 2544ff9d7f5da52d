"""Printers, drawers, scanners and their registry."""
from . import escpos_cache

# Before any module of this package imports python-escpos: its cache goes where edged says.
escpos_cache.load()
