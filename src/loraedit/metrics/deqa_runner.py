"""DeQA-Score on a folder of frames; prints ``{"scores": [...]}`` (1..5 per frame) on stdout.

Runs in DeQA's OWN environment (its remote code pins transformers 4.36), so it
imports nothing from loraedit. ``loraedit.metrics.deqa`` calls it per clip:

    <deqa python> deqa_runner.py --model zhiyuanyou/DeQA-Score-Mix3 FRAMES_DIR

The model (mPLUG-Owl2 7B) scores an image as softmax over the logits of
"excellent, good, fair, poor, bad" dotted with 5..1 (You et al. 2025).
"""

import argparse
import json
import os
import sys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="zhiyuanyou/DeQA-Score-Mix3", help="hub id or local folder")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("frames", help="folder of frame images")
    args = ap.parse_args(argv)

    import torch
    from PIL import Image
    from transformers import AutoModelForCausalLM

    files = sorted(f for f in os.listdir(args.frames) if f.lower().endswith((".png", ".jpg", ".jpeg")))
    if not files:
        print(f"deqa_runner: no frames in {args.frames}", file=sys.stderr)
        return 2
    cuda = torch.cuda.is_available()
    model = AutoModelForCausalLM.from_pretrained(
        args.model,
        trust_remote_code=True,
        attn_implementation="eager",
        torch_dtype=torch.float16 if cuda else torch.float32,
        device_map="auto" if cuda else None,
    )
    model.requires_grad_(False)
    scores = []
    with torch.no_grad():
        for s in range(0, len(files), args.batch):
            imgs = [Image.open(os.path.join(args.frames, f)).convert("RGB") for f in files[s : s + args.batch]]
            scores += [float(v) for v in model.score(imgs).reshape(-1).tolist()]
    print(json.dumps({"scores": scores, "model": args.model}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
