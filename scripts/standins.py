"""Stand-ins of the paper's models in an offline hub cache, and encoded examples for restricted training.

    python scripts/standins.py build --hf-home .cache/rehearsal/hf --data ../shared/data/tofu ../shared/data/lume
    HF_HOME=.cache/rehearsal/hf HF_HUB_OFFLINE=1 python scripts/standins.py encode \
        --model meta-llama/Llama-3.1-8B-Instruct --data ../shared/data/tofu --out forget.jsonl

``build`` writes (once; ``--force`` rebuilds) the stand-ins of :mod:`workbench.models.standins` and
prints ``<hub id> <commit>`` per model. ``encode`` writes the forget set of TOFU, tokenised with the
model's tokenizer and chat template, as the JSON lines ``{"input_ids": [...], "prompt_len": n}`` that
``scripts/train_distributed.sh restricted --data`` reads.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def build(args) -> int:
    from workbench.models.standins import STANDINS, build_hub_cache

    commits = build_hub_cache(args.hf_home, args.data, args.model or list(STANDINS), force=args.force)
    for hub_id, commit in commits.items():
        print(hub_id, commit)
    return 0


def encode(args) -> int:
    from transformers import AutoTokenizer

    from workbench.data import load_data
    from workbench.data.formatting import encode_all

    tokenizer = AutoTokenizer.from_pretrained(args.model, revision=args.revision or None)
    data = load_data("tofu", source=args.data, n_retain_authors=1, n_forget_authors=args.authors, seed=0)
    rows = encode_all(tokenizer, data.forget[: args.n] if args.n else data.forget)
    Path(args.out).write_text("".join(json.dumps({"input_ids": list(e.input_ids), "prompt_len": e.prompt_len}) + "\n"
                                      for e in rows))
    print(f"{len(rows)} examples → {args.out}")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="write the stand-ins into <hf-home>/hub")
    b.add_argument("--hf-home", required=True)
    b.add_argument("--data", nargs="+", required=True, help="folders of *.jsonl text the tokenizer is trained on")
    b.add_argument("--model", action="append", default=[], help="only this hub id (repeatable; default: all)")
    b.add_argument("--force", action="store_true")
    e = sub.add_parser("encode", help="TOFU's forget set as encoded JSON lines for restricted training")
    e.add_argument("--model", required=True, help="hub id or folder whose tokenizer encodes")
    e.add_argument("--revision", default="")
    e.add_argument("--data", required=True, help="local TOFU folder")
    e.add_argument("--authors", type=int, default=1, help="forget authors (the last n of TOFU)")
    e.add_argument("--n", type=int, default=0, help="keep the first n examples (0: all)")
    e.add_argument("--out", required=True)
    args = p.parse_args(argv)
    return {"build": build, "encode": encode}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
