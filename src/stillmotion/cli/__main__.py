"""``python -m stillmotion.cli ...``: the ``stillmotion`` command, e.g. under
``accelerate launch --multi_gpu --num_processes 2 -m stillmotion.cli train diffusion cfg.yaml``."""

from stillmotion.cli import main

main()
