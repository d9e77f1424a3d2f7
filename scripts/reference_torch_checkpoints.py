"""Tiny torch.save checkpoints for the Rust reader, in both container formats, with the tensor
layouts converted checkpoints really have: transposed (non-contiguous) weights, views at an
offset into a shared storage, several dtypes, and a nested Parameter.

Writes tests/fixtures/torch_checkpoints/{legacy.pth, zip.pth, expected.safetensors}; the
expected file holds every tensor contiguous (as f32, or i64 for integer tensors).
Run with .venv-bench/bin/python (torch).
"""
from collections import OrderedDict
from pathlib import Path

import torch
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "torch_checkpoints"


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4, 6, generator=g)
    shared = torch.arange(20, dtype=torch.float32)
    state = OrderedDict()
    state["conv.weight"] = torch.randn(2, 3, 3, 4, generator=g).permute(0, 3, 1, 2)  # strided, as TF ports are
    state["fc.weight"] = base.t()                                     # transposed view
    state["fc.bias"] = shared[5:11]                                   # view at an offset
    state["fc.other"] = shared[::4]                                   # stepped view, same storage
    state["half"] = torch.randn(3, 2, generator=g).half()
    state["double"] = torch.randn(5, generator=g).double()
    state["bn.num_batches_tracked"] = torch.tensor(1234567890123, dtype=torch.int64)
    state["mask"] = torch.tensor([True, False, True])
    state["param"] = torch.nn.Parameter(torch.randn(2, 2, generator=g))
    assert not state["conv.weight"].is_contiguous() and not state["fc.weight"].is_contiguous()
    torch.save(state, OUT / "legacy.pth", _use_new_zipfile_serialization=False)
    torch.save(state, OUT / "zip.pth")
    expected = {}
    for k, v in state.items():
        v = v.detach()
        if v.dtype in (torch.int64, torch.bool):
            v = v.to(torch.int64) if v.dtype == torch.int64 else v.to(torch.uint8)
        else:
            v = v.float()
        expected[k] = v.contiguous().clone()
    save_file(expected, OUT / "expected.safetensors")


if __name__ == "__main__":
    main()
