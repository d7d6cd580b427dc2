"""TeaCache for Wan (`sampling_cache`): the modulation every block reads and the fitted polynomials.

The polynomials are TeaCache's fits for the Wan2.1 checkpoints, as the official LoRA-Edit code
lists them (`custom_wan_pipe.py`, class `TeaCache`); its inference uses Wan2.1-I2V-14B-480P.
"""

from __future__ import annotations

from ...sampling_cache import TeaCacheSpec

OFFICIAL_COEFFICIENTS = "Wan2.1-I2V-14B-480P"

TEACACHE = TeaCacheSpec(
    # WanTransformer3DModel.condition_embedder returns (temb, timestep_proj (B, 6 * dim), text, image);
    # the blocks get timestep_proj as (B, 6, dim): DiffSynth's t_mod, the official code's input.
    modulation_module="condition_embedder",
    modulation_index=1,
    coefficients={
        "Wan2.1-T2V-1.3B": (-5.21862437e04, 9.23041404e03, -5.28275948e02, 1.36987616e01, -4.99875664e-02),
        "Wan2.1-T2V-14B": (-3.03318725e05, 4.90537029e04, -2.65530556e03, 5.87365115e01, -3.15583525e-01),
        "Wan2.1-I2V-14B-480P": (2.57151496e05, -3.54229917e04, 1.40286849e03, -1.35890334e01, 1.32517977e-01),
        "Wan2.1-I2V-14B-720P": (8.10705460e03, 2.13393892e03, -3.72934672e02, 1.66203073e01, -4.17769401e-02),
    },
)
