"""Bad input through main.py: exit code 2, one line on stderr, no traceback, and
the workdir untouched (or never created)."""
import gzip
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import main as main_py
from crash import ROOT
from lth_jax import robustness
from lth_jax.data.idx import write_idx
from lth_jax.workdir import MARKER

QUICK = ["--config.train.steps=5", "--config.train.eval_every=5", "--config.train.checkpoint_every=5"]
TRAIN = ["--config=configs/train_mnist1d.py"] + QUICK
DIET = ["--config=configs/diet_mnist1d.py"] + QUICK


def idx_dir(path, labels=(0, 1, 2, 3), damaged_gz=False):
    os.makedirs(path, exist_ok=True)
    x = np.zeros((len(labels), 4, 4), np.uint8)
    for split in ("train", "t10k"):
        write_idx(os.path.join(path, f"{split}-images-idx3-ubyte"), x)
        write_idx(os.path.join(path, f"{split}-labels-idx1-ubyte"), np.asarray(labels, np.uint8))
    if damaged_gz:
        good = gzip.compress(open(os.path.join(path, "train-images-idx3-ubyte"), "rb").read())
        os.remove(os.path.join(path, "train-images-idx3-ubyte"))
        with open(os.path.join(path, "train-images-idx3-ubyte.gz"), "wb") as f:
            f.write(good[:12] + b"\x00garbage" * 4)
    return path


def fake_run(path, finished=False, config=None, marked=False, config_text=None):
    """A run's folder: config.json (or `config_text` as it), summary.json when
    `finished`, the marker of lth_jax when `marked` (runs made before it have none)."""
    os.makedirs(path)
    write(os.path.join(path, "config.json"), config_text if config_text is not None else
          json.dumps(config or {"experiment": "diet", "seed": 1}))
    if finished:
        json.dump({"experiment": "diet"}, open(os.path.join(path, "summary.json"), "w"))
    if marked:
        write(os.path.join(path, MARKER), "{}")
    return path


def with_file(folder, name, text="mine"):
    write(os.path.join(folder, name), text)
    return folder


def foreign(tmp, name, config_text):
    """Someone else's folder with a config.json and other files."""
    path = fake_run(os.path.join(tmp, name), config_text=config_text)
    return with_file(with_file(path, "weights.bin", "\x00" * 16), "README.md", "my model")


FOREIGN_CONFIGS = {"plain text": "learning rate 0.1", "empty JSON": "{}", "not JSON": "{'lr': 0.1",
                   "lth_jax-like": json.dumps({"experiment": "lottery", "seed": 0, "train": {"steps": 5}})}


def scores_for_another_data_seed(tmp):
    """A scores file made for MNIST-1D with data_seed 42: same indices as seed 7, other examples."""
    from lth_jax import data
    from lth_jax.experiments import diet
    ds = data.load("mnist1d", validation_size=500, seed=0, data_seed=42)
    path = os.path.join(tmp, "scores.npz")
    diet.save_scores(path, ds.train_indices, {"el2n": np.ones((1, len(ds.y_train)))}, ds.fingerprint())
    return path


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


