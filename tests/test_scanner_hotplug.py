"""Hot-plug of keyboard-wedge scanners: a udev event replayed into the daemon's own pyudev
monitor (udevd's message format on netlink), with the device's fd a pipe of input events.
Identity by vendor/product/serial on udev properties; scans kept for a late watcher."""
from __future__ import annotations

import asyncio
import os

import pytest

import udev
from edged import config
from edged.client import Client
from edged.daemon import Daemon
from edged.sim.wedge import packed, pipe_device, typing
from printing import until


def test_unplug_and_replug_by_udev_without_restarting(short_dir):
    udev.require_netlink()
    nodes: dict[str, tuple] = {}
    opened: list[str] = []

    def opener(path: str):
        opened.append(path)
        if path not in nodes:
            raise FileNotFoundError(2, "No such file or directory", path)
        return nodes.pop(path)[0]

    def plug(number: int, serial: str = "S123"):
        dev, w = pipe_device(f"event{number}")
        nodes[f"/dev/input/event{number}"] = (dev, w)
        udev.send(udev.input_event("add", number, serial=serial))
        return w

    async def scenario():
        cfg = config.from_dict({
            "daemon": {"socket": str(short_dir / "s.sock"), "state_dir": str(short_dir / "st")},
            "scanners": {"front": {"vendor": "05e0", "product": "1200", "serial": "S123", "layout": "de",
                                   "keep_unheard": 2}}})
        async with Daemon(cfg, input_opener=opener).parts() as daemon:
            front = daemon.till.devices["front"]
            async with await Client.connect(cfg.daemon.socket, "pos") as c:
                st = (await c.request("status"))["devices"]["front"]
                assert st["state"] == "error" and st["device"] == "vendor 05e0 product 1200 serial S123"
                assert "no keyboard input device with vendor 05e0 product 1200 serial S123" in st["detail"]
                other = plug(98, serial="S999")  # same model, another scanner: not ours
                w = plug(99)
                await until(lambda: front.state == "online", timeout=1.5, what="online by hot-plug")
                assert opened == ["/dev/input/event99"] and front.node == "/dev/input/event99"
                assert "/dev/input/event98" in nodes  # the other serial was never opened

                # Nobody watching: the scans are counted and (keep_unheard = 2) the last two kept.
                os.write(w, packed(typing("Y1", "de") + typing("Z2", "de", start=1001) + typing("Ö3", "de", start=1002)))
                await until(lambda: front.scans == 3, what="three scans")
                assert front.unheard == 3
                tech = await Client.connect(cfg.daemon.socket, "edged-cli")
                await tech.request("watch", topics=["scanner"])  # a plain watcher: not handed kept scans
                await c.request("watch", topics=["scanner"], kept=True)  # the POS app asks for them
                kept = [await c.next_event(5) for _ in range(2)]
                assert [(e["code"], e["kept"]) for e in kept] == [("Z2", True), ("Ö3", True)]
                os.write(w, packed(typing("4006381333931", "de", start=1003)))
                live = await c.next_event(5)
                assert live["code"] == "4006381333931" and "kept" not in live
                assert (await tech.next_event(5))["code"] == "4006381333931"
                await tech.close()

                udev.send(udev.input_event("remove", 99))  # unplugged; the pipe is still open
                ev = await c.next_event(5)
                assert (ev["event"], ev["state"], ev["detail"]) == ("scanner.state", "offline", "unplugged")
                os.close(w)

                w = plug(100)  # back, under another event number
                ev = await c.next_event(5)
                assert (ev["event"], ev["state"]) == ("scanner.state", "online") and front.node == "/dev/input/event100"
                os.write(w, packed(typing("#@", "de", start=1004)))
                assert (await c.next_event(5))["code"] == "#@"
                os.close(w)  # the fd closing (ENODEV on a real node) is a removal too
                ev = await c.next_event(5)
                assert (ev["event"], ev["state"], ev["detail"]) == ("scanner.state", "offline", "device gone")
                st = (await c.request("status"))["devices"]["front"]
                assert st["state"] == "error" and st["scans"] == 5 and st["node"] == ""
                os.close(other)
        for dev, _w in nodes.values():
            dev.close()  # not os.close: the InputDevice would close the number again when collected
    asyncio.run(scenario())


def test_a_by_id_path_matches_the_link_udev_names():
    udev.require_netlink()
    from edged.devices.scanner.identity import Identity
    link = "/dev/input/by-id/usb-Symbol_Scanner_S123-event-kbd"
    ident = Identity(path=link)
    assert ident.matches(udev.input_event("add", 7, links=(link, "/dev/input/by-path/pci-usb-0:1:1.0-event-kbd")))
    assert not ident.matches(udev.input_event("add", 8, links=("/dev/input/by-id/usb-Other-event-kbd",)))
    by_ids = Identity(vendor="05E0", product="1200")  # case of hex digits does not matter
    assert by_ids.matches(udev.input_event("add", 7, serial="anything"))
    assert not by_ids.matches({**udev.input_event("add", 7), "ID_INPUT_KEYBOARD": ""})  # its mouse or consumer keys


@pytest.mark.parametrize("scanners,message", [
    ({"a": {"vendor": "05e0", "product": "1200"}, "b": {"vendor": "05E0", "product": "1200", "serial": "S2"}},
     "scanners.a.serial: scanners a and b are both 05e0:1200; give each its serial"),
    ({"a": {"vendor": "05e0", "product": "1200", "serial": "S2"}, "b": {"vendor": "05e0", "product": "1200",
                                                                      "serial": "S2"}},
     "scanners.b.serial: same as scanners.a.serial"),
    ({"a": {"vendor": "5e0", "product": "1200"}}, "scanners.a.vendor: 4 hex digits"),
    ({"a": {"vendor": "05e0", "product": "1200", "device": "/dev/input/event3"}}, "scanners.a.device: give either"),
    ({"a": {"backend": "serial", "device": "/dev/ttyACM0", "suffix": "cr", "vendor": "05e0"}},
     "scanners.a.vendor: vendor/product/serial identify keyboard-wedge"),
    ({"a": {}}, "scanners.a.device: required for backend 'evdev' (or vendor and product)"),
])
def test_scanner_identity_config_errors(scanners, message):
    with pytest.raises(config.ConfigError) as e:
        config.from_dict({"scanners": scanners})
    assert message in str(e.value)
