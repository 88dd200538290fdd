"""Latency tables and the latency predictor (stages 3-4).

* ``measure``   -- the one timing protocol and measurement loop (warm-up, timed runs, statistics,
                   environment record), shared by every backend;
* ``backends``  -- what is timed: the extracted plain HF ``BertModel`` in fp32, in PyTorch dynamic
                   int8, or exported to ONNX Runtime dynamic int8;
* ``dataset``   -- the latency-table stage behind ``inference_time_evaluation_quant.py`` and
                   ``inference_time_evaluation_quant_onnx.py`` (arch selection, resume, shards);
* ``table``     -- reading/writing latency tables (our JSONL, the original ``<arch>\\t<ms>`` lines);
* ``noise``     -- measurement-noise estimates (second differences, repeated archs);
* ``compare``   -- tables side by side (int8/fp32 speedup, ORT vs PyTorch);
* ``predictor`` -- the MLP latency predictor (``latency_predictor.LatencyPredictor``).
"""
