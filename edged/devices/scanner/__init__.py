"""Barcode scanners: keyboard-wedge (evdev) and serial, key codes to text, scans to events."""
