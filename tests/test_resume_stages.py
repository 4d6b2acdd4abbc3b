"""The data diet, unit search, pruning at init and the measures grid, SIGKILLed
inside a stage, resume to the same files (in their own file so that
pytest-xdist runs them beside the lottery crash tests)."""

import json

from crash import DIET, MEASURES, PRUNE_AT_INIT, UNIT, assert_same_outputs, killed_at_each, killed_then_resumed


def test_diet_killed_while_scoring_and_inside_a_subset_resumes_identical(reference, tmp_path):
    ref = reference("diet", DIET)
    killed_at_each(tmp_path, DIET, ["metrics:scores:150", "metrics:fractions/0.5:150"])
    assert_same_outputs(ref, tmp_path)


def test_unit_search_killed_inside_a_sparsity_resumes_identical(reference, tmp_path):
    ref = reference("unit_search", UNIT)
    killed_then_resumed(tmp_path, UNIT, "metrics:sparsity/0.5:150")
    assert_same_outputs(ref, tmp_path)


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
