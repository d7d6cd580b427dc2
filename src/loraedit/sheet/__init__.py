"""The sample sheet: loading and checking it (`samples`), its SAM columns (`mask_columns`), and the
importers that write one from a benchmark's folder layout (`importers`, with `mask_phrases`)."""
