"""The ``stillmotion`` command.

Each subcommand lives in its own module and is imported only when it runs, so ``stillmotion
--help`` and light commands stay fast (the diffusion stack takes seconds to import). Command
modules must therefore import heavy libraries (torch, diffusers) inside the command function.
"""

from __future__ import annotations

import importlib
import importlib.util
import signal
import sys
import threading
import warnings

import click
from tqdm import tqdm

from stillmotion.errors import UserInputError

# name -> (module, attribute, one-line help shown by `stillmotion --help` without importing)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "motion": (
        "stillmotion.cli.motion_cmd",
        "motion",
        "Arrows (+ mask) on an image -> dense motion field picture / .flo.",
    ),
    "flow": (
        "stillmotion.cli.flow_cmd",
        "flow",
        "Optical flow of two frames (.flo) or of a video (.npz + strength).",
    ),
    "animate": (
        "stillmotion.cli.animate_cmd",
        "animate",
        "Animate a still image (warp or diffusion engine) into a video.",
    ),
    "bench-long": (
        "stillmotion.cli.bench_long_cmd",
        "bench_long",
        "Compare long-video samplers on one input.",
    ),
    "prepare": (
        "stillmotion.cli.prepare_cmd",
        "prepare",
        "Cut videos into training clips with flow and strength.",
    ),
    "train": (
        "stillmotion.cli.train_cmd",
        "train",
        "Train the diffusion model, static-camera LoRA or refiner T.",
    ),
    "eval": (
        "stillmotion.cli.eval_cmd",
        "eval_",
        "Score methods against real videos with the paper's metrics.",
    ),
    "ui": ("stillmotion.cli.ui_cmd", "ui", "Serve the local web app for drawing arrows and animating."),
    "demo": (
        "stillmotion.cli.demo_cmd",
        "demo",
        "Run the bundled example end to end and write results under out/.",
    ),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name, (mod, _, _) in COMMANDS.items() if importlib.util.find_spec(mod) is not None]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[name]
        try:
            return getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError as exc:
            if exc.name == module:
                return None
            raise

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(
    cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.version_option(package_name="stillmotion")
def cli() -> None:
    """stillmotion: turn a still photo into a long, controllable animation."""


class Terminated(BaseException):
    """SIGTERM, raised like KeyboardInterrupt so that every ``finally`` / atomic output cleans up."""


def _on_sigterm(signum, frame) -> None:
    raise Terminated()


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    # One readable line per warning, not Python's "file:line: Category: ..." with a source line;
    # through tqdm, so that it lands on a line of its own above a running progress bar.

    tqdm.write(f"Warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user mistakes become one clear line and exit code 2, not a traceback."""
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    else:
        previous = None
    shown = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        _run(argv)
    finally:
        warnings.showwarning = shown
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _run(argv: list[str] | None) -> None:
    try:
        cli.main(args=argv, prog_name="stillmotion", standalone_mode=False)
    except Terminated:
        click.echo("Terminated.", err=True)
        sys.exit(143)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except UserInputError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        sys.exit(130)
    sys.exit(0)
