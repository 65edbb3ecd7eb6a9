"""``stillmotion train diffusion|lora|refiner CONFIG [key=value ...] [--resume]``.

Contract with the trainers (the refiner's included): each of ``stillmotion.training.diffusion``,
``stillmotion.training.lora`` and ``stillmotion.training.refiner`` exposes

    def main(config: str | None, overrides: list[str], resume: bool) -> Path

``config`` is the YAML/TOML file (None: defaults only), ``overrides`` are the raw ``key=value``
strings (parse them with ``stillmotion.training.config.load_config(Cfg, config, overrides)``), and
``resume`` continues from the newest checkpoint in the config's ``output_dir``. ``main`` returns the
output directory, shows a progress bar on stderr, and raises ``UserInputError`` for bad input.

Multi-GPU: ``accelerate launch -m stillmotion.cli train diffusion cfg.yaml`` (or
``accelerate launch $(which stillmotion) train ...``); the trainers build their own Accelerator.
"""

from __future__ import annotations

import importlib

import click

from stillmotion.errors import UserInputError

TRAINERS = {
    "diffusion": "stillmotion.training.diffusion",
    "lora": "stillmotion.training.lora",
    "refiner": "stillmotion.training.refiner",
}


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("what", type=click.Choice(sorted(TRAINERS)))
@click.argument("config", required=False)
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
@click.option("--resume", is_flag=True, help="Continue from the newest checkpoint in output_dir.")
def train(what: str, config: str | None, overrides: tuple[str, ...], resume: bool) -> None:
    """Train WHAT (diffusion, lora or refiner) from CONFIG (YAML/TOML), with key=value overrides.

    \b
    Examples:
      stillmotion train diffusion configs/diffusion_tiny.yaml max_steps=200 output_dir=runs/d1
      stillmotion train diffusion configs/diffusion_tiny.yaml output_dir=runs/d1 --resume
      accelerate launch -m stillmotion.cli train lora configs/lora_svd.yaml
    """
    # A config written as key=value (no file) lands in CONFIG; treat it as an override.
    extra = list(overrides)
    suffixes = (".yaml", ".yml", ".toml", ".json")
    if config is not None and "=" in config and not config.lower().endswith(suffixes):
        extra.insert(0, config)
        config = None
    try:
        module = importlib.import_module(TRAINERS[what])
    except ModuleNotFoundError as exc:
        if exc.name == TRAINERS[what]:
            raise UserInputError(f"the {what} trainer is not available in this installation") from None
        raise
    out = module.main(config, extra, resume)
    click.echo(f"trained {what}: {out}")
