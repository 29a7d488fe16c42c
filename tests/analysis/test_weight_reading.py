"""Reading tensors for the analysis: the block-wise ΔW read equals the plain one, bit for bit."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from evalkit.analysis import weights


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
def test_read_minus_equals_read_then_subtract(tmp_path, monkeypatch, dtype):
    g = torch.Generator().manual_seed(0)
    tensors = {  # several tensors, so the one read sits at a non-zero offset in the file
        "a.bias": torch.randn(7, generator=g).to(dtype),
        "b.weight": torch.randn(37, 5, generator=g).to(dtype),
        "c.weight": torch.randn(101, 13, generator=g).to(dtype),
    }
    save_file(tensors, str(tmp_path / "model.safetensors"))
    files = weights.ModelFiles(tmp_path)
    # Blocks of 3 rows: many blocks and a ragged last one.
    monkeypatch.setattr(weights, "_BLOCK_BYTES", 3 * 13 * tensors["c.weight"].element_size())
    for name in ("b.weight", "c.weight"):
        for compute in (torch.float32, torch.float64):
            other = torch.randn(tensors[name].shape, generator=g, dtype=compute)
            got = files.read_minus(name, other)
            assert got.dtype == compute
            assert torch.equal(got, files.read(name).to(compute) - other)
