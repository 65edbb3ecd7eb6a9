"""Merge the per-process parts and write the benchmark's outputs, all at once (atomic folder).

Outputs in the output folder:

- ``table.md``: one table per protocol in the layout of the paper's Tables 1-2 (FVD, PSNR, SSIM,
  LPIPS, Tem-Cons, time) followed by the weightless metrics; skipped methods, metrics not computed
  (with the paths looked in) and notes underneath.
- ``results.csv``: one row per (video, protocol, method) with the scalar metrics.
- ``results.json``: the options, the summary rows, the per-video rows with per-frame curves, and
  the skipped / not-computed / notes lists.
- ``plots/frames_<N>.png``: per-frame metrics against frame index (mean over videos, per method).
- ``index.html`` + ``media/``: input, real and generated videos side by side (relative links).
"""

from __future__ import annotations

import csv
import dataclasses
import html
import io
import json
import math
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from stillmotion.evaluation.frechet import SmallSampleWarning, frechet_distance, gaussian_stats
from stillmotion.io.atomic import atomic_path

# (key, column title, format) in the paper's order, then ours.
PAPER_COLUMNS = [
    ("fvd", "FVD ↓", "{:.2f}"),
    ("psnr", "PSNR ↑", "{:.2f}"),
    ("ssim", "SSIM ↑", "{:.4f}"),
    ("lpips", "LPIPS ↓", "{:.4f}"),
    ("tem_cons", "Tem-Cons ↑", "{:.4f}"),
    ("seconds", "Time (s) ↓", "{:.2f}"),
]
EXTRA_COLUMNS = [
    ("epe", "EPE px ↓", "{:.3f}"),
    ("cosine", "Motion cos ↑", "{:.3f}"),
    ("warp_error", "Warp err ↓", "{:.5f}"),
    ("drift", "Still drift ↓", "{:.2f}"),
    ("join", "Join ratio ↓", "{:.2f}"),
    ("adjacent_ssim", "Adj. SSIM", "{:.4f}"),
]
SCALARS = [k for k, _, _ in PAPER_COLUMNS + EXTRA_COLUMNS if k != "fvd"] + ["adjacent_mad"]
PLOTTED = [
    ("psnr", "PSNR (dB) vs real"),
    ("ssim", "SSIM vs real"),
    ("lpips", "LPIPS vs real"),
    ("tem_cons", "Tem-Cons (adjacent CLIP cosine)"),
    ("adjacent_ssim", "adjacent-frame SSIM"),
    ("warp_error", "warp error"),
    ("drift", "still-region drift (0-255)"),
    ("epe", "motion EPE (px/frame)"),
]


def merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    rows = [r for p in parts for r in p["rows"]]
    not_computed: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    notes: list[str] = []
    for p in parts:
        not_computed.update(p["not_computed"])
        skipped.update(p["skipped"])
        notes.extend(p["notes"])
    first = parts[0] if parts else {}
    return {"rows": rows, "not_computed": not_computed, "skipped": skipped, "notes": notes,
            "clip_len": first.get("clip_len"), "flow_method": first.get("flow_method"),
            "working_size": first.get("working_size"), "steps": first.get("steps")}  # fmt: skip


