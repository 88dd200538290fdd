#!/usr/bin/env python
"""Stage 2: pre-train the weight-sharing BERT supernet (masked LM and/or knowledge distillation).

    python pre_training.py --pregenerated_data SHARD_DIR --output_dir OUT --mlm [--teacher_model BERT_DIR] ...
    torchrun --nproc_per_node N pre_training.py ...            # DistributedDataParallel (gloo CPU / nccl GPU)

Every optimizer step trains an arch sampled from --space (the same on every rank; --sandwich adds
the largest and smallest). The student starts from scratch (shape: the space's largest arch, or
--supernet_config / the shape flags), from a local BERT directory (--student_model), or from the
latest checkpoint in --output_dir (--resume). Writes OUT/step_{n}/ and OUT/epoch_{e}/ (supernet
directories + training state), OUT/final/, OUT/loss_log.jsonl, OUT/loss_curve.png and
OUT/subnet_quality.json + .png (held-out MLM loss of a ladder of sub-models, inherited weights).
"""

from __future__ import annotations

import argparse

from utils import add_space_arguments, run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_io_arguments(parser)
    _add_model_arguments(parser)
    _add_objective_arguments(parser)
    _add_sampling_arguments(parser)
    _add_optim_arguments(parser)
    _add_quality_arguments(parser)
    _add_run_arguments(parser)
    return parser


def _add_io_arguments(parser: argparse.ArgumentParser) -> None:
    io = parser.add_argument_group("data and output")
    io.add_argument("--pregenerated_data", required=True, help="directory of generate_data.py shards")
    io.add_argument("--output_dir", required=True, help="checkpoints, loss log and final supernet go here")
    io.add_argument("--vocab", default=None,
                    help="vocab.txt or a directory holding one (default: the model's, else the shards' vocab.txt)")
    io.add_argument("--resume", action="store_true",
                    help="continue from the newest intact checkpoint in --output_dir (an unreadable one is skipped "
                         "with a warning); with none yet, start again from step 0; a finished run does nothing")
    io.add_argument("--overwrite_output_dir", action="store_true", help="delete a previous run in --output_dir")
    io.add_argument("--do_lower_case", action="store_true",
                    help="accepted for compatibility with the original scripts; the shards are already tokenised")



def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    model = parser.add_argument_group("models")
    model.add_argument("--student_model", default=None,
                       help="start from a local BERT directory (Hugging Face or one of our supernets)")
    model.add_argument("--supernet_config", default=None,
                       help="supernet shape for a fresh (or HF-initialised) student: JSON or a JSON file "
                            "(SuperBertConfig keys); default: the space's largest arch")
    for flag in ("num_hidden_layers", "hidden_size", "intermediate_size", "qkv_size", "num_attention_heads",
                 "max_position_embeddings"):
        model.add_argument(f"--{flag}", type=int, default=None, help=f"supernet {flag.replace('_', ' ')} (overrides)")
    model.add_argument("--teacher_model", default=None,
                       help="local BERT directory of the KD teacher; enables knowledge distillation")
    model.add_argument("--further_train", action="store_true",
                       help="train only the supernet's full arch (no sampling), as the original's --further_train")



def _add_objective_arguments(parser: argparse.ArgumentParser) -> None:
    objective = parser.add_argument_group("objectives")
    objective.add_argument("--mlm", "--mlm_loss", dest="mlm", action="store_true", help="masked-LM loss")
    objective.add_argument("--masked_lm_prob", type=float, default=None,
                           help="fraction of tokens masked (default 0.15 with --mlm, else 0 = unmasked KD input)")
    objective.add_argument("--max_predictions_per_seq", type=int, default=None,
                           help="cap on masked tokens per sequence (the original used 77 at length 512)")



