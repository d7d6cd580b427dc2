"""loraedit: LoRA-Edit (mask-aware LoRA video editing on Wan2.1-I2V) as a library.

The Snakemake workflow in the repository root is a thin layer over this package;
every stage is importable and testable without Snakemake.
"""

import logging

__version__ = "0.1.0"

# bitsandbytes (a pyiqa dependency; peft and pyiqa import it) warns at import, on CPUs with
# AVX512-BF16, that the optional `kernels` package for its 4-bit CPU matmul is missing. loraedit
# runs no 4-bit layers, and the line was repeated in the output of every job.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
