"""`llmops ui`: serve the web UI alone (the server, `llmops serve`, also mounts it at /ui)."""

from __future__ import annotations

import ipaddress
import re
import socket

import typer

from llmops.cli import app, workspace
from llmops.errors import InvalidValue

_HOSTNAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")


def check_address(host: str, port: int) -> None:
    """Refuse an address the server could not listen on, before anything starts."""
    if not 1 <= port <= 65535:
        raise InvalidValue(f"--port {port} is out of range: give a port 1..65535")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _HOSTNAME.fullmatch(host):
            raise InvalidValue(f"--host {host[:80]!r} is not an IP address or a host name: try 127.0.0.1") from None
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise InvalidValue(f"--host {host!r} does not resolve ({exc}): try 127.0.0.1") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise InvalidValue(f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another --port") from None


@app.command("ui")
def ui(host: str = typer.Option("127.0.0.1", help="Address to listen on."),
       port: int = typer.Option(8001, help="Port to listen on (1..65535).")):
    """Serve the web UI alone, at http://HOST:PORT/ui (read-only pages, a playground, alias moves)."""
    check_address(host, port)
    ws = workspace()
    import uvicorn

    from llmops.ui.app import standalone_app

    shown = f"[{host}]" if ":" in host else host
    typer.echo(f"llmops UI on http://{shown}:{port}/ui (workspace {ws.root}); Ctrl-C stops it")
    uvicorn.run(standalone_app(ws), host=host, port=port, log_level="warning")
