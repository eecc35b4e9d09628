"""Joining a Ray cluster: checks that fail in seconds, with a message, where Ray would wait; and
an actor's failure told in its own words (`actor_reason`, `raise_actor_failure`).

`ray.init(address="HOST:PORT")` of an address where nothing answers retries until Ray's GCS
connection timeout (minutes); `ray.init(address="auto")` without a running cluster already
fails at once. `check_reachable` opens one TCP connection to the address first (a short
timeout), so `embed --ray HOST:PORT` and `serve --address HOST:PORT` of a wrong or stopped
cluster say so at once. No Ray import here: the checks run before Ray is loaded.
"""
from __future__ import annotations

import re
import socket

from engine import errors
from engine.errors import BackendError, EngineError

CONNECT_TIMEOUT_S = 3.0
_HOST_PORT = re.compile(r"^(?:ray://)?(?P<host>\[[0-9a-fA-F:.]+\]|[^:/\[\]]+):(?P<port>\d{1,5})/?$")


def host_port(address: str | None) -> tuple[str, int] | None:
    """(host, port) of "HOST:PORT" or "ray://HOST:PORT"; None for addresses Ray resolves itself
    (None, "local", "auto", "ray://HOST" without a port)."""
    if not address or address in ("local", "auto"):
        return None
    m = _HOST_PORT.match(address.strip())
    if m is None:
        return None
    return m.group("host").strip("[]"), int(m.group("port"))


def check_reachable(address: str | None, option: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """BackendError naming `option`, the address and what was tried when nothing accepts a TCP
    connection at `address` within `timeout_s` seconds (refused, no route, unknown host, or
    silence). An address without a port ("auto", None) is left to Ray."""
    hp = host_port(address)
    if hp is None:
        return
    host, port = hp
    if not 0 < port < 65536:
        raise BackendError(f"{option} {address}: expected a port in 1..65535, found {port}")
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return
    except TimeoutError:
        why = f"no answer within {timeout_s:g} s"
    except socket.gaierror as e:
        why = f"unknown host ({e.strerror})"
    except OSError as e:
        why = e.strerror or str(e)
    raise BackendError(f"{option} {address}: cannot reach a Ray cluster there: a TCP connection to {host}:{port} "
                       f"failed ({why}); expected the address of a running Ray head (`ray start --head` prints it; "
                       "the GCS port is 6379 by default, the Ray Client port 10001)")


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # Ray colours actor names in its messages
_RAISED = re.compile(r"^(?P<cls>[A-Za-z_][\w.]*(?:Error|Exception|Unavailable)): (?P<msg>.*)$")


def actor_reason(text) -> str:
    """What failed on a Ray actor or replica, in its own words: the last line of `text` (a Ray
    exception or its message), where Ray quotes the actor's traceback ("engine.errors.
    ModelFileError: ...: not a safetensors file"), without Ray's colour codes or the module
    path of an engine error; "" when `text` has no line."""
    lines = [ln.strip() for ln in _ANSI.sub("", str(text or "")).splitlines() if ln.strip()]
    return lines[-1].removeprefix("engine.errors.") if lines else ""


def raise_actor_failure(exc: BaseException, what: str):
    """Raise ONE engine error for `exc`, a failure Ray reports from an actor (its constructor
    or a call), instead of Ray's wrapping with the actor's whole traceback: the engine error
    class the actor raised (engine.errors: ModelFileError, InputError...), else BackendError,
    with `what` and the actor's own last line (`actor_reason`)."""
    reason = actor_reason(exc) or type(exc).__name__
    m = _RAISED.match(reason)
    cls = getattr(errors, m.group("cls"), None) if m else None
    if isinstance(cls, type) and issubclass(cls, EngineError):
        raise cls(f"{what}: {m.group('msg')}") from None
    raise BackendError(f"{what}: {reason}") from None


__all__ = ["CONNECT_TIMEOUT_S", "actor_reason", "check_reachable", "host_port", "raise_actor_failure"]
