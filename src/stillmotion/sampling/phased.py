"""Phased inference with shared noise reschedule (the paper, section 3.4), with smooth joins.

Cost (frames through the denoiser; times 2 with classifier-free guidance for UNet frame-evaluations)::

    L1 * T + sum_{k >= 2} L_k * (T - M),      M = ceil(gamma * T)
    denoiser calls: T + (K - 1) * (T - M)

where L1 = min(L, N) is the first segment's length, L_k <= L the later segments' lengths (their anchor
frames included) and K = 1 + ceil((N - L) / (L - overlap)) for N > L. With N = 125, L = 25, T = 25,
gamma = 0.8, overlap = 1 the segments are [0,25) [24,49) [48,73) [72,97) [96,121) [120,125), so
625 + (4 * 25 + 5) * 5 = 1150 frame passes against Direct's (5 * 25 + 5) * 25 = 3250 on the same cut
(2.83x fewer) and FreeNoise's 125 * 25 = 3125 (2.72x); with overlap 4 the segments start every 21
frames: 625 + (4 * 25 + 20) * 5 = 1225.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch

from stillmotion.sampling.base import Denoiser, solver_of
from stillmotion.sampling.frame_noise import FrameNoise, NoiseSource, as_noise_source
from stillmotion.sampling.own_motion import Transport
from stillmotion.sampling.parameterization import parameterization_of
from stillmotion.sampling.segments import LatentChunk, phased_segments, reuse_steps

StepCallback = Callable[[int, torch.Tensor, torch.Tensor], None]


class _ShuffledNoise:
    """Eq. 11 and 12: the later segments' noise sequences n~_k = n + omega * eps_k, shuffled across segments.

    The (K - 1) sequences of L frames are concatenated and permuted frame-wise; segment k takes entries
    ``perm[(k - 2) * L : (k - 1) * L]``. An entry (k', j) stands for ``n[j] + omega * eps_{k'}[j]``, so it
    can be computed when needed: eps comes from a seeded per-entry noise source, and only one segment's
    sequence is ever in memory.
    """

    def __init__(
        self, shared_n: torch.Tensor, omega: float, num_later: int, generator: torch.Generator,
        shuffle: bool = True,
    ) -> None:
        self.shared_n = shared_n  # [B, L, C, h, w], segment 1's predicted noise at the branch step
        self.omega = omega
        self.length = shared_n.shape[1]
        total = num_later * self.length
        self.perm = torch.randperm(total, generator=generator) if shuffle else torch.arange(total)
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        self.eps = FrameNoise(
            total,
            tuple(shared_n.shape[2:]),
            seed=seed,
            batch=shared_n.shape[0],
            device=shared_n.device,
            dtype=shared_n.dtype,
        )

    def segment(self, k: int, length: int) -> torch.Tensor:
        """n~ for the first ``length`` frames of later segment ``k`` (1-based over the later segments)."""
        entries = self.perm[(k - 1) * self.length : (k - 1) * self.length + length].tolist()
        idx = torch.tensor([e % self.length for e in entries], device=self.shared_n.device)
        n = self.shared_n.index_select(1, idx)
        if self.omega:
            n = n + self.omega * torch.stack([self.eps.frame(e) for e in entries], dim=1)
        return n


@torch.no_grad()
def sample_phased(
    denoiser: Denoiser,
    noise: NoiseSource | torch.Tensor,
    sigmas: torch.Tensor,
    *,
    segment_len: int,
    gamma: float = 0.8,
    branch: int | None = None,
    omega: float = 0.2,
    overlap: int = 1,
    carry: str = "motion",
    follows_reference: bool | None = None,
    shuffle: bool = True,
    generator: torch.Generator | None = None,
    callback: StepCallback | None = None,
    **cond: Any,
) -> Iterator[LatentChunk]:
    """Phased inference over ``noise.num_frames`` frames; yields finished latents segment by segment.

    Segment 1 (frames ``[0, L)``) is denoised through all T steps. Its state after M steps fixes contours
    and appearance (paper eq. 9; M = ceil(gamma * T), or ``branch`` given by the caller, e.g. the first
    step at or below a noise level: ``LongOptions.branch``); every later segment starts there and redoes only
    the remaining T - M steps, which form the motion detail. At the branch step, segment 1's predicted
    noise n = (x_M - x0_M) / sigma_M is rescheduled per segment as n~ = n + omega * eps (eq. 11), the
    sequences of all later segments are shuffled frame-wise across segments (eq. 12, keeps long-range
    noise correlation while each segment moves differently), and segment k starts from
    x_M^k = x0_M + sigma_M * n~_k. The rescheduling happens once, at the branch; the redone steps follow
    the deterministic ODE. With gamma = 1 (M = T) later segments cost no denoiser call: they are copies of
    segment 1's result (the paper's "replication of multiple short videos").

    Later segments continue the motion (designed here, not in the paper), ``carry``:

    - ``"reference"``: when the denoiser has a ``reference(start, stop)`` hook (``MotionDenoiser``: the
      input image carried along the motion field, as latents r; for a condition-residual model exactly the
      latents it denoises relative to), segment k starts from ``r_k + (x0_M - r_1) + sigma_M * n~_k``:
      segment 1's contours and appearance, placed where the motion field has taken the content by
      segment k's frames. Right for a model whose own motion follows r; without a reference, the copy.
    - ``"appearance"``: as ``"reference"``, but only the temporal mean d of segment 1's deviation from
      its reference (its appearance) is carried, not its per-frame changes: position j of segment k
      starts from ``r_k + R_j((1 - j / (L - 1)) * (p_k - r_k[0]) + (j / (L - 1)) * d) + sigma_M * n~_k``,
      p_k the previous segment's finished latent at segment k's first frame (with overlap 0 its last
      frame, against the reference there, and j taken one frame on) and R_j the reference's own
      transport inside segment k, from its first frame to its frame j (``sampling.own_motion``).
      ``"reference"`` replays segment 1's frame-to-frame deviation from the reference, the model's own
      jitter included, at the same positions of every segment; here a later segment moves as its
      reference does from where the previous one ended, its deviation moved along with it (held in
      place, a deviation is a texture standing still, which slows the measured motion).
    - ``"own"``: the model's own motion, for a model that gets no motion input (stock SVD, untrained
      motion modules) or has no reference: segment k starts from ``x0_M[j] + (1 - j / (L - 1)) *
      K_j(p_k - x0_M[0]) + sigma_M * n~_k`` at position j, where p_k is the previous segment's finished
      latent at segment k's first frame (with overlap 0 its last frame, and j taken one frame on) and
      K_j is segment 1's own transport from its frame 0 to its frame j (``sampling.own_motion``: local
      3x3 filters fitted to x0_M by least squares). At the join the segment starts where the previous
      one ended; the offset, what differs between the previous end and segment 1's first frame, is moved
      as segment 1 moved its content (an offset added in place would be a texture standing still) and
      fades out by the segment's end, so the segment ends on segment 1's last frame. The content neither
      restarts at segment 1's picture nor jumps to where a field the model never followed would put it,
      and no net drift accumulates from segment to segment (replaying the changes from p_k alone would
      add segment 1's whole change again at every segment).
    - ``"motion"`` (the default): ``"reference"`` when ``follows_reference`` (the caller knows whether
      the model is steered by the reference: warped conditioning, warp guidance, trained motion
      modules; None: whether a reference exists), else ``"own"``.
    - ``"copy"``: the paper's literal ``x0_M + sigma_M * n~_k``: every segment restarts at segment 1's
      picture (content jumps back at every join).

    Joins (not specified by the paper; designed here): consecutive segments overlap by ``overlap`` = o
    frames, and the overlap is a soft anchor that dissolves from the previous segment into the new one.
    Position j < o of segment k holds, after every redone step, ``w_j * (prev_j + sigma * n~_j) +
    (1 - w_j) * x_j`` with ``w_j = 1 - j / o``: position 0 is the previous segment's final latent,
    re-noised to the current level with the segment's own rescheduled noise (a hard anchor,
    inpainting-style), and the later positions lean less and less on the previous segment. The temporal
    layers therefore see where the previous segment ended while they form the new frames' motion detail,
    the anchors keep the frame index and the model's clip length exactly as in training, and at sigma 0
    the overlap is a linear cross-fade of the two segments' latents, so a seam is spread over o frame
    steps instead of one. The previous segment holds back its last o - 1 frames until they are blended;
    no frame is duplicated: segment k contributes frames ``[a_k + 1, b_k)`` (less its own hold-back).
    ``overlap = 1`` (the default) is a single hard anchor; ``overlap = 0`` plain concatenation (ablation).

    ``shuffle=False`` skips eq. 12's permutation (segment k takes sequence k; for tests and ablations).

    Steps are the denoiser's solver's (``sampling.base.solver_of``: Euler, or UniPC for a Wan model whose
    scheduler is UniPC). Segment 1 is one trajectory over all T steps. A later segment is a new trajectory
    from the branch step: a multistep solver's history restarts there (its first redone step is first
    order), because segment 1's earlier estimates are of other frames and would be wrong derivatives for
    this segment's state. The overlap's anchor is applied to every state the solver makes (a corrected state
    too), so the hard anchor holds exactly with a predictor-corrector solver.

    The formulas above are written in the EDM form (``x = x0 + sigma * n``); the sampler re-noises, reads the
    noise out and starts through the denoiser's parameterisation (``sampling.parameterization``), so a
    flow-matching backbone gets ``(1 - t) x0 + t n`` in the same places.

    ``noise`` is the video's standard normal noise (only segment 1's frames are read); ``generator``
    draws the shuffle and omega's eps. ``callback(i, x, x0)`` runs after every denoiser call.
    """
    noise = as_noise_source(noise)
    param = parameterization_of(denoiser)  # re-noising and noise read-out: the backbone's formulas
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    steps = len(sigmas) - 1
    m = reuse_steps(steps, gamma) if branch is None else int(branch)
    if not 0 <= m <= steps:
        raise ValueError(f"branch step {m} outside 0..{steps}")
    segments = phased_segments(noise.num_frames, segment_len, overlap)

    a, b = segments[0]
    x = param.prior(noise.frames(a, b), sigmas[0])
    solver = solver_of(denoiser)
    path = solver.start(sigmas, param)
    shared_x0 = shared_n = None
    for i in range(steps):
        x0 = denoiser(x, sigmas[i], frames=slice(a, b), **cond)
        if i == m:  # the state the estimate was made at (before a corrector moves it) and its noise
            shared_x0, shared_n = x0, param.noise_of(x, x0, sigmas[i])
        x = path.step(i, x, x0)
        if callback is not None:
            callback(i, x, x0)
    if shared_x0 is None:  # M = T: nothing left to redo; sigma_T = 0 makes the noise term vanish
        shared_x0, shared_n = x, torch.zeros_like(x)
    hold = max(overlap - 1, 0)  # frames of a segment's end that the next segment's overlap blends
    if len(segments) == 1:
        yield LatentChunk(0, x, 0)
        return
    yield LatentChunk(0, x[:, : x.shape[1] - hold], 0)

    mode, ref1 = _carry_mode(denoiser, carry, follows_reference, segments[0])
    if mode in ("reference", "appearance"):
        # segment 1's state relative to its reference: placed on segment k's reference below
        shared_x0 = shared_x0 - ref1
    if mode in ("appearance", "own"):
        # per position, the share left of where the previous segment ended: all at the segment's first
        # frame, none at its last (overlap 0: positions taken one frame on)
        n = shared_x0.shape[1]
        t = (torch.arange(n, device=shared_x0.device) + (0 if overlap else 1)).clamp(max=n - 1)
        fade = (1 - t.to(shared_x0.dtype) / max(n - 1, 1)).view(1, n, 1, 1, 1)
    if mode == "appearance":
        # only the deviation's mean over the frames; fading from the previous end's deviation to it
        shared_x0 = shared_x0.mean(dim=1, keepdim=True).expand_as(shared_x0)
    elif mode == "own":
        # segment 1's frames, offset by where the previous segment ended (p_k - x0_M[0]) at the segment's
        # first frame and by nothing at its last: its changes go on from p_k, less their net drift
        first_x0 = shared_x0[:, :1]
        shared_x0 = shared_x0[:, t]
        # how segment 1 moved its own content from its frame 0 to each position: the offset moves so too
        transport = Transport.fit(first_x0[:, 0], shared_x0)
    shuffled = _ShuffledNoise(shared_n, omega, len(segments) - 1, gen, shuffle)
    weights = torch.tensor([1 - j / overlap for j in range(overlap)], device=x.device, dtype=x.dtype)
    weights = weights.view(1, overlap, 1, 1, 1)
    prev = x[:, x.shape[1] - overlap :]
    base = x[:, x.shape[1] - max(overlap, 1) : x.shape[1] - max(overlap, 1) + 1]  # p_k for carry "own"
    del x
    for k, (a, b) in enumerate(segments[1:], start=1):
        n_tilde = shuffled.segment(k, b - a)
        if mode == "appearance":
            ref_k = reference_of(denoiser)(a, b)
            # with overlap 0 the previous segment's last frame is the frame before a
            at = ref_k[:, :1] if overlap else reference_of(denoiser)(a - 1, a)
            # from where the previous segment ended to segment 1's mean deviation, moved along as the
            # reference moves within this segment: a deviation held in place would be a texture standing
            # still over the moving content
            f = fade[:, : b - a]
            deviation = Transport.fit(at[:, 0], ref_k).apply(f * (base - at) + (1 - f) * shared_x0[:, :1])
            x = param.noised(deviation, n_tilde, sigmas[m]) + param.signal(ref_k, sigmas[m])
        else:
            x = param.noised(shared_x0[:, : b - a], n_tilde, sigmas[m])
        if mode == "reference":
            x = x + param.signal(reference_of(denoiser)(a, b), sigmas[m])
        elif mode == "own":
            x = x + param.signal(fade[:, : b - a] * transport.apply(base - first_x0, b - a), sigmas[m])

        def anchored(x: torch.Tensor, j: int, prev=prev, n_tilde=n_tilde) -> torch.Tensor:
            anchor = param.noised(prev, n_tilde[:, :overlap], sigmas[j])
            x[:, :overlap] = weights * anchor + (1 - weights) * x[:, :overlap]
            return x

        x = anchored(x, m)
        path = solver.start(sigmas, param)  # a new trajectory: a multistep history restarts at the branch
        for i in range(m, steps):
            x0 = denoiser(x, sigmas[i], frames=slice(a, b), **cond)
            x = path.step(i, x, x0, project=anchored)  # every state the solver makes keeps the anchor
            if callback is not None:
                callback(i, x, x0)
        first = min(overlap, 1)  # position 0 is the previous segment's frame, already written
        last = x.shape[1] if b == noise.num_frames else x.shape[1] - hold
        yield LatentChunk(a + first, x[:, first:last], max(overlap, 1))
        prev = x[:, x.shape[1] - overlap :]
        base = x[:, x.shape[1] - max(overlap, 1) : x.shape[1] - max(overlap, 1) + 1]


def reference_of(denoiser: Denoiser) -> Callable[[int, int], torch.Tensor | None] | None:
    """The denoiser's optional ``reference(start, stop)`` hook (the motion reference's latents), or None."""
    return getattr(denoiser, "reference", None)


def _carry_mode(
    denoiser: Denoiser, carry: str, follows_reference: bool | None, first: tuple[int, int]
) -> tuple[str, torch.Tensor | None]:
    """``carry`` as it runs ("reference", "appearance", "own" or "copy") and segment 1's reference latents
    (reference and appearance only)."""
    if carry not in ("motion", "reference", "appearance", "own", "copy"):
        raise ValueError(f"carry must be motion, reference, appearance, own or copy, got {carry!r}")
    if carry in ("own", "copy"):
        return carry, None
    hook = reference_of(denoiser)
    ref1 = hook(*first) if hook is not None else None
    if carry in ("reference", "appearance"):
        return (carry, ref1) if ref1 is not None else ("copy", None)
    follows = ref1 is not None if follows_reference is None else follows_reference
    return ("reference", ref1) if follows and ref1 is not None else ("own", None)
