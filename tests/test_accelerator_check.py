"""bench/accelerator_check.py runs end to end (--quick, on the CPU: small stand-ins
for the ResNets, the numbers mean nothing) and reports every row."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quick_run_reports_every_row(tmp_path):
    out = tmp_path / "acc.json"
    run = subprocess.run([sys.executable, "bench/accelerator_check.py", "--quick", "--no_pytest", "--out", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.load(open(out))
    rows = result["rows"]
    for what in ("train lenet_300_100 float32", "train lenet_300_100 bfloat16", "train conv2 float32",
                 "train conv2 bfloat16", "ensemble lenet_300_100 K=8 vmapped", "ensemble lenet_300_100 K=8 sequential",
                 "grand conv2 fast", "grand conv2 vmap"):
        assert rows[what]["examples_per_s"] > 0, what
    assert result["ensemble_speedup"] > 0 and result["matmul_flops"]["float32"] > 0
    assert "| train | lenet_300_100 bfloat16 |" in run.stdout and "sequential" in run.stdout
