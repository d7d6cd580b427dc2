"""Test job body: record where and when it ran (SLURM job id, GPU assignment), then sleep a little.

Usage: python record_job.py OUT.json SECONDS [INPUT ...]
"""

import json
import os
import socket
import sys
import time

from loraedit.atomic import write_json

out, hold, inputs = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
start = time.time()
time.sleep(hold)
write_json(
    out,
    {
        "start": start,
        "end": time.time(),
        "host": socket.gethostname(),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "slurm_job_gpus": os.environ.get("SLURM_JOB_GPUS"),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "slurm_mem_per_node": os.environ.get("SLURM_MEM_PER_NODE"),
        "inputs": [json.load(open(p)) for p in inputs],
    },
)
