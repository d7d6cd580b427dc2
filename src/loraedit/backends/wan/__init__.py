"""The Wan family (Wan2.1-I2V, Wan2.2-I2V-A14B): this package's namespace is the `base.Family` interface.

loader: real checkpoints and the tiny build; conditioning: the 36-channel input (Sec. 3.3.1);
lora_keys: the original Wan key names of a LoRA; flops: the transformer's FLOP count (benchmarks);
teacache: TeaCache's modulation and fitted polynomials (`infer.cache: teacache`; an optional attribute).
"""

from .conditioning import (
    LORA_TARGET_REGEX,
    build_condition,
    decode_latents,
    encode_text,
    encode_video,
    initial_latents,
    keep_channel,
    predict,
)
from .loader import PIPELINE_CLS, assemble_pipeline, load_encoders, load_transformers
from .lora_keys import extra_lora_files
from .teacache import TEACACHE

NAME = "wan"
