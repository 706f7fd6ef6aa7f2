"""Devices and mixed precision (:mod:`tripletlab.training.devices`)."""

from __future__ import annotations

import pytest
import torch

from tripletlab.training import config_from_dict, devices


def test_amp_auto_needs_native_bf16_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    assert devices.cpu_has_native_bf16("flags\t: fpu avx2 avx512f avx512_bf16 avx512vl")
    assert devices.cpu_has_native_bf16("flags : fpu amx_bf16 amx_tile")
    assert not devices.cpu_has_native_bf16("flags : fpu avx2 avx512f avx512bw")
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert devices.use_amp("auto", cuda) and not devices.use_amp("off", cuda)
    assert devices.use_amp("on", cpu)
    # use_amp reads cpu_has_native_bf16 from its own module: patch it there
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: False)
    assert not devices.use_amp("auto", cpu)
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: True)
    assert devices.use_amp("auto", cpu)
    with pytest.raises(ValueError, match="unknown amp 'yes'; choose one of: auto, on, off"):
        config_from_dict({"amp": "yes"})
