"""The machinery behind the scheme registry (``quantize_utils.SCHEMES``), one job per module:

* ``quantization.torch_int8``  -- PyTorch dynamic int8 of every ``nn.Linear``, the original's fake-quant,
  model sizes;
* ``quantization.onnx_export`` -- ``torch.onnx`` export of a plain model (weights as graph inputs);
* ``quantization.ort_int8``    -- ONNX Runtime dynamic int8 graphs (built directly, or by ORT's tool)
  and their sessions;
* ``quantization.runners``     -- per scheme, the timed runner (latency stage) and the scored model
  (evaluator).

Stages import these names from ``quantize_utils``, the registry's face.
"""
