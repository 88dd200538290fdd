#!/usr/bin/env python
"""BERT-Tickets on CPU: what a ticket run costs per round, and what unstructured sparsity buys in latency.

For a finished ticket run (``bert_tickets.py --output_dir DIR``) this prints, per round:

* the round's recorded cost (CPU and wall seconds: fine-tune of every seed, fp32 + int8 dev
  evaluation, latency, saving) -- what decides whether the demo can afford the stage;
* the ticket's latency with the latency tables' protocol (``tickets.timing``, one thread, batch 1 x
  seq 128 by default): dense fp32 (the zeros multiplied), dynamic int8, and fp32 with every pruned
  Linear run as a CSR sparse matrix product (``torch.sparse.mm``), i.e. what PyTorch's stock
  sparse kernel makes of the sparsity. All three are timed interleaved in one chunk;
* the same for the last ticket pruned further (``--extra_sparsities``, magnitude, no fine-tune),
  to show the sparsity at which the stock CSR kernel would start to pay.

    .venv/bin/python benchmarks/bench_bert_tickets.py --ticket_dir output/bert_tickets/mnli
    .venv/bin/python benchmarks/bench_bert_tickets.py --ticket_dir /tmp/tk/tickets_full --runs 40 --timer cpu

Run it on an idle machine; on a shared one use ``--timer cpu`` and read the figures as indicative.
"""

from __future__ import annotations

import argparse
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def csr_model(model):
    """A copy of ``model`` whose pruned-set Linears multiply a CSR weight (``torch.sparse.mm``)."""
    import copy

    import torch
    from torch import nn

    from tickets.pruning import prunable_modules

    class CSRLinear(nn.Module):
        def __init__(self, linear: nn.Linear):
            super().__init__()
            self.weight = linear.weight.detach().to_sparse_csr()
            self.bias = linear.bias.detach()
            self.out_features = linear.out_features

        def forward(self, x):
            flat = x.reshape(-1, x.shape[-1])
            out = torch.sparse.mm(self.weight, flat.t()).t() + self.bias
            return out.reshape(*x.shape[:-1], self.out_features)

    sparse = copy.deepcopy(model)
    for key, module in prunable_modules(sparse):
        parent_name, _, child = key[: -len(".weight")].rpartition(".")
        setattr(sparse.get_submodule(parent_name), child, CSRLinear(module))
    return sparse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ticket_dir", required=True, help="a bert_tickets.py --output_dir")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seq_len", type=int, default=128)
    parser.add_argument("--timer", choices=("wall", "cpu"), default="wall")
    parser.add_argument("--extra_sparsities", default="0.5,0.7,0.9,0.95",
                        help="also time the last ticket pruned further by magnitude to these sparsities (no "
                             "fine-tune: latency depends on the pattern, not the values); empty for none")
    args = parser.parse_args()

    import warnings

    import torch

    from glue.tasks import get_task
    from tickets.imp import load_classifier_model
    from tickets.pruning import make_permanent, prune_by_magnitude
    from tickets.storage import load_masks
    from tickets.report import read_ticket_records
    from tickets.timing import ticket_protocol, time_modules, to_int8

    warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
    torch.set_num_threads(args.threads)
    records = read_ticket_records(args.ticket_dir)
    print(f"ticket run {args.ticket_dir}: {records[0]['arch_summary']}, {records[0]['task_name']}, "
          f"{records[0]['train_examples']} training examples, seeds {records[0]['seeds']}")
    print("\n| round | sparsity % | CPU s | wall s | dense fp32 ms | CSR fp32 ms | dense int8 ms | CSR / dense |")
    print("|---|---|---|---|---|---|---|---|")
    def row(label, cost, model, sparsity_pct):
        protocol = ticket_protocol(model.config, runs=args.runs, warmup=args.warmup, rounds=args.rounds,
                                   threads=args.threads, seq_len=args.seq_len, timer=args.timer)
        dense = model.bert.eval()
        sparse = csr_model(dense).eval()
        probe = {"input_ids": torch.randint(0, model.config.vocab_size, (1, 16))}
        with torch.no_grad():  # the CSR model computes the same function
            gap = (dense(**probe).last_hidden_state - sparse(**probe).last_hidden_state).abs().max().item()
        if gap > 1e-3:
            raise SystemExit(f"{label}: the CSR model differs from the dense one by {gap:.2e}")
        stats = time_modules({"dense": dense, "csr": sparse, "int8": to_int8(dense)[0]}, protocol)
        ratio = stats["csr"]["median_ms"] / stats["dense"]["median_ms"]
        print(f"| {label} | {sparsity_pct:.1f} | {cost} | {stats['dense']['median_ms']:.2f} | "
              f"{stats['csr']['median_ms']:.2f} | {stats['int8']['median_ms']:.2f} | {ratio:.2f}x |", flush=True)

    num_labels = get_task(records[0]["task_name"]).num_labels
    for record in records:
        model, _ = load_classifier_model(os.path.join(args.ticket_dir, record["ticket_dir"]), num_labels)
        row(record["round"], f"{record['round_cpu_seconds']:.0f} | {record['round_wall_seconds']:.0f}", model,
            record["sparsity_pct"])
    last = records[-1]
    masks, _ = load_masks(os.path.join(args.ticket_dir, last["mask_file"]))
    for text in filter(None, args.extra_sparsities.split(",")):
        target = float(text)
        if target * 100 <= last["sparsity_pct"]:
            continue
        model, _ = load_classifier_model(os.path.join(args.ticket_dir, last["ticket_dir"]), num_labels)
        total = sum(mask.numel() for mask in masks.values())
        prune_by_magnitude(model, masks, int(target * total + 0.5))
        make_permanent(model)
        row(f"{last['round']} pruned on", "- | -", model, 100 * target)
    print(f"\nprotocol: {args.runs} runs after {args.warmup} warm-up, {args.rounds} interleaved rounds, "
          f"{args.threads} thread(s), batch 1 x seq {args.seq_len}, timer {args.timer}; load average "
          f"{os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
