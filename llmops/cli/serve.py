"""`llmops serve`: the workspace's models, adapters and chains over HTTP (OpenAI-compatible), with uvicorn.

Everything a user can get wrong (settings, the address, a busy port) is checked and reported as one
`error:` line before any model loads, and the port is bound before the app is built, so a bad command
line fails at once instead of serving or hanging.
"""

from __future__ import annotations

from typing import Optional

import typer

from llmops.cli import app, workspace


def _settings(**values):
    from pydantic import ValidationError

    from llmops.errors import SpecError
    from llmops.serve.settings import ServeSettings

    given = {k: v for k, v in values.items() if v is not None}
    try:
        return ServeSettings(**given)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        field = ".".join(str(p) for p in err["loc"])
        option = "--" + {"upstream_url": "upstream", "timeout_s": "timeout", "vllm_model": "model",
                         "api_keys_required": "require-keys"}.get(field, field).replace("_", "-")
        message = err["msg"].removeprefix("Value error, ")
        if field:
            shown = str(values.get(field))
            shown = shown if len(shown) <= 80 else shown[:77] + "..."
            raise SpecError(f"{option} {shown!r}: {message}", fix=f"see `llmops serve --help`") from None
        raise SpecError(message, fix="see `llmops serve --help`") from None


def _bind(host: str, port: int):
    """A listening socket on host:port, or one `error:` line saying why not."""
    import socket

    from llmops.errors import LLMOpsError

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise LLMOpsError(f"cannot listen on {host}:{port}: {host!r} does not resolve ({exc}); "
                          "use an address such as 127.0.0.1") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise LLMOpsError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another --port "
                          "or --host") from None
    return sock


@app.command("serve")
def serve(host: Optional[str] = typer.Option(None, help="Address to bind  [default: 127.0.0.1, loopback only]"),
          port: Optional[int] = typer.Option(None, help="TCP port  [default: 8000]"),
          backend: Optional[str] = typer.Option(None, help="transformers (in-process, batched), openai (forward to "
                                                           "--upstream) or vllm  [default: transformers]"),
          upstream: Optional[str] = typer.Option(None, help="API root of the server the openai/vllm backend "
                                                            "forwards to, e.g. http://127.0.0.1:8001/v1"),
          model: Optional[str] = typer.Option(None, help="The model the vllm backend starts `vllm serve` on "
                                                         " [default: smollm2]"),
          max_concurrency: Optional[int] = typer.Option(None, help="Generation requests in flight (429 beyond) "
                                                                   " [default: 64]"),
          max_tokens_limit: Optional[int] = typer.Option(None, help="Largest max_tokens a request may ask for "
                                                                    " [default: 4096]"),
          max_body_bytes: Optional[int] = typer.Option(None, help="Largest request body (413 beyond) "
                                                                  " [default: 1000000]"),
          timeout: Optional[float] = typer.Option(None, help="Seconds a request may take (503 beyond) "
                                                             " [default: 300]"),
          max_batch_size: Optional[int] = typer.Option(None, help="Rows decoded together  [default: 8]"),
          require_keys: Optional[bool] = typer.Option(None, "--require-keys/--no-require-keys",
                                                      help="Require API keys  [default: when any key exists]")):
    """Serve the workspace over HTTP: /v1/chat/completions, /v1/completions, /v1/models, /v1/chains/NAME/...,
    /healthz, /metrics (Prometheus); the API is documented at /docs."""
    import logging

    settings = _settings(host=host, port=port, backend=backend, upstream_url=upstream, vllm_model=model,
                         max_concurrency=max_concurrency, max_tokens_limit=max_tokens_limit,
                         max_body_bytes=max_body_bytes, timeout_s=timeout, max_batch_size=max_batch_size,
                         api_keys_required=require_keys)
    ws = workspace()
    sock = _bind(settings.host, settings.port)
    try:
        import uvicorn

        from llmops.serve.app import create_app

        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        application = create_app(ws, settings)
        where = f"[{settings.host}]" if ":" in settings.host else settings.host
        typer.echo(f"serving {ws.root} on http://{where}:{settings.port} (backend {settings.backend}); "
                   f"API docs at http://{where}:{settings.port}/docs", err=True)
        if settings.host not in ("127.0.0.1", "::1", "localhost") and settings.api_keys_required is not True:
            typer.echo("warning: listening beyond loopback; create API keys (`llmops keys create`) or pass "
                       "--require-keys", err=True)
        server = uvicorn.Server(uvicorn.Config(application, log_level="info", lifespan="on",
                                               timeout_graceful_shutdown=10))
        try:
            server.run(sockets=[sock])
        except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it shut down on; stopping is the normal end
            pass
        if not server.started:
            from llmops.errors import LLMOpsError

            raise LLMOpsError("the server did not start (see the log above)")
        typer.echo("stopped", err=True)
    finally:
        sock.close()
