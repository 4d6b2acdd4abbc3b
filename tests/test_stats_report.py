"""The spread every table reports (sample std with n, paired differences), and the report's markdown:
the tables of a run under the command and commit that made them."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from lth_jax import provenance, report, stats
from lth_jax.experiments import diet_report, lottery_report, unit_search_report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_spread_is_the_sample_std_with_n():
    s = stats.spread([0.5, 0.6, 0.7])
    assert s["std"] == pytest.approx(0.1) and s["n"] == 3 and s["mean"] == pytest.approx(0.6)
    assert stats.spread([0.4])["std"] is None and stats.pm(stats.spread([0.4])) == "40.00 (n=1)"
    assert stats.pm(s) == "60.00 ± 10.00 (n=3)"


def test_paired_difference_matches_replicates_and_a_paired_t_test():
    from scipy.stats import ttest_rel
    a, b = {0: 0.70, 1: 0.62, 2: 0.66, 7: 0.9}, {2: 0.60, 0: 0.61, 1: 0.60}  # replicate 7 has no partner
    d = stats.paired(a, b)
    assert d["replicates"] == [0, 1, 2] and d["n"] == 3
    assert d["mean"] == pytest.approx(np.mean([0.09, 0.02, 0.06]))
    assert d["std"] == pytest.approx(np.std([0.09, 0.02, 0.06], ddof=1))
    assert d["p"] == pytest.approx(ttest_rel([0.70, 0.62, 0.66], [0.61, 0.60, 0.60]).pvalue)
    assert stats.pm_diff(d).startswith("+5.67 ± ") and "n=3, p=" in stats.pm_diff(d)


def lottery_result(values: dict) -> dict:
    return {"members": {f"{kind}/{r}": {"early_stop_test_accuracy": v, "final_test_accuracy": v}
                        for kind, vs in values.items() for r, v in enumerate(vs)}}


def test_every_experiment_summary_reports_the_sample_std():
    """Today's main reported the population std (ddof 0), 18% too small at n = 3."""
    agg = lottery_report.aggregate(lottery_result({"ticket": [0.5, 0.6, 0.7]}))
    assert agg["ticket"]["final_test_accuracy"]["std"] == pytest.approx(0.1)
    results = [{"fraction": 0.5, "kept": 10, "members": {f"random/{r}": {"final_test_accuracy": v}
                                                        for r, v in enumerate([0.5, 0.6, 0.7])}}]
    summary = diet_report.summarize(results, {}, [], None, 1.0)
    assert summary["test_accuracy"]["random"]["0.5"]["std"] == pytest.approx(0.1)
    members = {f"{g}/{r}": {"early_stop_test_accuracy": v, "early_stop_step": 10, "final_test_accuracy": v,
                            "criterion": v, "units_kept": 4}
               for r, v in enumerate([0.5, 0.6, 0.7]) for g in ("candidate_0", "random_0", "magnitude")}
    res = {"sparsity": 0.5, "members": members, "chosen": {
        "searched": [f"candidate_0/{r}" for r in range(3)], "random": [f"random_0/{r}" for r in range(3)],
        "magnitude": [f"magnitude/{r}" for r in range(3)]}}
    dense = {"members": {f"dense/{r}": members[f"magnitude/{r}"] for r in range(3)}}
    s = unit_search_report.summarize(dense, [res], {("a",): 8}, 1.0)
    assert s["levels"][0]["groups"]["searched"]["final_test_accuracy"]["std"] == pytest.approx(0.1)
    assert s["dense"]["final_test_accuracy"]["std"] == pytest.approx(0.1)


def test_lottery_tables_say_which_accuracy_and_pair_the_arms():
    levels = []
    for level, kinds in enumerate([{"dense": [0.60, 0.62, 0.58]},
                                   {"ticket": [0.66, 0.70, 0.65], "reinit": [0.63, 0.66, 0.64]}]):
        res = lottery_result(kinds)
        for m in res["members"].values():
            m.update(density=1.0 - 0.2 * level, density_all=1.0, early_stop_step=100)
        levels.append({"level": level, "kinds": lottery_report.aggregate(res), "density": 1.0 - 0.2 * level})
    tables = lottery_report.tables({"levels": levels})
    titles = [t["title"] for t in tables]
    assert titles[0].startswith("Test accuracy (%) at the early-stopping iteration")
    assert titles[1].startswith("Test accuracy (%) after the last step")
    row = tables[0]["rows"][1]
    assert row["ticket"] == "67.00 ± 2.65 (n=3)"
    assert row["ticket - dense"].startswith("+7.00 ± 1.00 (n=3, p=")  # per replicate: +6, +8, +7
    assert row["ticket - reinit"].startswith("+2.67 ± 1.53 (n=3, p=")  # per replicate: +3, +4, +1


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("report") / "run"
    args = ["--config=configs/train_mnist1d.py", f"--workdir={workdir}", "--config.train.steps=20",
            "--config.train.eval_every=10", "--config.train.checkpoint_every=10",
            "--config.data.source.num_samples=600", "--config.data.validation_size=100", "--config.model.widths=(16,)",
            "--noprogress"]
    run = subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    return workdir, args


def test_summary_records_command_commit_config_hash_and_versions(finished_run):
    workdir, args = finished_run
    summary = json.loads((workdir / "summary.json").read_text())
    prov = summary["provenance"]
    assert prov["command"].startswith("python main.py --config=configs/train_mnist1d.py")
    assert prov["command"].endswith("--noprogress")
    config = json.loads((workdir / "config.json").read_text())
    assert prov["config_sha256"] == provenance.config_hash(config)
    assert prov["versions"]["jax"] and prov["versions"]["lth_jax"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    if head:  # a git checkout (CI's clone is one)
        assert prov["commit"] == head and isinstance(prov["dirty"], bool)


def test_report_markdown_prints_command_commit_and_tables(finished_run, capsys):
    workdir, _ = finished_run
    assert report.main([str(workdir), "--markdown"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("    python main.py --config=configs/train_mnist1d.py")
    assert "config sha256" in lines[2]
    assert "| step |" in out and "test_accuracy" in out
    assert report.main([str(workdir), "--bogus"]) == 2


def test_report_markdown_refuses_an_unfinished_run(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"experiment": "lottery"}))
    assert report.main([str(tmp_path), "--markdown"]) == 2
    assert "unfinished" in capsys.readouterr().err
