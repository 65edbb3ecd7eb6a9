"""Engines turn a still image and a motion field into frames.

- :mod:`stillmotion.engines.warp`: Eulerian animation (Holynski et al. 2021): Euler integration of
  the field, softmax splatting, symmetric splatting for seamless loops. No weights, any CPU.
- :mod:`stillmotion.engines.diffusion`: the motion-conditioned video diffusion model (SVD, or Wan 2.x
  through :mod:`stillmotion.engines.wan`).
- :mod:`stillmotion.engines.registry`: the engines by name, what each takes, and its entry point;
  :mod:`stillmotion.engines.options`: the request every engine gets and the diffusion engine's options.

Each engine yields uint8 (H, W, 3) frames one at a time, so videos of any length stream to disk.
"""
