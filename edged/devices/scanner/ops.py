"""Scanner requests on the socket: `scan_layouts`, a technician's help for the layout setting."""
from __future__ import annotations

from typing import Any

from ...relay import protocol as p
from ...relay.registry import Level, may, op
from .device import Scanner
from .fixture import COMMON_LAYOUTS, under_layouts
from .keymap import check_layout


class ScanOps:
    def __init__(self, scanners: dict[str, Scanner]) -> None:
        self.wedges = {name: s for name, s in scanners.items() if s.settings.backend == "evdev"}

    @op("scan_layouts", Level.ANY, device=may(str), layouts=may(list))
    async def op_scan_layouts(self, session: Any, params: dict[str, Any]) -> dict[str, Any]:
        """The last scan's key events read under each common layout: the one that shows what the
        barcode says is how the scanner is programmed."""
        name = p.named(params, "device", self.wedges, "keyboard-wedge scanner")
        layouts = p.param(params, "layouts", list, required=False, default=list(COMMON_LAYOUTS))
        scanner = self.wedges[name]
        if not scanner.last_keys:
            raise p.RequestError(p.NOT_FOUND, f"no scan from {name} yet: scan a barcode first")
        s = scanner.settings
        for i, layout in enumerate(layouts):
            if not isinstance(layout, str) or (why := check_layout(layout)):
                raise p.RequestError(p.BAD_REQUEST, f"layouts[{i}]: {why or 'must be a string'}")
        return {"device": name, "layout": s.layout, "variant": s.variant,
                "read_as": under_layouts(scanner.last_keys, s.suffix, s.timeout, layouts)}
