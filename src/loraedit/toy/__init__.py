"""The toy world: a procedural world small enough to pretrain a Wan2.1-I2V of the real classes on
two CPU cores, with the true result of every edit, so the paper's ablations are real numbers.

world: scenes and their renderer (the truth of an edit); data: benchmark / demo sheets and the
dataset writers; demo: the shapes dataset (plumbing); vae, i2v, loop, pretrain: the pretrained toy
model; eval: its quality bars; benchmark: the toy benchmark's scores.
"""
