"""Coverage-guided fuzzing (atheris) of what edged does with a client's bytes before any
device or disk is touched: framing, then every op's parameter checks.

Run by `pytest --long` (tests/test_fuzz.py), or alone:
    python tests/atheris_frames.py -atheris_runs=1000000
Any exception other than the defined refusals (FrameError, RequestError) is a finding.
"""
import sys

import atheris

with atheris.instrument_imports():
    from edged.journal import ops
    from edged.relay import framing
    from edged.relay import protocol as p
    from edged.relay.watch import TOPICS

CHECKS = [ops._entries, ops._consumer,
          lambda params: p.param(params, "topics", list) and [t in TOPICS for t in params["topics"]],
          lambda params: p.param(params, "window", int, required=False),
          lambda params: p.param(params, "from", (int, str))]


def target(data: bytes) -> None:
    try:
        message = framing.decode_body(data)
    except framing.FrameError:
        return
    assert isinstance(message, dict)
    params = {k: v for k, v in message.items() if k not in ("op", "id")}
    for check in CHECKS:
        try:
            check(params)
        except p.RequestError as e:
            assert e.code == p.BAD_REQUEST and e.message


if __name__ == "__main__":
    atheris.Setup(sys.argv, target)
    atheris.Fuzz()