# id -> (function(tmp) -> extra argv (may set up files), fragment of the one error line)
CASES = {
    "unknown model": (lambda t: ["--config.model.name=lenet5"], "unknown model 'lenet5'; valid names:"),
    "unknown dataset": (lambda t: ["--config.data.name=svhn"], "unknown dataset 'svhn'"),
    "unknown optimizer": (lambda t: ["--config.optimizer.name=lion"], "unknown optimizer 'lion'"),
    "unknown experiment": (lambda t: ["--config.experiment=prune"], "unknown experiment 'prune'"),
    "batch larger than data": (lambda t: ["--config.train.batch_size=100000"], "larger than the training set"),
    "unknown key": (lambda t: ["--config.nonexistent=1"], "the config has no key"),
    "unknown key, explicit config": (lambda t: ["--config=configs/train_mnist1d.py", "--config.train.stepz=3"],
                                     "the config has no key"),
    "wrong type": (lambda t: ["--config.train.steps=abc"], "--config.train.steps=abc"),
    "config syntax error": (lambda t: [f"--config={write(os.path.join(t, 'bad.py'), 'def get_config(:')}"],
                            "has a syntax error at line 1"),
    "config file missing": (lambda t: [f"--config={os.path.join(t, 'none.py')}"], "cannot load --config"),
    "positional argument": (lambda t: ["stray"], "unexpected arguments: stray"),
    "num_samples too small": (lambda t: ["--config.data.source.num_samples=5"], "num_samples=5 for mnist1d"),
    "MNIST without a directory": (lambda t: ["--config.data.name=mnist"], "MNIST needs a directory"),
    "damaged .gz": (lambda t: ["--config.data.name=mnist",
                               f"--config.data.data_dir={idx_dir(os.path.join(t, 'gz'), damaged_gz=True)}"],
                    "cannot read IDX file"),
    "labels out of range": (lambda t: ["--config.data.name=fashion_mnist", "--config.data.validation_size=1",
                                       f"--config.data.data_dir={idx_dir(os.path.join(t, 'l'), (0, 1, 199, 3))}"],
                            "labels must be in [0, 10), the training split has 199"),
    "mask not an npz": (lambda t: TRAIN + [f"--config.mask.path={write(os.path.join(t, 'm.npz'), 'text')}"],
                        "is not a readable .npz"),
    "mask empty": (lambda t: TRAIN + [f"--config.mask.path={write(os.path.join(t, 'e.npz'), '')}"],
                   "is not a readable .npz"),
    "mask a directory": (lambda t: TRAIN + [f"--config.mask.path={t}"], "is a directory"),
    "mask missing": (lambda t: TRAIN + [f"--config.mask.path={os.path.join(t, 'no.npz')}"], "does not exist"),
    "mask given to lottery": (lambda t: ["--config.mask.path=m.npz"],
                              "mask.path is set, but the lottery experiment does not read the mask section"),
    "mask given to diet": (lambda t: DIET + ["--config.mask.path=m.npz"],
                           "mask.path is set, but the diet experiment does not read"),
    "unit_search keep above candidates": (lambda t: ["--config=configs/unit_search_mnist1d.py",
                                                     "--config.unit_search.keep=99"], "unit_search.keep (B) must be"),
    "unit_search key for a lottery run": (lambda t: ["--config.unit_search.candidates=8"],
                                          "unit_search.candidates is set, but the lottery experiment does not read"),
    "lottery key for train": (lambda t: TRAIN + ["--config.lottery.levels=3"],
                              "lottery.levels is set, but the train experiment"),
    "checkpoint_every 0": (lambda t: ["--config.train.checkpoint_every=0"], "checkpoint_every must be >= 1"),
    "checkpoint_every off the evaluations": (lambda t: ["--config.train.checkpoint_every=7"],
                                             "must be a multiple of train.eval_every"),
    "eval_batch_size -1": (lambda t: ["--config.train.eval_batch_size=-1"], "eval_batch_size must be >= 1, or 0"),
    "steps 0": (lambda t: ["--config.train.steps=0"], "train.steps must be >= 1"),
    "lottery fraction": (lambda t: ["--config.lottery.fraction=1.5"], "fraction must be in (0, 1)"),
    "lottery without validation": (lambda t: ["--config.data.validation_size=0"], "needs a validation split"),
    "diet members 0": (lambda t: DIET + ["--config.diet.members=0"], "diet.members (K, the scoring ensemble size)"),
    "diet scores missing": (lambda t: DIET + [f"--config.diet.scores_path={os.path.join(t, 'no.npz')}"],
                            "scores file"),
    "tuple of the wrong elements": (lambda t: ["--config=configs/unit_search_mnist1d.py",
                                               "--config.unit_search.sparsities=('a',)"],
                                    "cannot set unit_search.sparsities = ('a',): its elements must be float"),
    "densities not numbers": (lambda t: ["--config=configs/prune_at_init_mnist1d.py",
                                         "--config.prune_at_init.densities=('x',)"],
                              "cannot set prune_at_init.densities = ('x',): its elements must be float"),
    "min_units above the units kept": (lambda t: ["--config=configs/unit_search_mnist1d.py",
                                                  "--config.unit_search.criterion_step=5",
                                                  "--config.unit_search.scope=global",
                                                  "--config.unit_search.min_units=400"],
                                       "unit_search.min_units = 400 per layer is more than the"),
    "measures model unknown": (lambda t: ["--config=configs/measures_mnist1d.py", "--config.measures.widths=()",
                                          "--config.measures.models=('foo',)"], "unknown model 'foo'"),
    "scores for another data seed": (lambda t: [
        "--config=configs/lottery_diet_mnist1d.py", "--config.data.source.data_seed=7", "--config.lottery.rewind_step=1",
        f"--config.lottery.pretrain_scores={scores_for_another_data_seed(t)}"], "computed on other training examples"),
}

