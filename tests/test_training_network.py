"""The run's network helpers: ``--compile``'s compiled forward pass and its fallback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from training_helpers import no_compiler_env

from tripletlab.training.network import compiled_network, compiler_problem


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 5)
    )


def _twice(model: nn.Module, x: Tensor) -> Tensor:
    out: Tensor = model(x)
    return out * 2.0  # a chosen forward pass, not the module's own


def test_a_missing_compiler_is_named_in_one_line(tmp_path: Path) -> None:
    script = (
        "import json, warnings, torch\n"
        "from tripletlab.training.network import compiled_network, compiler_problem\n"
        "print(compiler_problem(torch.device('cpu')))\n"
        "with warnings.catch_warnings(record=True) as seen:\n"
        "    warnings.simplefilter('always')\n"
        "    net = compiled_network(torch.nn.Linear(2, 2), lambda m, x: m(x), 'cpu')\n"
        "print(json.dumps([net is None, [str(w.message) for w in seen]]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=False,
        env=no_compiler_env(tmp_path),
    )
    assert done.returncode == 0, done.stderr
    problem, fallback = done.stdout.splitlines()[-2:]
    assert problem != "None"
    is_none, messages = json.loads(fallback)
    assert is_none and len(messages) == 1
    assert messages[0].startswith(f"--compile: torch.compile cannot run here ({problem}")
    assert messages[0].endswith("; training without it")


def test_the_compiled_forward_is_the_models_own() -> None:
    problem = compiler_problem(torch.device("cpu"))
    if problem is not None:
        pytest.skip(f"torch.compile cannot run here: {problem}")
    model = _net()
    compiled = compiled_network(model, _twice, torch.device("cpu"))
    assert compiled is not None
    x = torch.randn(6, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    eager = _twice(model, x)
    eager.square().sum().backward()
    grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad()
    out = compiled(x)
    out.square().sum().backward()
    # float32 sums of at most 64 terms, reordered by the compiler: a few ulps of their size
    torch.testing.assert_close(out, eager, rtol=1e-5, atol=1e-5)
    for p, g in zip(model.parameters(), grads, strict=True):
        assert p.grad is not None
        torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-5)
    with torch.no_grad():  # the same parameters: a change to the model is the compiled one's
        last = model[-1]
        assert isinstance(last, nn.Linear)
        last.bias.add_(1.0)
    torch.testing.assert_close(compiled(x), _twice(model, x), rtol=1e-5, atol=1e-5)
    assert set(compiled.state_dict()) == {f"_orig_mod.model.{k}" for k in model.state_dict()}
