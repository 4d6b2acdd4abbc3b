"""experiment = "prune_at_init": masks at initialisation, their controls, the
comparison with IMP tickets, and its errors."""
import json
import os

import numpy as np
import pytest

from configs import default, prune_at_init_mnist1d
from lth_jax.errors import LthError
from lth_jax.experiments import lottery, prune_at_init


def tiny(**over):
    c = prune_at_init_mnist1d.get_config()
    c.data.source.num_samples = 600
    c.data.validation_size = 100
    c.model.widths = (24, 16)
    c.train.steps = 40
    c.train.batch_size = 50
    c.train.eval_every = 10
    c.train.checkpoint_every = 20
    c.prune_at_init.densities = (0.5, 0.02)
    c.prune_at_init.seeds = 1
    c.prune_at_init.synflow_rounds = 10
    for k, v in over.items():
        section, key = k.split("__")
        c[section][key] = v
    return c


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    ticket_cfg = default.get_config()
    for section in ("data", "model"):
        ticket_cfg[section] = tiny()[section]
    ticket_cfg.train.steps, ticket_cfg.train.eval_every, ticket_cfg.train.checkpoint_every = 40, 10, 20
    ticket_cfg.lottery.levels, ticket_cfg.lottery.seeds, ticket_cfg.lottery.controls = 3, 1, ()
    tickets = str(tmp_path_factory.mktemp("tickets"))
    lottery.run(ticket_cfg, tickets, progress=False)
    cfg = tiny(prune_at_init__lottery_workdir=tickets)
    workdir = str(tmp_path_factory.mktemp("pai"))
    return cfg, workdir, prune_at_init.run(cfg, workdir, progress=False)


def load(path):
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def test_every_method_and_control_trains_at_every_density(finished, capsys):
    cfg, workdir, summary = finished
    methods = list(cfg.prune_at_init.methods)
    kinds = methods + [f"{m}+{c}" for m in methods for c in ("shuffle", "reinit")]
    assert [e["density"] for e in summary["levels"]] == [0.5, 0.02]
    for e in summary["levels"]:
        assert sorted(e["kinds"]) == sorted(kinds)
        assert all(0.05 < e["kinds"][k]["early_stop_test_accuracy"]["mean"] <= 1 for k in kinds)
    assert [t["density"] for t in summary["lottery"]] == pytest.approx([0.8 ** k for k in range(4)], abs=0.01)
    for name in ("summary.json", "plots/prune_at_init.png", "density/0.5/result.json", "density/0.02/done"):
        assert os.path.exists(os.path.join(workdir, name)), name


def test_masks_keep_the_density_and_controls_keep_the_layer_counts(finished):
    cfg, workdir, _ = finished
    for d in cfg.prune_at_init.densities:
        result = json.load(open(os.path.join(workdir, "density", f"{d:g}", "result.json")))
        for m in cfg.prune_at_init.methods:
            mask = load(os.path.join(workdir, "density", f"{d:g}", f"mask_{m}_r0.npz"))
            kernels = [k for k in mask if k.endswith("kernel")]
            total = sum(mask[k].size for k in kernels)
            assert sum(int(mask[k].sum()) for k in kernels) == int(np.floor(d * total + 0.5)), (m, d)
            assert all(mask[k].all() for k in mask if k.endswith("bias"))
            own = result["members"][f"{m}/0"]
            for c in ("shuffle", "reinit"):  # the same number of weights in every layer
                assert result["members"][f"{m}+{c}/0"]["density_per_leaf"] == own["density_per_leaf"]
        # the methods disagree: SynFlow's mask is not magnitude's
        syn, mag = (load(os.path.join(workdir, "density", f"{d:g}", f"mask_{m}_r0.npz")) for m in ("synflow", "magnitude"))
        assert any((syn[k] != mag[k]).any() for k in syn)


def test_layer_collapse_is_recorded(finished):
    _, workdir, summary = finished
    low = summary["levels"][1]
    result = json.load(open(os.path.join(workdir, "density", "0.02", "result.json")))
    for kind, count in low["layer_collapse"].items():
        mask = result["members"][f"{kind}/0"]["density_per_leaf"]
        assert count == int(any(v == 0 for k, v in mask.items() if k.endswith("kernel"))), kind


def test_report_and_table(finished, capsys):
    from lth_jax import report
    _, workdir, summary = finished
    os.remove(os.path.join(workdir, "plots", "prune_at_init.png"))
    assert report.main([workdir]) == 0
    assert os.path.getsize(os.path.join(workdir, "plots", "prune_at_init.png")) > 10_000
    prune_at_init.prune_at_init_report.print_summary(summary)
    out = capsys.readouterr().out
    assert "IMP ticket (nearest level)" in out and "shuffle" in out and "reinit" in out


@pytest.mark.parametrize("over, message", [
    (dict(prune_at_init__methods=("snip", "obd")), "unknown prune_at_init method 'obd'"),
    (dict(prune_at_init__controls=("shuffled",)), "unknown prune_at_init control"),
    (dict(prune_at_init__densities=(0.1, 1.0)), "density must be in (0, 1)"),
    (dict(prune_at_init__densities=(0.1, 0.1)), "lists a value twice"),
    (dict(prune_at_init__distribution="erdos"), "distribution must be one of global, uniform, erk"),
    (dict(prune_at_init__batches=0), "batches must be >= 1"),
    (dict(prune_at_init__lottery_workdir="/nonexistent"), "is not a lth_jax workdir"),
    (dict(data__validation_size=0), "needs a validation split"),
])
def test_bad_config(tmp_path, over, message):
    with pytest.raises(LthError) as e:
        prune_at_init.run(tiny(**over), str(tmp_path / "bad"), progress=False)
    assert message in str(e.value)
    assert not os.path.exists(tmp_path / "bad")


def test_lottery_workdir_of_another_model_is_refused(finished, tmp_path):
    cfg, _, _ = finished
    other = tiny(prune_at_init__lottery_workdir=cfg.prune_at_init.lottery_workdir, model__widths=(32, 16))
    with pytest.raises(LthError, match="trained another model"):
        prune_at_init.run(other, str(tmp_path / "x"), progress=False)
    assert not os.path.exists(tmp_path / "x")


@pytest.mark.skipif(not os.path.isdir("/usr/share/datasets/fashion-mnist"), reason="apt-get install dataset-fashion-mnist")
def test_shuffled_snip_keeps_accuracy_at_ten_percent_on_fashion_mnist(tmp_path):
    """Frankle et al. 2021's sanity check, the issue's acceptance figure:
    LeNet-300-100 at 10% density, shuffled SNIP masks within 1 point of
    SNIP's own (a shorter schedule than configs/prune_at_init_lenet300_fashion.py)."""
    from configs import prune_at_init_lenet300_fashion
    cfg = prune_at_init_lenet300_fashion.get_config()
    cfg.train.steps, cfg.train.eval_every, cfg.train.checkpoint_every = 1000, 250, 1000
    cfg.prune_at_init.methods, cfg.prune_at_init.controls = ("snip",), ("shuffle",)
    cfg.prune_at_init.densities, cfg.prune_at_init.seeds = (0.1,), 2
    summary = prune_at_init.run(cfg, str(tmp_path / "fashion"), progress=False)
    kinds = summary["levels"][0]["kinds"]
    own, shuffled = (kinds[k]["early_stop_test_accuracy"]["mean"] for k in ("snip", "snip+shuffle"))
    assert own > 0.8, own  # trained: well above chance
    assert abs(own - shuffled) < 0.01, (own, shuffled)
