"""`edged relay` (on the till) and `edged headoffice ingest` (at head office): the journal online over
MQTT (docs/FLEET.md)."""
from __future__ import annotations

import argparse
import asyncio
import os
import socket
import ssl
import sys

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from .. import config, logs
from ..day import backend
from ..fleet import ingest, mqtt, settings
from ..fleet.relay import Relay
from . import chain
from .common import EXIT_USAGE, socket_path
from .day import ARCHIVE_HELP


def _broker_args(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--broker", metavar="URL", help=f"the MQTT 5 broker, mqtts://HOST:PORT or mqtt://HOST:PORT{what}")
    p.add_argument("--ca", metavar="PEM", help="CA certificate of the broker's certificate")
    p.add_argument("--cert", metavar="PEM", help="client certificate (with --key)")
    p.add_argument("--key", metavar="PEM", help="the client certificate's private key")


def register(sub: argparse._SubParsersAction) -> None:
    relay = sub.add_parser(
        "relay", help="send this till's journal to head office over MQTT (the edged-relay service)",
        description="Reads the journal as consumer `head-office` and publishes it to head office's MQTT "
                    "broker; edged's cursor moves only when head office says the records are in its "
                    "archive, so nothing is lost while the network, the broker or head office is down: "
                    "the journal waits, and the relay sends again from the cursor. Settings: [relay] in "
                    "edged.toml (broker, ca, cert, key); the options below override them.",
        epilog="Check the settings first: `edged relay --check` connects to the broker with the "
               "certificate and says in one line what is wrong.")
    _broker_args(relay, " (default: relay.broker)")
    relay.add_argument("--check", action="store_true", help="connect once, say whether it worked, exit")
    relay.add_argument("--socket", metavar="PATH", help="edged's socket (default: daemon.socket)")
    relay.add_argument("--config", metavar="FILE", help=f"config file (default {config.DEFAULT_PATH})")
    relay.add_argument("--state", metavar="DIR", help="where to note how far head office's records were applied "
                                                      "(default: relay.state_dir, /var/lib/edged-relay)")
    relay.set_defaults(func=cmd_relay)

    ho = sub.add_parser("headoffice", help="head office: the tills' journals in, records out to them, their status",
                        description="Head office's side of the online relay (docs/FLEET.md): `ingest` takes the "
                                    "tills' journals into the archive and sends them what the outbox holds; `send` "
                                    "queues a record for one till or all; `status` and `alerts` show the chain.")
    hsub = ho.add_subparsers(dest="ho_command", metavar="HCOMMAND", required=True)
    ing = hsub.add_parser(
        "ingest", help="check each till's batches and write them into the archive, then acknowledge them",
        description="Subscribes to every till's batches (edged/v1/till/+/up), checks each as `edged "
                    "import` checks a stick (chain, enrolled till, signed days), writes it into the "
                    "archive (records already there are skipped; the same seq with other contents is "
                    "refused and reported) and, after the commit, tells the till how far its records "
                    "are archived. Run several to share the load (MQTT 5 shared subscription).")
    ing.add_argument("--config", metavar="FILE", help=f"head office's settings, [ingest] (default "
                                                      f"{settings.DEFAULT_PATH} if it exists); options win")
    ing.add_argument("--archive", metavar="ARCHIVE", help=ARCHIVE_HELP + " (default: ingest.archive)")
    _broker_args(ing, " (default: ingest.broker)")
    ing.add_argument("--group", help="shared subscription group (default: ingest.group, or ingest; "
                                     "empty: every ingest gets every batch)")
    ing.add_argument("--client-id", metavar="ID", help="MQTT client id (default: ingest-HOSTNAME-PID)")
    ing.set_defaults(func=cmd_ingest)
    chain.register(hsub)


def _endpoint(args: argparse.Namespace, settings: config.RelaySettings | None) -> mqtt.Endpoint:
    s = settings or config.RelaySettings()
    return mqtt.Endpoint(args.broker or s.broker, args.ca or s.ca, args.cert or s.cert, args.key or s.key)


def _unusable(endpoint: mqtt.Endpoint, unset: str) -> str | None:
    """Why this broker cannot be used (`unset` when none is given), or None."""
    if not endpoint.url:
        return unset
    try:
        endpoint.parts()
    except ValueError as e:
        return str(e)
    return None


def cmd_relay(args: argparse.Namespace) -> int:
    settings = config.load(args.config).relay if (args.config or not args.broker) else config.RelaySettings()
    endpoint = _endpoint(args, settings)
    why = _unusable(endpoint, "relay.broker is not set in edged.toml: the relay has nowhere to send (docs/FLEET.md)")
    if why:
        print(f"edged: {why}", file=sys.stderr)
        return EXIT_USAGE
    if args.check:
        why = check(endpoint, f"check-{socket.gethostname()}-{os.getpid()}")
        print(f"relay: {why}" if why else f"relay: connected to {endpoint.url}"
              + (" with the client certificate" if endpoint.cert else ""))
        return 1 if why else 0
    state = args.state or settings.state_dir
    try:
        os.makedirs(state, mode=0o700, exist_ok=True)
        if not os.access(state, os.W_OK):
            raise PermissionError(f"{state}: not writable by this user")
    except OSError as e:
        print(f"edged: relay.state_dir: {e}", file=sys.stderr)
        return EXIT_USAGE
    logs.setup("info")  # journald's priorities under systemd, readable lines on a terminal
    relay = Relay(socket_path(args), endpoint, window=settings.window, batch=settings.batch,
                  ack_timeout=settings.ack_timeout, state_dir=state, reconnect_max=settings.reconnect_max)
    try:
        asyncio.run(relay.run())
    except KeyboardInterrupt:
        return 130
    return 0


def check(endpoint: mqtt.Endpoint, client_id: str, timeout: float = 10) -> str | None:
    """One connection to the broker: None when it worked, else what is wrong, in one line."""
    host, port, tls = endpoint.parts()
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5)
    try:
        if tls:
            c.tls_set(ca_certs=endpoint.ca or None, certfile=endpoint.cert or None, keyfile=endpoint.key or None,
                      cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        if endpoint.username:
            c.username_pw_set(endpoint.username, endpoint.password or None)
        c.connect(host, port, keepalive=10)
    except FileNotFoundError as e:
        return f"{e.filename}: no such file"
    except ssl.SSLError as e:
        return f"TLS with {host}:{port} failed: {e.reason or e} (check the CA, the certificate and its key)"
    except OSError as e:
        return f"cannot reach {host}:{port}: {e.strerror or e}"
    result: list[str | None] = []
    c.on_connect = lambda client, userdata, flags, reason, props: result.append(
        f"the broker refused the connection: {reason}" if reason.is_failure else None)
    for _ in range(int(timeout * 10)):
        c.loop(0.1)
        if result:
            break
    c.disconnect()
    return result[0] if result else f"no answer from {host}:{port} within {timeout:g} s"


def cmd_ingest(args: argparse.Namespace) -> int:
    try:
        s = settings.load(args.config).ingest
    except config.ConfigError as e:
        print(f"edged: {e}", file=sys.stderr)
        return EXIT_USAGE
    endpoint = mqtt.Endpoint(args.broker or s.broker, args.ca or s.ca, args.cert or s.cert, args.key or s.key)
    archive = args.archive or s.archive
    why = _unusable(endpoint, "give the broker with --broker mqtts://HOST:PORT or ingest.broker")
    if not archive:
        why = "give the archive with --archive DIR|postgresql://... or ingest.archive"
    if why:
        print(f"edged: {why}", file=sys.stderr)
        return EXIT_USAGE
    logs.setup("info")  # journald's priorities under systemd, readable lines on a terminal
    client_id = args.client_id or f"ingest-{socket.gethostname()}-{os.getpid()}"
    try:
        asyncio.run(ingest.run(archive, endpoint, client_id, s.group if args.group is None else args.group))
    except KeyboardInterrupt:
        return 130
    except backend.ArchiveUnreachable as e:  # the database down: the service tries again (exit 1)
        print(f"edged: {e}", file=sys.stderr)
        return 1
    except backend.ArchiveError as e:  # no psycopg, tables it may not make: a setting to fix (exit 2)
        print(f"edged: {e}", file=sys.stderr)
        return EXIT_USAGE
    return 0
