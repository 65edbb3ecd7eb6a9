"""Evaluation: the paper's metrics (Tables 1-2) and a runner that scores methods against real videos.

Modules, one per kind of measurement:

- ``frame_metrics``: PSNR, SSIM (Gaussian window, Wang et al. 2004), adjacent-frame consistency.
- ``motion_metrics``: motion fidelity (end-point error, cosine), warp error, still-region drift,
  join smoothness. These need no weights.
- ``frechet``: Frechet distance between Gaussians fitted to feature sets.
- ``i3d``: the I3D Kinetics-400 network for FVD (TorchScript file or a plain-PyTorch checkpoint).
- ``lpips``: LPIPS with the AlexNet backbone and the learned linear heads.
- ``clip_consistency``: Tem-Cons, the mean cosine of CLIP image embeddings of adjacent frames.
- ``weights``: where weight files are looked for and how a missing one is reported.
- ``conditions``, ``methods``, ``runner``, ``report``: the ``stillmotion eval`` benchmark.
"""
