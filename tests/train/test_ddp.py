"""Two CPU processes (torch.distributed, gloo) run SFT and a reward model: the multi-process wiring works.

``accelerate launch`` uses the same environment variables torchrun sets; on CPU without
MPI accelerate starts a single process, so torchrun is the launcher here (docs/distributed.md).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not installed next to this Python")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [torchrun, "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           "-m", "simplesafe.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)


def test_two_process_sft_and_reward_model(tiny_model_dir, tmp_path):
    from simplesafe.io import write_rows

    data = tmp_path / "sft"
    write_rows(data / "train.jsonl", [{"prompt": f"What is {i}?", "completion": f"It is {i}."} for i in range(32)])
    write_rows(data / "validation.jsonl", [{"prompt": f"What is {i}?", "completion": f"It is {i}."} for i in range(40, 44)])
    out = tmp_path / "run" / "sft"
    res = _torchrun(["train", "sft", f"data={data}", f"model={tiny_model_dir}", f"out={out}", "max_steps=2",
                     "batch_size=4", "grad_accum=1"], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["world_size"] == 2
    # 2 steps x 4 rows x 2 processes = 16 of 32 rows: half an epoch (one process would do a quarter)
    assert m["steps"] == 2 and m["epochs_run"] == pytest.approx(0.5)
    assert (out / "model.safetensors").exists() and (out / "DONE").exists()

    rm_out = tmp_path / "run" / "rm"
    res = _torchrun(["train", "rm", "name=safety", f"backbone={tiny_model_dir}", f"out={rm_out}", "max_train_rows=32",
                     "max_eval_rows=16", "max_length=48", "epochs=1"], tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    m = json.loads((rm_out / "metrics.json").read_text())
    # evaluation gathers both processes' shards without duplicates
    assert m["world_size"] == 2 and m["validation_n"] == 16 and m["test_n"] == 16
