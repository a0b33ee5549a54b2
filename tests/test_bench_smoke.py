"""Every benchmark script runs end to end in --smoke mode: a refactor cannot silently break bench/."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
SCRIPTS = ["train_throughput", "decode_speed", "quality", "scaling", "hf_peer", "software_messages",
           "bert2bert", "shared_cores", "stage1_memory", "step_parts"]


@pytest.fixture(scope="module")
def smoke_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bench-smoke")


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_bench_script_smoke_mode(script, smoke_root, tmp_path):
    out = tmp_path / f"{script}.json"
    env = {**os.environ, "NMT_BERT_BENCH_SMOKE": str(smoke_root / "assets"),
           "NMT_BERT_CACHE": str(smoke_root / "cache")}
    result = subprocess.run([sys.executable, str(BENCH / f"{script}.py"), "--smoke",
                             "--out", str(out)], capture_output=True, text=True, env=env,
                            timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert json.loads(out.read_text())  # figures were written
