"""Two processes x two CPU devices (JAX's distributed runtime, gloo
collectives, one global mesh) give the numbers and the files of one process x
four devices; a killed process stops the run, which resumes to the same
numbers."""
import os

import pytest

from crash import DIET, LOTTERY, SHRUNK
from multiprocess import assert_same_numbers, files_of, launch

QUICK = ["--config.train.steps=100", "--config.train.checkpoint_every=50", "--config.train.batch_size=32",
         "--config.parallel.heartbeat_timeout=10"]
CASES = {"train": ["--config=configs/train_mnist1d.py"] + SHRUNK + QUICK,
         # batches gathered on the host: each process gathers only its devices' examples
         "lottery": ["--config=configs/lottery_mnist1d.py"] + LOTTERY + QUICK + ["--config.train.device_data=False"],
         "diet": DIET + QUICK + ["--config.diet.members=4", "--config.diet.score_epochs=3.0"]}  # 4 members: split over the 4 devices of both processes


def ok(runs):
    for r in runs:
        assert r.returncode == 0, r.stderr[-3000:]
    return runs


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """name -> (workdir of 1 process x 4 devices, workdir of 2 processes x 2 devices)."""
    cache = {}

    def get(name):
        if name not in cache:
            root = tmp_path_factory.mktemp(name)
            ok(launch(root / "one", CASES[name], processes=1, devices=4))
            two = ok(launch(root / "two", CASES[name], processes=2, devices=2))
            for i, r in enumerate(two):
                assert f"process {i} of 2: 2 of 4 devices" in r.stdout
            cache[name] = root / "one", root / "two"
        return cache[name]
    return get


@pytest.mark.parametrize("name", list(CASES))
def test_two_processes_give_the_numbers_and_files_of_one(runs, name):
    one, two = runs(name)
    assert "summary.json" in files_of(two)
    assert_same_numbers(one, two)


def test_the_comparison_sees_a_changed_number(runs, tmp_path):
    import json
    import shutil
    one, _ = runs("train")
    changed = tmp_path / "changed"
    shutil.copytree(one, changed)
    summary = json.load(open(changed / "summary.json"))
    summary["final"]["test_accuracy"] += 1e-3
    json.dump(summary, open(changed / "summary.json", "w"))
    with pytest.raises(AssertionError, match="test_accuracy"):
        assert_same_numbers(one, changed)


def test_a_killed_process_stops_the_run_which_resumes_to_the_same_numbers(runs, tmp_path):
    _, reference = runs("lottery")
    killed = launch(tmp_path, CASES["lottery"], processes=2, devices=2, kill_at="metrics:levels/0:100",
                    kill_process=1, timeout=120)
    assert killed[1].returncode == -9
    assert killed[0].returncode != 0  # process 0 stops (JAX's heartbeat check) instead of waiting forever
    assert not os.path.exists(tmp_path / "summary.json")
    ok(launch(tmp_path, CASES["lottery"], processes=2, devices=2))
    assert_same_numbers(reference, tmp_path)