# id -> (function(tmp) -> (workdir, extra argv), fragment): cases about the workdir itself
WORKDIR_CASES = {
    "not a run, not empty": (lambda t: (write_dir(t, "notes"), []), "holds no lth_jax run"),
    "not a run, --overwrite": (lambda t: (write_dir(t, "notes2"), ["--overwrite"]), "holds no lth_jax run"),
    "cannot be created": (lambda t: (os.path.join(write(os.path.join(t, "f"), "x"), "sub"), []),
                          "cannot create workdir"),
    "a file": (lambda t: (write(os.path.join(t, "g"), "x"), []), "exists and is not a directory"),
    "unfinished run, other config": (lambda t: (fake_run(os.path.join(t, "u")), DIET), "different config"),
    "finished run": (lambda t: (fake_run(os.path.join(t, "fin"), finished=True), []),
                     "raise lottery.levels to extend it"),
    "--overwrite with bad scores_path": (
        lambda t: (fake_run(os.path.join(t, "ow"), finished=True),
                   DIET + ["--overwrite", f"--config.diet.scores_path={os.path.join(t, 'no.npz')}"]), "scores file"),
    "--overwrite, a run holding other files": (
        lambda t: (with_file(fake_run(os.path.join(t, "mine"), finished=True, marked=True), "my_notes.txt"),
                   ["--overwrite"]), "holds files no run of lth_jax writes (my_notes.txt)"),
    "--overwrite, a run made before the marker": (lambda t: (fake_run(os.path.join(t, "old"), finished=True),
                                                             ["--overwrite"]), f"has a config.json but no {MARKER}"),
    "config.json cut short": (lambda t: (fake_run(os.path.join(t, "cut"), marked=True, config_text='{"experim'), []),
                              "config.json is not readable JSON (Unterminated string"),
    "config.json a list": (lambda t: (fake_run(os.path.join(t, "list"), marked=True, config_text="[1, 2]"), []),
                           "config.json holds a JSON list, not the config of a run"),
    **{f"foreign config.json, {kind}, --overwrite": (
        lambda t, text=text, i=i: (foreign(t, f"f{i}", text), ["--overwrite"]), f"has a config.json but no {MARKER}")
       for i, (kind, text) in enumerate(FOREIGN_CONFIGS.items())},
    **{f"foreign config.json, {kind}": (
        lambda t, text=text, i=i: (foreign(t, f"f{i}", text), []),
        "different config" if kind == "lth_jax-like" else "holds no lth_jax run")
       for i, (kind, text) in enumerate(FOREIGN_CONFIGS.items())},
}


def write_dir(tmp, name):
    path = os.path.join(tmp, name)
    os.makedirs(path)
    write(os.path.join(path, "notes.txt"), "mine")
    return path


def snapshot(path):
    if not os.path.exists(path):
        return None
    if os.path.isfile(path):
        return open(path, "rb").read()
    return {os.path.relpath(os.path.join(d, f), path): open(os.path.join(d, f), "rb").read()
            for d, _, fs in os.walk(path) for f in fs}


def command(workdir, args):
    """main.py's argv: a --config file first (ml_collections wants it before overrides), then QUICK, then args."""
    files = [a for a in args if a.startswith("--config=")]
    return ["main.py", "--workdir", workdir, *files, *QUICK, *[a for a in args if a not in files], "--noprogress"]


