"""The argument parser every `loraedit` subcommand builds: its prog name and an example in --help."""

from __future__ import annotations

import argparse


def command_parser(prog: str, description: str, *examples: str) -> argparse.ArgumentParser:
    """`prog` as the `loraedit` console script names it, with the examples under the options."""
    epilog = "example" + ("s" if len(examples) > 1 else "") + ":\n" + "\n".join(f"  {e}" for e in examples)
    return argparse.ArgumentParser(
        prog=prog, description=description, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
    )
