"""The HunyuanVideo-I2V family (paper Sec. 4.4, the 33-channel `latent_concat` release): this
package's namespace is the `base.Family` interface.

loader: real checkpoints (the `token_replace` release refused) and the tiny build; conditioning:
the 33-channel input (16 latent + 16 image latent + 1 mask) and the Llava text encoding.
"""

from .conditioning import (
    build_condition,
    decode_latents,
    encode_text,
    encode_video,
    extra_lora_files,
    initial_latents,
    keep_channel,
    predict,
)
from .loader import LORA_TARGET_REGEX, PIPELINE_CLS, assemble_pipeline, load_encoders, load_transformers

NAME = "hunyuan"