def check_one_line(rc, err, fragment):
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], err
    assert "Traceback" not in err


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line(tmp_path, capsys, case):
    make_args, fragment = CASES[case]
    args = make_args(str(tmp_path))
    workdir = str(tmp_path / "run")
    capsys.readouterr()
    rc = main_py.main(command(workdir, args))
    check_one_line(rc, capsys.readouterr().err, fragment)
    assert not os.path.exists(workdir)


@pytest.mark.parametrize("case", list(WORKDIR_CASES))
def test_bad_workdir_is_one_line_and_untouched(tmp_path, capsys, case):
    make, fragment = WORKDIR_CASES[case]
    workdir, args = make(str(tmp_path))
    before = snapshot(workdir)
    capsys.readouterr()
    rc = main_py.main(command(workdir, args))
    check_one_line(rc, capsys.readouterr().err, fragment)
    assert snapshot(workdir) == before


def test_bad_input_in_a_subprocess_prints_no_traceback(tmp_path):
    """The same path as a user's shell: a syntax error in the config file."""
    bad = write(str(tmp_path / "bad.py"), "def get_config(:\n")
    out = subprocess.run([sys.executable, "main.py", f"--config={bad}", "--workdir", str(tmp_path / "w")],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    check_one_line(out.returncode, out.stderr, "has a syntax error at line 1")


def test_report_on_an_unfinished_lottery_run(tmp_path, capsys):
    from lth_jax import report
    workdir = fake_run(str(tmp_path / "lt"), config={"experiment": "lottery"})
    assert report.main([workdir]) == 2
    check_one_line(2, capsys.readouterr().err, "holds an unfinished lottery run (no summary.json)")
    assert report.main([str(tmp_path / "nothing")]) == 2
    check_one_line(2, capsys.readouterr().err, "is not a lth_jax workdir")


def test_overwrite_replaces_only_a_run(tmp_path, capsys):
    workdir = str(tmp_path / "run")
    args = ["main.py", "--workdir", workdir, *TRAIN, "--config.data.source.num_samples=1000", "--noprogress"]
    assert main_py.main(args) == 0
    assert main_py.main(args) == 2 and "finished run" in capsys.readouterr().err
    write(os.path.join(workdir, "notes.txt"), "mine")
    before = snapshot(workdir)
    assert main_py.main(args + ["--overwrite"]) == 2
    check_one_line(2, capsys.readouterr().err, "holds files no run of lth_jax writes (notes.txt)")
    assert snapshot(workdir) == before
    os.remove(os.path.join(workdir, "notes.txt"))
    write(os.path.join(workdir, "plots", "stale.png"), "from the old run")
    assert main_py.main(args + ["--overwrite"]) == 0
    assert not os.path.exists(os.path.join(workdir, "plots", "stale.png"))
    assert os.path.exists(os.path.join(workdir, "summary.json")) and os.path.exists(os.path.join(workdir, MARKER))


def test_a_run_made_before_the_marker_resumes_but_is_not_replaced(tmp_path, capsys):
    """Runs of an lth_jax older than the marker: --overwrite refuses them; the
    same command resumes them (their config is the run's own) and adds the marker."""
    workdir = str(tmp_path / "run")
    args = ["main.py", "--workdir", workdir, *TRAIN, "--config.data.source.num_samples=1000", "--noprogress"]
    assert main_py.main(args) == 0
    os.remove(os.path.join(workdir, MARKER))
    os.remove(os.path.join(workdir, "summary.json"))
    capsys.readouterr()
    assert main_py.main(args + ["--overwrite"]) == 2
    check_one_line(2, capsys.readouterr().err, f"has a config.json but no {MARKER}")
    assert main_py.main(args) == 0
    assert os.path.exists(os.path.join(workdir, "summary.json")) and os.path.exists(os.path.join(workdir, MARKER))


@pytest.mark.parametrize("examples", ["0", "-5"])
def test_robustness_needs_test_examples(tmp_path, capsys, examples):
    workdir = str(tmp_path / "lt")
    assert robustness.main([workdir, "--examples", examples]) == 2
    check_one_line(2, capsys.readouterr().err, f"must be >= 1, got {examples}")
    assert not os.path.exists(workdir)
