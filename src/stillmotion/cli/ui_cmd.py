"""``stillmotion ui``: serve the local web app."""

from __future__ import annotations

import ipaddress
import socket
import threading
from pathlib import Path

import click

from stillmotion.errors import UserInputError


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_port_free(host: str, port: int) -> None:
    """A clear message now rather than a server that starts and dies."""
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((host, port))
    except OSError as exc:
        raise UserInputError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --port or --host"
        ) from None


def _warm_up() -> None:
    from stillmotion.ui.runs import engine_status, warm_up

    if engine_status(None)["warp"]["available"]:
        try:
            warm_up()
        except Exception as exc:  # only a head start; a real run reports any problem properly
            click.echo(f"(warm-up of the warp engine failed: {exc})", err=True)


@click.command("ui")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. The default serves this computer only; 0.0.0.0 exposes the app "
    "to the network.",
)
@click.option(
    "--port", default=7860, show_default=True, type=click.IntRange(0, 65535), help="Port (0 = any free port)."
)
@click.option(
    "--model",
    "model",
    type=click.Path(path_type=Path),
    default=None,
    help="Diffusion model folder; without it the diffusion engine uses the bundled model when there is one.",
)
@click.option(
    "--max-upload-mb",
    default=20.0,
    show_default=True,
    type=click.FloatRange(0.1, 2000),
    help="Largest photo or mask upload accepted, in megabytes.",
)
@click.option(
    "--max-megapixels",
    default=50.0,
    show_default=True,
    type=click.FloatRange(0.01, 400),
    help="Largest decoded photo accepted (guards against decompression bombs).",
)
def ui(host: str, port: int, model: Path | None, max_upload_mb: float, max_megapixels: float) -> None:
    """Serve the web app: upload a photo, draw arrows and a mask, preview the motion, animate, download.

    Works offline (no CDN, no analytics). Files live in a private temporary folder that is deleted on exit.
    """
    try:
        import uvicorn

        from stillmotion.ui.server import create_app
    except ModuleNotFoundError as exc:
        raise UserInputError(
            f"the web app needs the 'ui' extra (missing package {exc.name!r}): pip install 'stillmotion[ui]'"
        ) from None

    if model is not None and not model.is_dir():
        raise UserInputError(f"--model {model} is not a folder")
    _check_port_free(host, port)
    if not _is_loopback(host):
        click.secho(
            f"WARNING: listening on {host}: anyone who can reach this machine on port {port} can upload "
            "files and use its CPU/GPU. The app has no login. Use --host 127.0.0.1 unless you mean it.",
            fg="yellow",
            err=True,
        )
    hosts = ["127.0.0.1", "localhost", "::1", "[::1]", host] if _is_loopback(host) else None
    app = create_app(
        model_dir=model,
        max_upload_mb=max_upload_mb,
        max_pixels=int(max_megapixels * 1e6),
        allowed_hosts=hosts,
    )
    # Compile the warp engine's kernels while the user opens the page (the first run would wait for it).
    threading.Thread(target=_warm_up, name="stillmotion-ui-warm-up", daemon=True).start()
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"stillmotion ui: open http://{shown}:{port}/ in a browser (Ctrl+C stops it)", err=True)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    finally:
        # Also when the server stops by a signal before its shutdown hook ran: no uploads left behind.
        app.state.queue.stop()
        app.state.store.close()
