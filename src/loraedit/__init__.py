"""loraedit: LoRA-Edit (mask-aware LoRA video editing on Wan2.1-I2V) as a library.

The Snakemake workflow in the repository root is a thin layer over this package;
every stage is importable and testable without Snakemake.
"""

__version__ = "0.1.0"
