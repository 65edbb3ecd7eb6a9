"""The docs and `--help` stay in step: every option the docs give a command is one it really has.

Read from README.md and docs/*.md:

- invocations, ``stillmotion CMD ...`` in fenced shell blocks and in inline code spans (also behind
  ``accelerate launch ... -m stillmotion.cli CMD`` or ``$(which stillmotion) CMD``): each option
  must be one of CMD's click options, and CMD must exist;
- option tables and option lists: inline code spans that start with an option (`--frames N`,
  `-o, --output`, `--loop/--no-loop`) in table rows and list items of a section about one command
  (its heading names ``stillmotion CMD``, or its fenced blocks run only that command);
- benchmark runs, ``benchmarks/NAME.py ...``: each option must be one the script's argparse declares.

And the other way round: every long option of every command is mentioned somewhere in the docs.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

from stillmotion.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Fenced blocks in these languages hold shell commands (unlabelled blocks too); python etc. do not.
SHELL_LANGS = {"", "bash", "sh", "shell", "console", "text", "zsh"}
HELP_OPTIONS = {"-h", "--help"}

# `stillmotion CMD`, `.venv/bin/stillmotion CMD`, `-m stillmotion.cli CMD`, `$(which stillmotion) CMD`
INVOCATION = re.compile(r"(?<![\w.-])stillmotion(?:\.cli)?\)?[ \t]+([A-Za-z][\w-]*)")
BENCHMARK = re.compile(r"(?<![\w-])(benchmarks/[\w-]+\.py)\b")
# An option token: not glued to a word before it (file-name-with-dashes, gen-l-video, 5e-3).
OPTION = re.compile(r"(?<![\w\-.=\\])(--?[A-Za-z][\w-]*)")
# Where a shell command ends: a comment, a pipe, && or ;.
COMMAND_END = re.compile(r"\s#|\s\|\s|&&|;|\s>")
INLINE_CODE = re.compile(r"`([^`\n]+)`")
HEADING = re.compile(r"^(#{1,6})\s+(.*)$")
FENCE = re.compile(r"^\s*(```+|~~~+)\s*([\w+-]*)")


@dataclass(frozen=True)
class Mention:
    where: str  # file:line
    program: str  # a stillmotion command name, or benchmarks/NAME.py
    option: str
    kind: str  # "invocation", "table", "prose" or "benchmark"


def command_options(cmd: click.Command) -> set[str]:
    names = set(HELP_OPTIONS)
    for param in cmd.params:
        if isinstance(param, click.Option):
            names.update(param.opts)
            names.update(param.secondary_opts)
    return names


def cli_options() -> dict[str, set[str]]:
    """Every command's option names, from the click commands themselves."""
    out = {}
    for name, (module, attr, _) in COMMANDS.items():
        out[name] = command_options(getattr(importlib.import_module(module), attr))
    return out


def script_options(path: Path) -> set[str]:
    """The options a benchmark script's argparse parser declares (read from its source)."""
    text = path.read_text()
    names = set(HELP_OPTIONS)
    for call in re.finditer(r"add_argument\(([^)]*)", text):
        names.update(re.findall(r"""["'](--?[A-Za-z][\w-]*)["']""", call.group(1)))
    return names


