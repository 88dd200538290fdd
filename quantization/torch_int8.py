"""PyTorch dynamic int8 of every ``nn.Linear`` (the paper's int8, scheme ``torch_dynamic_int8``), the
original's min-max fake-quant (scheme ``fakequant``, parity only) and serialized model sizes."""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from utils import UserError


def _quantize_dynamic_api():
    """``torch.ao.quantization.quantize_dynamic``, with a clear error if a future torch removed it."""
    try:
        from torch.ao.quantization import quantize_dynamic
    except ImportError:  # pragma: no cover - depends on the installed torch
        raise UserError(f"torch {torch.__version__} has no torch.ao.quantization.quantize_dynamic; "
                        "install the pinned torch from requirements.txt") from None
    return quantize_dynamic


def select_quantized_engine(preferred: tuple[str, ...] = ("x86", "fbgemm", "qnnpack")) -> str:
    """Pick and set an available quantized engine explicitly (the default can be 'none' on
    some builds); returns its name so that it can be recorded with every measurement."""
    supported = torch.backends.quantized.supported_engines
    for engine in preferred:
        if engine in supported:
            torch.backends.quantized.engine = engine
            return engine
    raise UserError(f"no quantized engine available in this torch build (supported: {supported})")


def count_linear_modules(model: nn.Module) -> int:
    """Plain ``nn.Linear`` modules (exact type, as ``quantize_dynamic`` matches them)."""
    return sum(1 for module in model.modules() if type(module) is nn.Linear)


def count_dynamic_int8_linear(model: nn.Module) -> int:
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

    return sum(1 for module in model.modules() if type(module) is DynamicQuantizedLinear)


def quantize_dynamic_int8(model: nn.Module, inplace: bool = False) -> tuple[nn.Module, int]:
    """PyTorch dynamic int8 on every ``nn.Linear``; returns ``(quantized_model, converted_count)``.

    Raises if any ``nn.Linear`` was left in fp32 (the failure mode the original never checked).
    """
    quantize_dynamic = _quantize_dynamic_api()
    expected = count_linear_modules(model)
    select_quantized_engine()
    with warnings.catch_warnings():
        # torch.ao eager quantization warns that it is deprecated in favour of torchao; the paper's
        # latency tables use exactly this path, so the warning is expected and silenced here.
        warnings.simplefilter("ignore")
        quantized = quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=inplace)
    converted = count_dynamic_int8_linear(quantized)
    left = count_linear_modules(quantized)
    if converted != expected or left:
        raise RuntimeError(f"dynamic int8 converted {converted} of {expected} nn.Linear modules ({left} left in fp32)")
    return quantized, converted



# --------------------------------------------------------------------------------------
# The original's fake-quant (parity option)
# --------------------------------------------------------------------------------------


def fake_quantize_tensor(tensor: torch.Tensor, bits: int = 8) -> torch.Tensor:
    """Per-tensor asymmetric min-max quantize then dequantize (the original ``quantize`` +
    ``dequantize``): ``q = rint((w - min) / (max - min) * (2^bits - 1))``, back to float."""
    if not tensor.is_floating_point() or tensor.numel() == 0:
        return tensor
    levels = 2**bits - 1
    low = tensor.min()
    span = tensor.max() - low
    if span == 0:
        return tensor.clone()  # the original keeps constant tensors unchanged
    scale = span / levels
    return torch.round((tensor - low) / scale) * scale + low


def fake_quantize_model(model: nn.Module, bits: int = 8, inplace: bool = False) -> nn.Module:
    """Fake-quantize every floating-point state-dict tensor of ``model`` (weights, biases,
    LayerNorm, embeddings), as the original's ``quantize_model``. Values stay fp32."""
    target = model if inplace else copy.deepcopy(model)
    with torch.no_grad():
        state = target.state_dict()
        target.load_state_dict({key: fake_quantize_tensor(value, bits) for key, value in state.items()})
    return target


def int8_model_size_bytes(model: nn.Module) -> int:
    """Serialized size of a model's weights (int8 packed Linear weights count one byte each)."""
    import io

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes
