"""The receipt printer: the device and its connection, documents, jobs, the spooler and its socket ops."""
from .. import escpos_cache

# Before any module of this package imports python-escpos: its cache goes where edged says.
escpos_cache.load()