def join_continuations(lines: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Shell lines ending in a backslash continue on the next one."""
    out: list[tuple[int, str]] = []
    pending: tuple[int, str] | None = None
    for number, line in lines:
        if pending is not None:
            number, line = pending[0], pending[1] + " " + line.strip()
            pending = None
        if line.rstrip().endswith("\\"):
            pending = (number, line.rstrip()[:-1])
        else:
            out.append((number, line))
    if pending is not None:
        out.append(pending)
    return out


def command_text(line: str, start: int) -> str:
    """The part of a shell line from ``start`` up to where its command ends."""
    rest = line[start:]
    end = COMMAND_END.search(rest)
    return rest[: end.start()] if end else rest


def invocations(line: str) -> list[tuple[str, str]]:
    """(command word, its argument text) for each ``stillmotion CMD ...`` on a shell line."""
    found = []
    for match in INVOCATION.finditer(line):
        found.append((match.group(1), command_text(line, match.end())))
    return found


def benchmark_runs(line: str) -> list[tuple[str, str]]:
    return [(m.group(1), command_text(line, m.end())) for m in BENCHMARK.finditer(line)]


@dataclass
class Section:
    heading: str
    lines: list[tuple[int, str]]  # prose lines (outside fences)
    shell: list[tuple[int, str]]  # shell lines of its fenced blocks, continuations joined


def sections(text: str) -> list[Section]:
    out = [Section("", [], [])]
    fence: str | None = None
    lang = ""
    block: list[tuple[int, str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        opening = FENCE.match(line)
        if fence is not None:
            if opening and opening.group(1).startswith(fence) and not opening.group(2):
                if lang in SHELL_LANGS:
                    out[-1].shell.extend(join_continuations(block))
                fence, block = None, []
            else:
                block.append((number, line))
            continue
        if opening:
            fence, lang, block = opening.group(1), opening.group(2).lower(), []
            continue
        heading = HEADING.match(line)
        if heading:
            out.append(Section(heading.group(2), [], []))
        else:
            out[-1].lines.append((number, line))
    return out


def heading_commands(section: Section, known: set[str]) -> set[str]:
    return {cmd for span in INLINE_CODE.findall(section.heading) for cmd, _ in invocations(span)} & known


def section_commands(section: Section, known: set[str]) -> set[str]:
    """The commands a section is about: those its heading names, else those its fenced blocks run."""
    named = heading_commands(section, known)
    if named:
        return named
    return {cmd for _, line in section.shell for cmd, _ in invocations(line)} & known


def mentions(text: str, name: str, known: set[str]) -> list[Mention]:
    """Every option the text gives a stillmotion command or a benchmark script."""
    found: list[Mention] = []

    def add_invocations(number: int, line: str) -> None:
        for cmd, args in invocations(line):
            where = f"{name}:{number}"
            if cmd not in known:
                found.append(Mention(where, cmd, "", "invocation"))
                continue
            found.extend(Mention(where, cmd, opt, "invocation") for opt in OPTION.findall(args))
        for script, args in benchmark_runs(line):
            where = f"{name}:{number}"
            found.extend(Mention(where, script, opt, "benchmark") for opt in OPTION.findall(args))

    for section in sections(text):
        for number, line in section.shell:
            add_invocations(number, line)
        commands = section_commands(section, known)
        named = len(heading_commands(section, known)) == 1
        for number, line in section.lines:
            spans = INLINE_CODE.findall(line)
            for span in spans:
                add_invocations(number, span)
            if len(commands) != 1:
                continue
            # Option tables and option lists of a section about one command; its prose too when the
            # heading names the command.
            if re.match(r"\s*(\||[-*+] |\d+\. )", line):
                kind = "table"
            elif named:
                kind = "prose"
            else:
                continue
            (cmd,) = commands
            for span in spans:
                span = span.replace("\\|", "|")
                # Prose names long options only (a span like `-large-patch14` is a name's tail).
                if re.match(r"--[A-Za-z]" if kind == "prose" else r"--?[A-Za-z]", span):
                    found.extend(Mention(f"{name}:{number}", cmd, opt, kind) for opt in OPTION.findall(span))
    return found


def unknown(found: list[Mention], options: dict[str, set[str]]) -> list[str]:
    """The mentions whose program or option does not exist, as readable lines."""
    bad = []
    for m in found:
        if m.kind == "benchmark":
            script = ROOT / m.program
            if not script.is_file():
                bad.append(f"{m.where}: {m.program} does not exist")
            elif m.option not in script_options(script):
                bad.append(f"{m.where}: {m.program} has no option {m.option}")
        elif m.program not in options:
            bad.append(f"{m.where}: no command `stillmotion {m.program}` (commands: {', '.join(options)})")
        elif m.kind == "prose" and any(m.option in names for names in options.values()):
            continue  # prose may point at another command's option (e.g. animate's --no-refine)
        elif m.option not in options[m.program]:
            bad.append(f"{m.where}: `stillmotion {m.program}` has no option {m.option} ({m.kind})")
    return sorted(set(bad))


@pytest.fixture(scope="module")
def options() -> dict[str, set[str]]:
    return cli_options()


@pytest.fixture(scope="module")
def doc_mentions(options) -> list[Mention]:
    found = []
    for path in DOC_FILES:
        found.extend(mentions(path.read_text(), str(path.relative_to(ROOT)), set(options)))
    return found


def test_doc_pages_exist():
    names = {p.name for p in DOC_FILES}
    for page in ("README.md", "usage.md", "warp-engine.md", "diffusion-engine.md", "long-videos.md",
                 "training.md", "evaluation.md", "web-app.md", "architecture.md", "benchmarks.md"):
        assert page in names, page


def test_docs_options_exist(doc_mentions, options):
    # The docs must actually be read: each kind of mention is found in quantity.
    kinds = {k: sum(m.kind == k for m in doc_mentions) for k in ("invocation", "table", "prose", "benchmark")}
    assert kinds["invocation"] >= 100 and kinds["table"] >= 30 and kinds["prose"] >= 20, kinds
    assert kinds["benchmark"] >= 10, kinds
    programs = {m.program for m in doc_mentions if m.kind == "invocation"}
    assert programs >= {"animate", "motion", "flow", "eval", "prepare", "train", "bench-long"}
    bad = unknown(doc_mentions, options)
    assert not bad, "options in the docs that --help does not know:\n" + "\n".join(bad)


def test_every_option_is_documented(options):
    text = "\n".join(p.read_text() for p in DOC_FILES)
    missing = [
        f"stillmotion {cmd} {opt}"
        for cmd, names in options.items()
        for opt in sorted(names - HELP_OPTIONS)
        if opt.startswith("--") and not re.search(re.escape(opt) + r"(?![\w-])", text)
    ]
    assert not missing, "options no docs page mentions (add them to the page of their topic):\n" + "\n".join(
        missing
    )


SAMPLE = """
## `stillmotion animate`: a photo to a video

```bash
stillmotion animate photo.jpg --arrows arrows.json --mask mask.png -o out.mp4   # --not-an-option
stillmotion animate photo.jpg --arrow 1,2,3,4 \\
    --frams 48 -o out.mp4 2>&1 | tee --append log.txt
accelerate launch --multi_gpu -m stillmotion.cli animat photo.jpg
.venv/bin/python benchmarks/bench_warp.py --skip-memory --repets 3
```

| option | meaning |
| --- | --- |
| `--loop/--no-loop` | symmetric splatting |
| `--sizee WxH` | resize first |

- `--strength S`: speed factor; prose like `gen-l-video` or `file-with-dashes.mp4` is no option.

The page shows `stillmotion animate waterfall.jpg --arrws drawing.json -o animation.mp4`.

Options in prose under a heading that names the command count too: `--fps F`, `--framess N`; an
option of another command is a cross-reference (`--no-refine`), and `-large-patch14` no option.

## Another section

```bash
stillmotion flow clip.mp4 -o flows.npz
stillmotion motion photo.jpg -o field.png
```

Here two commands run, so a prose `--whatever` belongs to neither, and so does a table's:

| `--no-such-option` | not checked |
"""


def test_checker_catches_misspelt_options(options):
    found = mentions(SAMPLE, "sample.md", set(options))
    bad = unknown(found, options)
    assert bad == sorted(
        [
            "sample.md:15: `stillmotion animate` has no option --sizee (table)",
            "sample.md:19: `stillmotion animate` has no option --arrws (invocation)",
            "sample.md:21: `stillmotion animate` has no option --framess (prose)",
            "sample.md:6: `stillmotion animate` has no option --frams (invocation)",
            "sample.md:8: no command `stillmotion animat` (commands: " + ", ".join(options) + ")",
            "sample.md:9: benchmarks/bench_warp.py has no option --repets",
        ]
    ), bad
    # The correct ones were read, not skipped: comments, pipes and other programs' options are not.
    good = {(m.program, m.option) for m in found}
    assert {("animate", "--arrows"), ("animate", "--mask"), ("animate", "-o"), ("animate", "--arrow"),
            ("animate", "--loop"), ("animate", "--no-loop"), ("animate", "--strength"),
            ("benchmarks/bench_warp.py", "--skip-memory")} <= good
    assert not {opt for _, opt in good} & {"--not-an-option", "--append", "--multi_gpu", "--whatever",
                                          "--no-such-option"}
    assert ("animate", "--fps") in good and ("flow", "-o") in good and ("motion", "-o") in good
