"""The `loraedit` console script: one entry point, a subcommand per tool.

Each subcommand's module is imported only when it runs (the toy tools load torch and diffusers;
`loraedit --help` stays instant) and parses its own arguments, with an example in its --help.
"""

from __future__ import annotations

import importlib
import sys

# (words, module whose main(argv) runs it, one-line summary)
COMMANDS: list[tuple[tuple[str, ...], str, str]] = [
    (("import",), "loraedit.sheet.importers", "write a sample sheet from a benchmark folder (anyv2v, i2vedit)"),
    (
        ("check",),
        "loraedit.preflight",
        "check a run before any GPU time: sheet, models, disk, ffmpeg, GPUs; print the plan",
    ),
    (("toy", "data"), "loraedit.toy.data", "write a toy-world benchmark dataset with true edits"),
    (("toy", "demo-data"), "loraedit.toy.demo", "write the procedural shapes dataset (plumbing demo)"),
    (("toy", "pretrain"), "loraedit.toy.pretrain", "pretrain the toy Wan2.1-I2V on the toy world (resumable)"),
    (("toy", "eval"), "loraedit.toy.eval", "quality bars of a pretrained toy model"),
    (("toy", "prior"), "loraedit.toy.prior", "train the toy mask prior on toy-world clips (resumable)"),
    (("toy", "curve"), "loraedit.toy.curve", "toy benchmark quality against per-clip steps, cold vs prior start"),
    (("toy", "benchmark"), "loraedit.toy.benchmark", "score a toy benchmark run, or run the reduced CI benchmark"),
    (("gpu-slot",), "loraedit.gpu_slots", "run a command on its own GPU slot(s): loraedit gpu-slot [-n N] -- cmd"),
]


def usage() -> str:
    width = max(len(" ".join(words)) for words, _, _ in COMMANDS)
    lines = [
        "usage: loraedit COMMAND [options]   (loraedit COMMAND --help: its options and an example)",
        "",
        "commands:",
    ]
    lines += [f"  {' '.join(words):<{width}}  {summary}" for words, _, summary in COMMANDS]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    for words, module, _ in COMMANDS:
        if tuple(argv[: len(words)]) == words:
            return int(importlib.import_module(module).main(argv[len(words) :]) or 0)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    print(f"loraedit: unknown command {' '.join(argv[:2])!r}\n\n{usage()}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
