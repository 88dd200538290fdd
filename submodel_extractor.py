#!/usr/bin/env python
"""Extract one sub-model from the supernet as a plain Hugging Face BERT directory.

    python submodel_extractor.py --model SUPERNET_DIR --arch ARCH_JSON_OR_FILE --output OUT_DIR [--head mlm|cls|none]

The output (config.json, model.safetensors, vocab.txt) loads offline with
``AutoModel.from_pretrained(OUT_DIR)`` and reproduces the sliced supernet's outputs.
"""

from __future__ import annotations

import argparse
import os

from transformer.checkpoint import load_supernet, save_hf_directory, vocab_path  # noqa: F401 (re-exported)
from transformer.hf_converter import HEADS, check_hf_compatible, to_hf_model
from transformer.modeling_super import check_arch_fits, count_active_parameters
from utils import ArchError, UserError, arch_summary, get_logger, load_arch_argument, run_cli

logger = get_logger("submodel_extractor")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="supernet directory (or a plain HF BERT directory)")
    parser.add_argument("--arch", required=True, help="arch dict (JSON or Python repr) or a file with one arch")
    parser.add_argument("--output", required=True, help="output directory for the plain HF BERT model")
    parser.add_argument("--head", choices=HEADS, default="mlm",
                        help="mlm: BertForMaskedLM; cls: BertForSequenceClassification; none: BertModel")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --output")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    arch = load_arch_argument(args.arch)
    check_hf_compatible(arch)  # fail before loading a large checkpoint
    if os.path.exists(args.output) and not os.path.isdir(args.output):
        raise UserError(f"--output: {args.output} exists and is not a directory")
    if os.path.exists(args.output) and os.listdir(args.output) and not args.overwrite:
        raise UserError(f"--output: {args.output} exists and is not empty (pass --overwrite to replace it)")
    supernet = load_supernet(args.model).eval()
    try:
        check_arch_fits(arch, supernet.config, where="--arch")
    except ArchError as err:
        raise UserError(str(err)) from None
    hf_model = to_hf_model(supernet, arch, head=args.head)
    save_hf_directory(hf_model, args.output, vocab_path(args.model), overwrite=args.overwrite)
    total = sum(p.numel() for p in supernet.parameters())
    logger.info("supernet: %.2f M parameters; sub-model %s: %.2f M (embeddings + encoder + pooler)",
                total / 1e6, arch_summary(arch), count_active_parameters(supernet, arch) / 1e6)
    logger.info("wrote %s (%s head)", args.output, args.head)
    return 0


if __name__ == "__main__":
    run_cli(main)
