"""Freed host memory kept for reuse on CPU runs: large gradients stop being mapped afresh every step."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from hftransfer import runs
from hftransfer.config import DataConfig, RunConfig, TrainConfig

# A 64 MiB block: above glibc's largest automatic mmap threshold (32 MiB), like MiniLM's 45 MiB embedding gradient.
_FAULTS = """
import resource, sys, torch
from hftransfer.training.host_memory import reuse_freed_host_memory
if sys.argv[1] == "on":
    assert reuse_freed_host_memory()
def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.zeros(16 << 20).sum()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
for _ in range(10):  # glibc settles on which free blocks serve the request within a few cycles, like training steps
    faults()
print(sum(faults() for _ in range(10)))
"""


def _steady_faults(mode: str) -> int:
    # A fresh process: the thresholds are process-wide and this one's allocator has a history.
    done = subprocess.run([sys.executable, "-c", _FAULTS, mode], capture_output=True, text=True, check=True)
    return int(done.stdout.split()[-1])


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc thresholds"
)
def test_freed_large_block_is_reused_without_page_faults():
    returned = _steady_faults("off")
    if returned < 10 * 4096:
        pytest.skip(f"the kernel maps this block with huge pages ({returned} faults): nothing to save")
    kept = _steady_faults("on")
    # 64 MiB is 16,384 pages of 4 KiB: returned to the kernel, every one faults in again on each of the 10
    # allocations; kept in the heap, they are already mapped.
    assert kept < returned / 10, (kept, returned)


@pytest.mark.parametrize("reuse", [True, False])
def test_start_run_keeps_freed_memory_only_when_configured(tmp_path, monkeypatch, reuse):
    calls = []
    monkeypatch.setattr(runs, "reuse_freed_host_memory", lambda: calls.append(True) or True)
    config = RunConfig(
        output_dir=str(tmp_path / "run"),
        data=DataConfig(train_file="unused.conll"),
        train=TrainConfig(trackers=[], reuse_host_memory=reuse),
    )
    runs.start_run(config, "finetune_ner")
    assert calls == ([True] if reuse else [])
