"""python -m lth_jax.sweep: the grid, which points share a run, the per-point
rows, the table / plot / CSV, resume after a kill, and one-line refusals."""
import csv
import importlib
import json
import os

import numpy as np
import pytest

from crash import DIET, SWEEP, assert_same_outputs, killed_at_each, main_py
from lth_jax import experiments, report, sweep
from lth_jax.errors import LthError

DIET_AXES = {"diet.score_epochs": [0.0, 5.0], "diet.fractions": [0.3, 0.5],
             "diet.selections": ["el2n:hardest", "random"], "replicate": [0, 1]}


def config(name):
    return importlib.import_module(f"configs.{name}").get_config()


def write_sweep(folder, axes) -> str:
    path = os.path.join(folder, "sweep_file.py")
    with open(path, "w") as f:
        f.write(f"def get_sweep():\n    return {axes!r}\n")
    return path


def test_diet_points_stack_into_one_run_per_separate_axis():
    points, runs = sweep.plan(config("diet_mnist1d"), DIET_AXES, experiments.get("diet"))
    assert len(points) == 16 and len(runs) == 2
    for run, epochs in zip(runs, [0.0, 5.0]):
        assert run.overrides == {"diet.score_epochs": epochs, "diet.fractions": (0.3, 0.5),
                                 "diet.selections": ("el2n:hardest", "random"), "diet.seeds": 2}
        assert sorted(points[i].values["diet.score_epochs"] for i in run.points) == [epochs] * 8
    assert {p.run for p in points if p.values["diet.score_epochs"] == 5.0} == {1}


def test_lottery_settings_run_one_after_another_with_replicates_stacked():
    axes = {"lottery.rewind_step": [0, 100], "lottery.scope": ["layerwise", "global"], "replicate": [0, 1, 2]}
    points, runs = sweep.plan(config("lottery_mnist1d"), axes, experiments.get("lottery"))
    assert len(points) == 12 and len(runs) == 4
    assert [r.overrides for r in runs][1] == {"lottery.rewind_step": 0, "lottery.scope": "global", "lottery.seeds": 3}
    assert all(len(r.points) == 3 for r in runs)


def test_point_config_has_one_value_of_a_stacked_tuple_key():
    cfg = config("diet_mnist1d")
    points, _ = sweep.plan(cfg, DIET_AXES, experiments.get("diet"))
    one = sweep.point_config(cfg, points[5])
    assert one.diet.fractions == (points[5].values["diet.fractions"],)
    assert one.diet.selections == (points[5].values["diet.selections"],) and one.diet.seeds == cfg.diet.seeds


@pytest.mark.parametrize("axes, message", [
    ({"diet.fractoins": [0.3]}, "sweep axis 'diet.fractoins' is not a config key"),
    ({"diet.fractions": []}, "must list at least one value"),
    ({"diet.fractions": [0.3, 0.3]}, "lists a value twice"),
    ({"replicate": [0, -1]}, "whole numbers >= 0"),
    ({"replicate": [0], "diet.seeds": [1, 2]}, "sweep either 'replicate' or 'diet.seeds'"),
    ({"diet.fractions": [0.3, 1.5]}, "sweep point 1 (fractions=1.5): kept fraction must be in (0, 1]"),
    ({"train.steps": ["many"]}, "cannot set train.steps = 'many'"),
    ({"lottery.seeds": [2]}, "lottery.seeds is set, but the diet experiment does not read the lottery section"),
    ({"diet.fractions": ["0.3"]}, "sweep point 0 (fractions=0.3): cannot set diet.fractions = ('0.3',): its "
                                  "elements must be float"),
    ({"model.widths": [[32.5]]}, "cannot set model.widths = (32.5,): its elements must be int"),
    ({"experiment": ["foo"]}, "'experiment' cannot be a sweep axis"),
])
def test_bad_sweeps_are_refused_in_one_line(tmp_path, capsys, axes, message):
    workdir = tmp_path / "sweep"
    rc = sweep.main(["sweep", "--config=configs/diet_mnist1d.py", f"--sweep={write_sweep(tmp_path, axes)}",
                     f"--workdir={workdir}"])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not workdir.exists()


def test_replicate_refused_for_an_experiment_without_replicates():
    with pytest.raises(LthError, match="does not stack the replicates of the train experiment; sweep 'seed'"):
        sweep.plan(config("train_mnist1d"), {"replicate": [0, 1]}, experiments.get("train"))


