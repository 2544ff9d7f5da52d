"""Printers, drawers, scanners and their registry."""
