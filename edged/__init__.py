"""edged: the till daemon. Importing this package starts nothing."""
__version__ = "0.1.0"