def test_a_missing_or_broken_sweep_file_is_refused(tmp_path, capsys):
    broken = tmp_path / "broken.py"
    broken.write_text("def get_sweep(:\n")
    for path, message in [(tmp_path / "none.py", "does not exist"), (broken, "has a syntax error at line 1")]:
        rc = sweep.main(["sweep", "--config=configs/diet_mnist1d.py", f"--sweep={path}", f"--workdir={tmp_path / 'w'}"])
        assert rc == 2 and message in capsys.readouterr().err
    rc = sweep.main(["sweep", "--config=configs/diet_mnist1d.py", f"--workdir={tmp_path / 'w'}"])
    assert rc == 2 and "--sweep" in capsys.readouterr().err


@pytest.mark.parametrize("config", ["configs/train_mnist1d.py", "configs/lottery_mnist1d.py"])
def test_sweep_overwrite_leaves_a_foreign_folder_alone(tmp_path, capsys, config):
    folder = tmp_path / "theirs"
    folder.mkdir()
    (folder / "config.json").write_text('{"experiment": "train"}')
    (folder / "weights.bin").write_bytes(b"\x00" * 16)
    rc = sweep.main(["sweep", f"--config={config}", f"--sweep={write_sweep(tmp_path, {'seed': [1, 2]})}",
                     f"--workdir={folder}", "--overwrite", "--config.train.steps=5"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "has a config.json but no lth_jax_run.json" in err, err
    assert sorted(os.listdir(folder)) == ["config.json", "weights.bin"]


def test_diet_sweep_killed_in_its_runs_resumes_identical(tmp_path):
    """16 points in 2 stacked runs (one per scoring length); killed while the
    first run draws its plots (summary.json comes after them), then inside the
    second run's fraction 0.5: the same command finishes the first run's files,
    skips it afterwards, resumes the second from its checkpoint and ends with the
    files of an uninterrupted sweep."""
    args = DIET + [f"--sweep={write_sweep(tmp_path, DIET_AXES)}", "--config.diet.fractions=(0.7,)",
                   "--config.train.steps=100", "--config.train.checkpoint_every=50"]
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    out = main_py(ref, args, program=SWEEP)
    assert out.returncode == 0, out.stderr[-3000:]
    last = killed_at_each(killed, args, ["runs/000/write:accuracy_vs_kept.png", "runs/001/metrics:fractions/0.5:50"],
                          program=SWEEP)
    first_run = last.stdout.split("sweep run 2 of 2")[0]
    assert first_run.startswith("sweep run 1 of 2 (score_epochs=0, fractions=0.3,0.5") and "): done" in first_run
    assert_same_outputs(ref, killed)

    assert sorted(os.listdir(ref / "runs")) == ["000", "001"]  # 16 points, 2 programs
    for run in ("000", "001"):
        cfg = json.loads((ref / "runs" / run / "config.json").read_text())
        assert cfg["diet"]["fractions"] == [0.3, 0.5] and cfg["diet"]["seeds"] == 2
        assert cfg["diet"]["selections"] == ["el2n:hardest", "random"]
    with open(ref / "points.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 16 and rows[0].keys() >= {"diet.score_epochs", "diet.fractions", "replicate", "test_accuracy"}
    for row in rows:  # each point is its run's member SELECTION/replicate at its fraction
        result = json.loads((ref / row["run"] / "fractions" / row["diet.fractions"] / "result.json").read_text())
        member = result["members"][f"{row['diet.selections']}/{row['replicate']}"]
        assert float(row["test_accuracy"]) == pytest.approx(member["final_test_accuracy"], abs=1e-12)
        assert int(row["kept"]) == result["kept"]
    summary = json.loads((ref / "summary.json").read_text())
    assert len(summary["table"]) == 8 and all(r["final test_accuracy (%)"].endswith("(n=2)") for r in summary["table"])
    by_point = {(r["diet.score_epochs"], r["diet.fractions"], r["diet.selections"]): [] for r in rows}
    for r in rows:
        by_point[(r["diet.score_epochs"], r["diet.fractions"], r["diet.selections"])].append(float(r["test_accuracy"]))
    first = summary["table"][0]
    values = by_point[(first["score_epochs"], first["fractions"], first["selections"])]
    assert first["final test_accuracy (%)"] == f"{100 * np.mean(values):.2f} ± {100 * np.std(values, ddof=1):.2f} (n=2)"
    assert (ref / "table.txt").read_text().count("\n") == 10  # header, rule, 8 rows
    os.remove(ref / "plots" / "sweep.png")
    assert report.redraw(str(ref)) == [str(ref / "plots" / "sweep.png")] and (ref / "plots" / "sweep.png").exists()

    again = main_py(ref, args, program=SWEEP)
    assert again.returncode == 2 and "holds a finished run" in again.stderr


def fake_run(folder, files: dict):
    for rel, obj in files.items():
        path = os.path.join(folder, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            json.dump(obj, f)
    return sweep.RunDir(str(folder))


def test_lottery_rows_series_table_and_redraw_with_tuple_values(tmp_path):
    """Replicate r's dense net and tickets at every level, its control, the
    sparsest ticket as headline; a tuple-valued axis survives summary.json."""
    cfg = config("lottery_mnist1d")
    cfg.lottery.levels, cfg.lottery.controls = 2, ("random_prune",)
    acc = {(level, r): 0.5 + 0.1 * level + 0.01 * r for level in range(3) for r in range(2)}
    files = {}
    for level in range(3):
        members = {}
        for r in range(2):
            kind = "dense" if level == 0 else "ticket"
            members[f"{kind}/{r}"] = {"density": 0.8 ** level, "final_test_accuracy": acc[level, r],
                                      "early_stop_test_accuracy": acc[level, r] - 0.05}
            if level:
                members[f"random_prune/{r}"] = {"final_test_accuracy": 0.3}
        files[f"levels/{level}/result.json"] = {"members": members}
    run = fake_run(tmp_path / "run", files)
    row = experiments.get("lottery").sweep_row(run, cfg, 1)
    assert row["L2_test_accuracy"] == acc[2, 1] == row["test_accuracy"] and row["density"] == pytest.approx(0.64)
    assert row["L0_early_stop_test_accuracy"] == pytest.approx(acc[0, 1] - 0.05) and row["L1_random_prune_test_accuracy"] == 0.3
    assert "L0_random_prune_test_accuracy" not in row and row["series"]["y"] == [acc[0, 1], acc[1, 1], acc[2, 1]]

    axes = {"model.widths": [(32,), (64,)], "replicate": [0, 1]}
    points = [{"point": i, "values": {"model.widths": w, "replicate": r}, "run": "runs/000", "replicate": r,
               "row": experiments.get("lottery").sweep_row(run, cfg, r)}
              for i, (w, r) in enumerate([((32,), 0), ((32,), 1), ((64,), 0), ((64,), 1)])]
    summary = sweep.summarize(points, axes, "lottery", 1.0)
    want = [acc[2, 0], acc[2, 1]]
    assert summary["table"][0] == {"widths": "(32,)", "final test_accuracy (%)": f"{100 * np.mean(want):.2f} ± "
                                   f"{100 * np.std(want, ddof=1):.2f} (n=2)", "% remaining": "64.00"}
    sweepdir = sweep.RunDir(str(tmp_path / "sweep"))
    sweep.write_json(sweepdir.file("config.json"), {"experiment": "sweep"})
    sweep.write_json(sweepdir.file("summary.json"), summary)  # tuples become lists here
    paths = report.redraw(sweepdir.path)
    assert [os.path.basename(p) for p in paths] == ["sweep.png", "sweep_density.png"]
    assert all(os.path.getsize(p) > 0 for p in paths)


def test_a_diet_point_covering_several_fractions_shows_each(tmp_path):
    """A learning-rate-only diet sweep: each point trains all of the config's
    fractions and selections; the table gets a column per (selection, fraction)."""
    cfg = config("diet_mnist1d")
    cfg.diet.fractions, cfg.diet.selections = (0.3, 1.0), ("random",)
    files = {f"fractions/{f}/result.json": {"kept": kept, "members": {
        f"{sel}/0": {"final_test_accuracy": a, "best_test_accuracy": a + 0.125}}}
        for f, kept, sel, a in [("0.3", 30, "random", 0.4), ("1", 100, "full", 0.6)]}
    row = experiments.get("diet").sweep_row(fake_run(tmp_path, files), cfg, 0)
    assert row == {"random@0.3/test_accuracy": 0.4, "random@0.3/best_test_accuracy": 0.4 + 0.125, "random@0.3/kept": 30,
                   "random@1/test_accuracy": 0.6, "random@1/best_test_accuracy": 0.6 + 0.125, "random@1/kept": 100}
    points = [{"point": 0, "values": {"optimizer.learning_rate": 1e-3}, "run": "runs/000", "replicate": 0, "row": row}]
    table = sweep.summarize(points, {"optimizer.learning_rate": [1e-3]}, "diet", 1.0)["table"]
    assert table == [{"learning_rate": "0.001", "final random@0.3/test_accuracy (%)": "40.00 (n=1)",
                      "final random@1/test_accuracy (%)": "60.00 (n=1)"}]
