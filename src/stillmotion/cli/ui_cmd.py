"""``stillmotion ui``: serve the local web app."""

from __future__ import annotations

import ipaddress
import socket
import threading
from pathlib import Path

import click

from stillmotion.errors import UserInputError
from stillmotion.ui.hosts import LOOPBACK_HOSTS, host_name
from stillmotion.ui.limits import Limits
from stillmotion.ui.runs import engine_status, warm_up


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_wildcard(host: str) -> bool:
    """0.0.0.0 or :: (every address of this machine): no name a client could use."""
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return host == ""


def _check_allowed_host(name: str) -> str:
    """An ``--allowed-host`` value: a host name or an address, without scheme, port or path."""
    value = name.strip()
    bare = host_name(value)
    if (
        not value
        or any(c in value for c in "/*@?#") or any(c.isspace() for c in value)
        or bare != value.strip("[]").lower()
    ):  # fmt: skip
        raise UserInputError(
            f"--allowed-host {name!r}: give a host name or address only (like photos.lan or "
            "192.168.1.4), without scheme, port or path"
        )
    return bare


def allowed_hosts(host: str, allow_remote: bool, extra: tuple[str, ...]) -> list[str]:
    """The Host header names the server answers to; refuse binding beyond loopback unless meant.

    Loopback names always; the ``--host`` address when it is one clients can use; every
    ``--allowed-host``. Raises :class:`UserInputError` for a non-loopback ``--host`` without
    ``--allow-remote``, and for an every-address ``--host`` with no name to check requests against.
    """
    names = [_check_allowed_host(n) for n in extra]
    if not _is_loopback(host):
        if not allow_remote:
            raise UserInputError(
                f"--host {host} lets other machines reach the app, which has no login: add --allow-remote "
                "if you mean it (or use --host 127.0.0.1)"
            )
        if _is_wildcard(host) and not names:
            raise UserInputError(
                f"--host {host} listens on every address: name the host names or addresses clients will "
                "use with --allowed-host NAME (repeatable), e.g. --allowed-host 192.168.1.4"
            )
    out = list(LOOPBACK_HOSTS)
    if not _is_wildcard(host):
        out.append(host.strip("[]").lower())
    return list(dict.fromkeys(out + names))


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
    help="Address to listen on. The default serves this computer only; any other needs --allow-remote.",
)
@click.option(
    "--port", default=7860, show_default=True, type=click.IntRange(0, 65535), help="Port (0 = any free port)."
)
@click.option(
    "--allow-remote",
    is_flag=True,
    help="Allow a --host beyond loopback: other machines can then upload photos and use this one's "
    "CPU/GPU (the app has no login).",
)
@click.option(
    "--allowed-host",
    "allowed_host",
    multiple=True,
    metavar="NAME",
    help="A host name or address clients use to reach the server (repeatable); requests naming any "
    "other host are refused. Loopback names and the --host address are always allowed.",
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
@click.option(
    "--max-sessions",
    default=Limits.max_sessions,
    show_default=True,
    type=click.IntRange(1, 10_000),
    help="Sessions (browser tabs) at once; past it new ones get 429 unless an idle one can go.",
)
@click.option(
    "--max-queued-jobs",
    default=Limits.max_queued_jobs,
    show_default=True,
    type=click.IntRange(1, 10_000),
    help="Jobs waiting in the queue, all sessions together.",
)
@click.option(
    "--max-jobs-per-session",
    default=Limits.max_jobs_per_session,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="Runs and GIF conversions one session may have queued or running.",
)
@click.option(
    "--max-memory-mb",
    default=Limits.max_memory_mb,
    show_default=True,
    type=click.FloatRange(10, 1_000_000),
    help="Photos, masks and uploads being decoded, held for all sessions together, in megabytes.",
)
@click.option(
    "--max-session-memory-mb",
    default=Limits.max_session_memory_mb,
    show_default=True,
    type=click.FloatRange(10, 1_000_000),
    help="The same for one session.",
)
def ui(
    host: str,
    port: int,
    allow_remote: bool,
    allowed_host: tuple[str, ...],
    model: Path | None,
    max_upload_mb: float,
    max_megapixels: float,
    max_sessions: int,
    max_queued_jobs: int,
    max_jobs_per_session: int,
    max_memory_mb: float,
    max_session_memory_mb: float,
) -> None:
    """Serve the web app: upload a photo, draw arrows and a mask, preview the motion, animate, download.

    Works offline (no CDN, no analytics). Files live in a private temporary folder that is deleted on exit.
    """
    try:
        # lazy, guarded: a part missing from this installation is reported, not an import error
        import uvicorn

        from stillmotion.ui.server import create_app
    except ModuleNotFoundError as exc:
        raise UserInputError(
            f"the web app needs the 'ui' extra (missing package {exc.name!r}): pip install 'stillmotion[ui]'"
        ) from None

    if model is not None and not model.is_dir():
        raise UserInputError(f"--model {model} is not a folder")
    hosts = allowed_hosts(host, allow_remote, allowed_host)
    _check_port_free(host, port)
    remote = not _is_loopback(host)
    if remote:
        click.secho(
            f"WARNING: listening on {host}: anyone who can reach this machine on port {port} can upload "
            "files and use its CPU/GPU. The app has no login. "
            f"Requests must name one of: {', '.join(hosts)}.",
            fg="yellow",
            err=True,
        )
    limits = Limits(
        max_sessions=max_sessions,
        max_queued_jobs=max_queued_jobs,
        max_jobs_per_session=max_jobs_per_session,
        max_memory_mb=max_memory_mb,
        max_session_memory_mb=max_session_memory_mb,
    )
    app = create_app(
        model_dir=model,
        max_upload_mb=max_upload_mb,
        max_pixels=int(max_megapixels * 1e6),
        allowed_hosts=hosts,
        limits=limits,
        show_paths=not remote,
    )
    # Compile the warp engine's kernels while the user opens the page (the first run would wait for it).
    threading.Thread(target=_warm_up, name="stillmotion-ui-warm-up", daemon=True).start()
    shown = f"[{host}]" if ":" in host else host
    if _is_wildcard(host):
        shown = f"[{hosts[-1]}]" if ":" in hosts[-1] else hosts[-1]
    click.echo(f"stillmotion ui: open http://{shown}:{port}/ in a browser (Ctrl+C stops it)", err=True)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
    finally:
        # Also when the server stops by a signal before its shutdown hook ran: no uploads left behind.
        app.state.pool.close()
        app.state.queue.stop()
        app.state.store.close()
