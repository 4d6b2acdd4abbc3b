"""Run an experiment from an ml_collections config.

    python main.py --config configs/X.py --workdir DIR [--config.a.b=value] [--overwrite]
"""
import os
import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags

HERE = os.path.dirname(os.path.abspath(__file__))
FLAGS = flags.FLAGS


def define_flags(argv) -> None:
    """Define the flags; an override of a key the config lacks gets one line, not a traceback."""
    try:
        config_flags.DEFINE_config_file("config", os.path.join(HERE, "configs", "default.py"),
                                        "experiment config file", lock_config=True)
    except (AttributeError, KeyError) as e:
        keys = [m.group(1) for a in argv if (m := re.match(r"--config\.([\w.]+)=?", a))]
        print(f"error: the config has no key {str(e).strip(chr(34)+chr(39))!r} (overrides given: "
              f"{', '.join(keys)}); check the spelling against the config file", file=sys.stderr)
        sys.exit(2)
    flags.DEFINE_string("workdir", "runs/default", "where the run's files go; an unfinished run there is resumed")
    flags.DEFINE_bool("overwrite", False, "replace a finished run in --workdir")
    flags.DEFINE_bool("progress", True, "show progress bars")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO
    from lth_jax import experiments
    from lth_jax.errors import LthError
    from lth_jax.loop import Diverged
    try:
        cfg = FLAGS.config
        experiment = cfg.experiment
    except OSError as e:
        print(f"error: cannot load --config: {str(e).splitlines()[-1].strip()}", file=sys.stderr)
        return 2
    try:
        experiments.get(experiment).run(cfg, FLAGS.workdir, overwrite=FLAGS.overwrite, progress=FLAGS.progress)
    except LthError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Diverged as e:
        print(f"error: {e}; the last good checkpoint is kept in {FLAGS.workdir}/checkpoints; lower the "
              "learning rate or check the data, then start a new --workdir", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    define_flags(sys.argv)
    app.run(lambda argv: sys.exit(main(argv)))
