"""The data diet, unit search, pruning at init and the measures grid, SIGKILLed
inside a stage, resume to the same files (in their own file so that
pytest-xdist runs them beside the lottery crash tests)."""

import json
import os
import shutil

import main as main_py
from crash import DIET, MEASURES, PRUNE_AT_INIT, UNIT, assert_same_outputs, killed_at_each, killed_then_resumed
from test_bad_input import check_one_line, snapshot


def test_diet_killed_while_scoring_and_inside_a_subset_resumes_identical(reference, tmp_path):
    ref = reference("diet", DIET)
    killed_at_each(tmp_path, DIET, ["metrics:scores:150", "metrics:fractions/0.5:150"])
    assert_same_outputs(ref, tmp_path)


def test_unit_search_killed_inside_a_sparsity_resumes_identical(reference, tmp_path):
    ref = reference("unit_search", UNIT)
    killed_then_resumed(tmp_path, UNIT, "metrics:sparsity/0.5:150")
    assert_same_outputs(ref, tmp_path)


def test_unit_search_full_disk_and_stops_in_its_final_writes_resume_identical(reference, tmp_path):
    """A full disk while the dense stage writes its parents (one line, exit 2),
    then SIGKILLed while drawing its first plot and Ctrl-C while drawing the
    second: summary.json, which marks the run finished, is written after every
    plot, so each time the same command resumes and writes what is missing."""
    ref = reference("unit_search", UNIT)
    killed_at_each(tmp_path, UNIT, [("write:parents.npz", "ENOSPC"), "write:unit_search.png",
                                    ("write:criterion.png", "SIGINT")])
    assert_same_outputs(ref, tmp_path)


def test_a_damaged_stage_result_before_a_resume_is_one_line_and_untouched(reference, tmp_path, capsys):
    """dense/result.json cut short in an unfinished run: one line, exit 2, nothing changed."""
    workdir = tmp_path / "run"
    shutil.copytree(reference("unit_search", UNIT), workdir)
    os.remove(workdir / "summary.json")
    result = workdir / "dense" / "result.json"
    result.write_bytes(result.read_bytes()[:40])
    before = snapshot(str(workdir))
    capsys.readouterr()
    rc = main_py.main(["main.py", "--workdir", str(workdir), *UNIT])
    check_one_line(rc, capsys.readouterr().err, f"{result} is not readable JSON")
    assert snapshot(str(workdir)) == before


def test_prune_at_init_killed_inside_a_density_resumes_identical(reference, tmp_path):
    ref = reference("prune_at_init", PRUNE_AT_INIT)
    killed_then_resumed(tmp_path, PRUNE_AT_INIT, "metrics:density/0.1:150")
    assert_same_outputs(ref, tmp_path)


def test_measures_killed_in_a_ticket_level_after_a_member_stopped_resumes_identical(reference, tmp_path):
    """Killed at step 150 of lottery level 1 (masks from level 0's final
    weights), after one member stopped at 100: the resumed run must keep it
    stopped (its checkpoint at 100 predates the freeze)."""
    ref = reference("measures", MEASURES)
    for level in (0, 1):
        members = json.load(open(ref / "groups" / f"a0_n0_L{level}" / "result.json"))["members"]
        assert [(m["reached_stop_loss"], m["stop_step"]) for m in members.values()] == [(False, 200), (True, 100)]
    killed_then_resumed(tmp_path, MEASURES, "metrics:groups/a0_n0_L1:150")
    assert_same_outputs(ref, tmp_path)
