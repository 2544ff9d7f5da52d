"""The simulated till: a receipt printer emulator, simulated scanners, sticks as directories."""
