"""The data diet, unit search, pruning at init and the measures grid, SIGKILLed inside a stage, resume to the same files
(in their own file so that pytest-xdist runs them beside the lottery crash tests)."""
import pytest

from crash import DIET, MEASURES, PRUNE_AT_INIT, UNIT, assert_same_outputs, killed_then_resumed


@pytest.mark.parametrize("kill_at", ["metrics:scores:150", "metrics:fractions/0.5:150"])
def test_diet_killed_resumes_identical(reference, tmp_path, kill_at):
    ref = reference("diet", DIET)
    killed_then_resumed(tmp_path, DIET, kill_at)
    assert_same_outputs(ref, tmp_path)


def test_unit_search_killed_inside_a_sparsity_resumes_identical(reference, tmp_path):
    ref = reference("unit_search", UNIT)
    killed_then_resumed(tmp_path, UNIT, "metrics:sparsity/0.5:150")
    assert_same_outputs(ref, tmp_path)


def test_prune_at_init_killed_inside_a_density_resumes_identical(reference, tmp_path):
    ref = reference("prune_at_init", PRUNE_AT_INIT)
    killed_then_resumed(tmp_path, PRUNE_AT_INIT, "metrics:density/0.1:150")
    assert_same_outputs(ref, tmp_path)


def test_measures_killed_inside_a_group_resumes_identical(reference, tmp_path):
    ref = reference("measures", MEASURES)
    killed_then_resumed(tmp_path, MEASURES, "metrics:groups/a0_n0:150")
    assert_same_outputs(ref, tmp_path)