def summarize(merged: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """Mean of every scalar per (protocol, method) and FVD of each method's set against the real set."""
    rows = merged["rows"]
    out, warns = [], []
    for protocol in sorted({r["protocol"] for r in rows}):
        prow = [r for r in rows if r["protocol"] == protocol]
        real_feats = [r["i3d"] for r in prow if r["method"] == "real" and r.get("i3d")]
        methods = list(dict.fromkeys(r["method"] for r in prow))
        for m in methods:
            mrows = [r for r in prow if r["method"] == m and "error" not in r]
            errors = [r for r in prow if r["method"] == m and "error" in r]
            s: dict[str, Any] = {"protocol": protocol, "method": m, "label": (mrows or errors)[0]["label"],
                                 "videos": len(mrows), "failed": len(errors)}  # fmt: skip
            for k in SCALARS:
                vals = [r[k] for r in mrows if r.get(k) is not None]
                s[k] = float(np.mean(vals)) if vals else None
            feats = [r["i3d"] for r in mrows if r.get("i3d")]
            s["fvd"] = None
            if m != "real" and feats and real_feats:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", SmallSampleWarning)
                    s["fvd"] = frechet_distance(
                        *gaussian_stats(np.array(feats), f"{m} ({protocol} frames)"),
                        *gaussian_stats(np.array(real_feats), f"real ({protocol} frames)"),
                    )
                for w in caught:
                    warns.append(str(w.message))
                    warnings.warn(str(w.message), SmallSampleWarning, stacklevel=2)
            out.append(s)
    return out, sorted(set(warns))


def _fmt(v: Any, f: str) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f.format(v)


def markdown(
    summary: list[dict[str, Any]], merged: dict[str, Any], fvd_warnings: list[str], opts_d: dict
) -> str:
    lines = ["# stillmotion eval", ""]
    lines.append(
        f"Condition: `{opts_d['condition']}`; seed {opts_d['seed']}; {merged.get('steps')} sampling steps; "
        f"working size: {merged.get('working_size')}; flow: {merged.get('flow_method')}."
    )
    lines.append("")
    cols = PAPER_COLUMNS + EXTRA_COLUMNS
    for protocol in sorted({s["protocol"] for s in summary}):
        n_videos = max((s["videos"] for s in summary if s["protocol"] == protocol), default=0)
        lines += [f"## {protocol} frames ({n_videos} video{'s' if n_videos != 1 else ''})", ""]
        lines.append("| Method | " + " | ".join(t for _, t, _ in cols) + " |")
        lines.append("|---|" + "---|" * len(cols))
        for s in (s for s in summary if s["protocol"] == protocol):
            fail = f" ({s['failed']} failed)" if s["failed"] else ""
            lines.append(
                f"| {s['label']}{fail} | " + " | ".join(_fmt(s.get(k), f) for k, _, f in cols) + " |"
            )
        lines.append("")
    lines += [
        "Frame metrics (PSNR, SSIM, LPIPS) compare generated frame t with real frame t for t >= 1 (frame 0",
        "is the input); PSNR per frame is capped at 100 dB. EPE / Motion cos: measured flow of the output",
        "against the requested motion inside the moving region. Warp err: Lai et al. (2018), squared RGB",
        "error in [0, 1] after flow warping, occlusions masked. Still drift: mean |frame - input| outside",
        "the mask, 0-255. Join ratio: frame difference at segment joins / median within segments.",
        "The real video row holds the same temporal metrics of the real clip, as a reference.",
        "",
    ]
    if fvd_warnings:
        lines += ["FVD warnings:", ""] + [f"- {w}" for w in fvd_warnings] + [""]
    if merged["not_computed"]:
        lines += ["Metrics not computed:", ""]
        for name, d in merged["not_computed"].items():
            lines.append(
                f"- {name}: {d['reason']}; looked in: " + (", ".join(f"`{p}`" for p in d["looked_in"]) or "-")
            )
        lines.append("")
    if merged["skipped"]:
        lines += ["Methods skipped:", ""] + [f"- `{k}`: {v}" for k, v in merged["skipped"].items()] + [""]
    errors = [r for r in merged["rows"] if "error" in r]
    if errors:
        lines += ["Failures:", ""] + [
            f"- `{r['method']}` on {r['video']} ({r['protocol']}): {r['error']}" for r in errors
        ]
        lines.append("")
    if merged["notes"]:
        lines += ["Notes:", ""] + [f"- {n}" for n in sorted(set(merged["notes"]))] + [""]
    return "\n".join(lines)


def csv_text(rows: list[dict[str, Any]]) -> str:
    keys = [
        "video",
        "protocol",
        "frames",
        "clipped",
        "method",
        "label",
        "width",
        "height",
        "condition",
        *SCALARS,
        "error",
    ]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in keys})
    return buf.getvalue()


