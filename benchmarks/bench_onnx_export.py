"""Per-arch cost of the ONNX Runtime int8 path: export + quantize (+ session) for one arch
(default: the paper's largest, L5/H564/F1024, vocab 30522), ours vs the plain way.

    python benchmarks/bench_onnx_export.py [--arch 5/564/1024] [--repeats 3] [--threads 2] [--with_dynamo]

* plain:  ``torch.onnx.export(dynamo=False)`` to a file (weights inside, constant folding) +
          ``onnxruntime.quantization.quantize_dynamic`` file -> file (what the authors' script did);
* dynamo: ``torch.onnx.export(dynamo=True)`` + the same ``quantize_dynamic`` (``--with_dynamo``);
* ours:   ``quantize_utils.ort_dynamic_int8`` (TorchScript export with the weights as graph inputs,
          the int8 graph built directly, weights handed to ORT in memory).

Each method runs once untimed (imports, first-call caches), then ``--repeats`` times; the median
wall and CPU seconds are printed with the ratio plain / ours. The outputs of our graph are checked
against ``quantize_dynamic`` applied to the same export (they must be identical).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def main() -> int:
    import logging

    import numpy as np
    import onnx
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    import quantize_utils as qu
    from latency.backends import OUTPUT_NAMES, build_plain_bert, example_inputs
    from latency.measure import Protocol
    from utils import get_logger, make_arch

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="5/564/1024", help="L/H/F (12 heads, qkv = hidden)")
    parser.add_argument("--vocab_size", type=int, default=30522)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--with_dynamo", action="store_true")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    get_logger("bench_onnx_export")  # configures logging once; then silence ORT/onnx_ir INFO lines
    logging.getLogger().setLevel(logging.ERROR)
    torch.set_num_threads(args.threads)

    layers, hidden, ffn = (int(v) for v in args.arch.split("/"))
    protocol = Protocol(vocab_size=args.vocab_size, threads=args.threads)
    model = build_plain_bert(make_arch(layers, hidden, ffn, 12), protocol)
    inputs = example_inputs(protocol)
    names = list(inputs)
    tmp = tempfile.mkdtemp(prefix="bench_onnx_")

    class Positional(torch.nn.Module):  # the TorchScript exporter passes inputs positionally
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *tensors):
            output = self.model(**dict(zip(names, tensors)))
            return tuple(getattr(output, name) for name in OUTPUT_NAMES)

    wrapped = Positional().eval()

    def plain():
        path, out = os.path.join(tmp, "model.onnx"), os.path.join(tmp, "model.int8.onnx")
        torch.onnx.export(wrapped, tuple(inputs.values()), path, dynamo=False, opset_version=qu.ORT_OPSET,
                          input_names=names, output_names=list(OUTPUT_NAMES))
        quantize_dynamic(path, out, weight_type=QuantType.QInt8)
        return sum(node.op_type == "MatMulInteger" for node in onnx.load(out, load_external_data=False).graph.node)

    def dynamo():
        path, out = os.path.join(tmp, "dynamo.onnx"), os.path.join(tmp, "dynamo.int8.onnx")
        torch.onnx.export(model, (), path, kwargs=dict(inputs), dynamo=True, opset_version=18,
                          input_names=names, output_names=list(OUTPUT_NAMES), optimize=True)
        quantize_dynamic(path, out, weight_type=QuantType.QInt8)
        return sum(node.op_type == "MatMulInteger" for node in onnx.load(out, load_external_data=False).graph.node)

    def ours_export_quantize():
        graph, weights = qu.export_onnx(model, inputs, OUTPUT_NAMES)
        _, _, converted = qu.ort_quantize_dynamic_int8(graph, weights)
        return converted

    def ours_with_session():
        return qu.ort_dynamic_int8(model, inputs, OUTPUT_NAMES, threads=args.threads)[1]["converted_linear"]

    methods = [("plain export + quantize_dynamic", plain), ("ours: export + quantize", ours_export_quantize),
               ("ours: export + quantize + session", ours_with_session)]
    if args.with_dynamo:
        methods.insert(1, ("dynamo export + quantize_dynamic", dynamo))
    print(f"arch L{layers}/H{hidden}/F{ffn}, vocab {args.vocab_size}, torch threads {args.threads}, "
          f"{qu.count_linear_modules(model)} nn.Linear, {args.repeats} repeats after one untimed run")
    results = {}
    for label, fn in methods:
        converted, first_wall, _ = timed(fn)
        walls, cpus = [], []
        for _ in range(args.repeats):
            _, wall, cpu = timed(fn)
            walls.append(wall)
            cpus.append(cpu)
        results[label] = (statistics.median(walls), statistics.median(cpus))
        print(f"{label:36s} {results[label][0]:6.2f} s wall  {results[label][1]:6.2f} s CPU  "
              f"(first call {first_wall:.2f} s)  int8 MatMulInteger: {converted}", flush=True)
    base = results["plain export + quantize_dynamic"]
    ours = results["ours: export + quantize"]
    print(f"speed-up plain / ours (export + quantize): {base[0] / ours[0]:.2f}x wall, {base[1] / ours[1]:.2f}x CPU")

    # correctness: our int8 graph vs quantize_dynamic on the same export, run in ORT
    graph, weights = qu.export_onnx(model, inputs, OUTPUT_NAMES)
    reference, _ = qu.ort_quantize_dynamic_official(graph, weights, op_types=("MatMul", "Gemm"))
    graph, weights = qu.export_onnx(model, inputs, OUTPUT_NAMES)
    fast, external, _ = qu.ort_quantize_dynamic_int8(graph, weights)
    feeds = {name: tensor.numpy() for name, tensor in inputs.items()}
    ref_out = qu.ort_session(reference, 1).run(None, feeds)
    fast_out = qu.ort_session(fast, 1, external).run(None, feeds)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(ref_out, fast_out))
    print(f"max |ours - quantize_dynamic| over outputs: {diff:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
