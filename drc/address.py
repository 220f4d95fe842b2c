"""``host:port`` as drc.conf writes it, read in one place for the DRC link and the metrics."""

from __future__ import annotations


def split_host_port(
    value: str, what: str, *, bare_port: str | None = None, any_port: bool = False
) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` → (host, port); ValueError naming ``what``.

    With ``bare_port`` a lone ``PORT`` means that host (the metrics' ``9820`` is loopback).
    Port 0 (the kernel picks one) only with ``any_port``: a listener nobody must find.
    """
    text = value.strip()
    if bare_port is not None and text.isdigit():
        host, port = bare_port, text
    else:
        host, sep, port = text.rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit():
            form = "PORT or HOST:PORT" if bare_port is not None else "host:port"
            raise ValueError(f"{what} must be {form}, got {value!r}")
    if not (0 if any_port else 1) <= int(port) <= 65535:
        raise ValueError(f"{what}: port {port} is not in 1..65535")
    return host, int(port)