def plot(rows: list[dict[str, Any]], protocol: int, path: Path) -> bool:
    # lazy: matplotlib is an optional extra, imported only on this path
    import matplotlib

    matplotlib.use("Agg")
    # lazy: matplotlib is an optional extra, imported only on this path
    import matplotlib.pyplot as plt

    prow = [r for r in rows if r["protocol"] == protocol and r.get("curves")]

    def has_values(k: str) -> bool:
        return any(v is not None for r in prow for v in r["curves"].get(k) or [])

    keys = [(k, t) for k, t in PLOTTED if has_values(k)]
    if not keys:
        return False
    methods = list(dict.fromkeys(r["method"] for r in prow))
    labels = {r["method"]: r["label"] for r in prow}
    # one colour per method in every panel; the real video in black
    palette = plt.get_cmap("tab10").colors
    colours = {
        m: "black" if m == "real" else palette[i % 10]
        for i, m in enumerate(x for x in methods if x != "real")
    }
    colours["real"] = "black"
    cols = 2
    n_rows = (len(keys) + 1) // cols
    fig, axes = plt.subplots(n_rows, cols, figsize=(11, 2.8 * n_rows + 0.8), squeeze=False)
    for ax, (k, title) in zip(axes.flat, keys, strict=False):
        for m in methods:
            curves = [r["curves"][k] for r in prow if r["method"] == m and r["curves"].get(k)]
            if not curves:
                continue
            n = max(len(c) for c in curves)
            arr = np.full((len(curves), n), np.nan)
            for i, c in enumerate(curves):
                arr[i, : len(c)] = [np.nan if v is None else v for v in c]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns (frame 0)
                mean = np.nanmean(arr, 0)
            # adjacent-pair metrics describe the step t -> t+1: plot them at t+1
            x = np.arange(n) + (1 if k in ("tem_cons", "adjacent_ssim", "warp_error", "epe") else 0)
            ax.plot(x, mean, color=colours[m], lw=1.2, ls="--" if m == "real" else "-")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("frame index", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    handles = [plt.Line2D([], [], color=colours[m], ls="--" if m == "real" else "-") for m in methods]
    fig.legend(
        handles, [labels[m] for m in methods], loc="lower center", ncol=min(4, len(methods)), fontsize=8
    )
    fig.suptitle(f"per-frame metrics, {protocol}-frame protocol (mean over the videos reaching each frame)",
                 fontsize=10)  # fmt: skip
    fig.tight_layout(rect=(0, 0.6 / (2.8 * n_rows + 0.8) + 0.02, 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def html_page(merged: dict[str, Any], summary: list[dict[str, Any]], table_md: str, plots: list[str]) -> str:
    e = html.escape
    rows = merged["rows"]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>stillmotion eval</title>",
        "<style>body{font-family:sans-serif;margin:1.5em}figure{display:inline-block;margin:4px;vertical-align:top}"
        "figcaption{font-size:12px;max-width:260px}"
        "video,img.in{width:240px;height:auto;display:block;image-rendering:pixelated}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:2px 6px}"
        "pre{font-size:12px;white-space:pre-wrap}</style></head><body>",
        "<h1>stillmotion eval</h1>",
    ]
    parts.append(_summary_html(summary))
    for p in plots:
        parts.append(f"<p><img src='{e(p)}' alt='per-frame metrics' style='max-width:100%'></p>")
    for protocol in sorted({r["protocol"] for r in rows}):
        parts.append(f"<h2>{protocol}-frame protocol</h2>")
        for vid in dict.fromkeys(r["video"] for r in rows if r["protocol"] == protocol):
            vrows = [r for r in rows if r["protocol"] == protocol and r["video"] == vid]
            parts.append(f"<h3>{e(vid)}</h3><div>")
            parts.append(f"<figure><img class='in' src='media/{e(vid)}/{protocol}/input.png' alt='input'>"
                         "<figcaption>input (frame 0)</figcaption></figure>")  # fmt: skip
            for r in vrows:
                if not r.get("media"):
                    continue
                cap = e(r["label"])
                if r["method"] != "real" and r.get("psnr") is not None:
                    cap += f"<br>PSNR {r['psnr']:.2f}, SSIM {r['ssim']:.3f}"
                parts.append(f"<figure><video src='media/{e(r['media'])}' autoplay loop muted playsinline "
                             f"controls></video><figcaption>{cap}</figcaption></figure>")  # fmt: skip
            parts.append("</div>")
    parts.append(f"<h2>Table (markdown)</h2><pre>{e(table_md)}</pre></body></html>")
    return "\n".join(parts)


def _summary_html(summary: list[dict[str, Any]]) -> str:
    cols = PAPER_COLUMNS + EXTRA_COLUMNS
    out = []
    for protocol in sorted({s["protocol"] for s in summary}):
        out.append(f"<h2>{protocol} frames</h2><table><tr><th>Method</th>"
                   + "".join(f"<th>{html.escape(t)}</th>" for _, t, _ in cols) + "</tr>")  # fmt: skip
        for s in (s for s in summary if s["protocol"] == protocol):
            out.append(f"<tr><td>{html.escape(s['label'])}</td>"
                       + "".join(f"<td>{_fmt(s.get(k), f)}</td>" for k, _, f in cols) + "</tr>")  # fmt: skip
        out.append("</table>")
    return "\n".join(out)


def options_dict(opts: Any) -> dict[str, Any]:
    """The run's options (an ``EvalOptions``) as JSON-ready values, as the report records them."""
    d = dataclasses.asdict(opts)
    d["videos"] = [str(v) for v in opts.videos]
    d["out"] = str(opts.out)
    return d


def write_reports(opts, parts: list[dict[str, Any]], media: Path, *, world_size: int = 1) -> Path:
    """Merge ``parts`` and write every output into ``opts.out`` atomically (media moved from ``media``)."""
    merged = merge(parts)
    summary, fvd_warnings = summarize(merged)
    opts_d = options_dict(opts)
    table = markdown(summary, merged, fvd_warnings, opts_d)
    overwrite = getattr(opts, "overwrite", False)
    with atomic_path(opts.out, directory=True, replace_foreign=overwrite, marker=True) as tmp:
        if media.is_dir():
            shutil.move(str(media), str(tmp / "media"))
        (tmp / "plots").mkdir()
        plots = []
        for protocol in sorted({r["protocol"] for r in merged["rows"]}):
            name = f"plots/frames_{protocol}.png"
            if plot(merged["rows"], protocol, tmp / name):
                plots.append(name)
        (tmp / "table.md").write_text(table)
        (tmp / "results.csv").write_text(csv_text(merged["rows"]))
        doc = {"options": opts_d, "processes": world_size, "flow_method": merged["flow_method"],
               "clip_len": merged["clip_len"], "working_size": merged["working_size"], "summary": summary,
               "fvd_warnings": fvd_warnings,
               "not_computed": merged["not_computed"], "skipped": merged["skipped"], "notes": merged["notes"],
               "plots": plots, "videos": merged["rows"]}  # fmt: skip
        (tmp / "results.json").write_text(json.dumps(doc, indent=1))
        (tmp / "index.html").write_text(html_page(merged, summary, table, plots))
    return opts.out