def _add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    sampling = parser.add_argument_group("arch sampling")
    sampling.add_argument("--sample_times_per_batch", type=int, default=1, help="archs sampled per step")
    sampling.add_argument("--sandwich", action="store_true",
                          help="also train the space's largest and smallest arch every step (sandwich rule)")
    sampling.add_argument("--masked_updates", dest="masked_updates", action="store_true", default=None,
                          help="update only the slices the step's archs read; every other entry and its optimizer "
                               "state stay bit-identical (the default; a resumed run keeps the checkpoint's setting)")
    sampling.add_argument("--no_masked_updates", dest="masked_updates", action="store_false",
                          help="plain AdamW: the momentum and weight decay also move the slices no arch of the step "
                               "read (the original's behaviour)")
    add_space_arguments(parser, default="paper_supernet", role="supernet")



def _add_optim_arguments(parser: argparse.ArgumentParser) -> None:
    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--max_seq_length", type=int, default=512, help="with [CLS]/[SEP]; longer sequences are cut")
    optim.add_argument("--train_batch_size", type=int, default=16, help="sequences per micro-batch per process")
    optim.add_argument("--gradient_accumulation_steps", type=int, default=1)
    optim.add_argument("--num_train_epochs", type=int, default=2)
    optim.add_argument("--max_steps", type=int, default=-1,
                       help="optimizer steps in total, at least 1 (overrides epochs); -1: --num_train_epochs decide")
    optim.add_argument("--learning_rate", type=float, default=1e-4)
    optim.add_argument("--weight_decay", type=float, default=0.01)
    optim.add_argument("--adam_epsilon", type=float, default=1e-8)
    optim.add_argument("--max_grad_norm", type=float, default=1.0, help="global gradient-norm clip")
    optim.add_argument("--warmup_proportion", type=float, default=0.1, help="warm-up as a fraction of all steps")
    optim.add_argument("--warmup_steps", type=int, default=None, help="warm-up steps (overrides the proportion)")
    optim.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                       help="autocast: auto = bf16 on a GPU that has it, else fp32; fp16 uses a grad scaler")
    optim.add_argument("--seed", type=int, default=42)



def _add_quality_arguments(parser: argparse.ArgumentParser) -> None:
    quality = parser.add_argument_group("held-out data and the sub-model quality report")
    quality.add_argument("--heldout_fraction", type=float, default=None,
                         help="fraction of the shard lines set aside, never trained on (a fixed rule per shard file: "
                              "pretraining.data.heldout_split); default 0.02, a resumed run keeps the checkpoint's")
    quality.add_argument("--quality_ladder", type=int, default=6,
                         help="archs in the ladder of OUTPUT_DIR/subnet_quality.json (+ .png) written at the end: "
                              "held-out MLM loss per sub-model with inherited weights (0: no report)")
    quality.add_argument("--quality_space", default=None,
                         help="search space of that ladder (default: paper_search for paper_supernet, demo_search "
                              "for demo_supernet, else --space)")
    quality.add_argument("--quality_sequences", type=int, default=512, help="held-out sequences it uses")



def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    run = parser.add_argument_group("running")
    run.add_argument("--device", default="auto", help="auto, cpu or cuda")
    run.add_argument("--num_workers", type=int, default=0, help="DataLoader worker processes")
    run.add_argument("--threads", type=int, default=0,
                     help="torch intra-op threads per process (0: torch's default; torchrun sets 1)")
    run.add_argument("--logging_steps", type=int, default=50, help="log a summary line every N steps")
    run.add_argument("--save_steps", type=int, default=1000,
                     help="checkpoint every N steps and at the last one (0: epoch checkpoints and final/ only)")
    run.add_argument("--save_total_limit", type=int, default=2, help="step checkpoints kept (0: all)")
    run.add_argument("--stop_after_steps", type=int, default=0,
                     help="leave (with a checkpoint) after N steps of this invocation; --resume continues "
                          "(for time-limited jobs)")
    run.add_argument("--no_progress", action="store_true", help="no progress bar")


def main(argv=None) -> int:
    from pretraining.loop import train

    args = build_parser().parse_args(argv)
    train(args)
    return 0


if __name__ == "__main__":
    run_cli(main)
