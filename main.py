"""Run an experiment from an ml_collections config.

    python main.py --config configs/X.py --workdir DIR [--config.a.b=value] [--overwrite]

Several processes (see README "Several devices and hosts"): start the same
command in each, with --config.parallel.distributed=True where the cluster
tells JAX who is who (Cloud TPU VMs, SLURM), or with --coordinator=HOST:PORT
--num_processes=N --process_id=I.

Exit codes: 0 done; 2 bad input (one line on stderr, nothing in the workdir
created or deleted); 3 training diverged; 130 interrupted (Ctrl-C), resumable.
"""
import os
import re
import sys

from absl import flags, logging
from ml_collections import config_flags

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CONFIG = os.path.join(HERE, "configs", "default.py")


class BadInput(Exception):
    """A command line we refuse; the message is the one line to print."""


def first_line(e: BaseException) -> str:
    text = str(e).strip().strip("\"'")
    return (text.splitlines() or [type(e).__name__])[0]


def parse(argv):
    """(config, workdir, overwrite, progress, processes) from the command line, or BadInput."""
    saved, sys.argv = sys.argv, list(argv)  # config_flags reads the overrides it defines from sys.argv
    try:
        return _parse(argv)
    finally:
        sys.argv = saved


def _parse(argv):
    fv = flags.FlagValues()
    try:
        config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "experiment config file", flag_values=fv,
                                        lock_config=True)
        flags.DEFINE_string("workdir", "runs/default", "where the run's files go; an unfinished run there is "
                            "resumed", flag_values=fv)
        flags.DEFINE_bool("overwrite", False, "replace the lth_jax run in --workdir", flag_values=fv)
        flags.DEFINE_bool("progress", True, "progress bars (on a terminal) or one line per evaluation",
                          flag_values=fv)
        flags.DEFINE_string("coordinator", "", "HOST:PORT of process 0 in a run of several processes",
                            flag_values=fv)
        flags.DEFINE_integer("num_processes", 0, "how many processes (with --coordinator)", flag_values=fv)
        flags.DEFINE_integer("process_id", -1, "this process's id, 0 .. num_processes - 1 (with --coordinator)",
                             flag_values=fv)
        if any(a in ("-h", "--help", "--helpfull", "-?") for a in argv[1:]):
            raise SystemExit(print(__doc__ + "\n" + fv.get_help()))
        rest = fv(argv)
        if len(rest) > 1:
            raise BadInput(f"unexpected arguments: {' '.join(rest[1:])}; options are --config, --config.KEY=VALUE, "
                           "--workdir, --overwrite, --noprogress")
        cfg = fv.config
        cfg.experiment  # an unloadable config file raises here
    except BadInput:
        raise
    except SyntaxError as e:
        raise BadInput(f"the config file {e.filename} has a syntax error at line {e.lineno}: {e.msg}") from None
    except (KeyError, AttributeError) as e:
        keys = [m.group(1) for a in argv if (m := re.match(r"--config\.([\w.]+)=?", a))]
        raise BadInput(f"the config has no key {first_line(e)!r} (overrides given: {', '.join(keys) or 'none'}); "
                       "check the spelling against configs/base.py") from None
    except flags.Error as e:
        raise BadInput(f"{first_line(e)}; see python main.py --helpfull") from None
    except (OSError, ImportError, TypeError, ValueError) as e:
        raise BadInput(f"cannot load --config: {first_line(e)}") from None
    processes = {"coordinator": fv.coordinator, "num_processes": fv.num_processes, "process_id": fv.process_id}
    return cfg, fv.workdir, fv.overwrite, fv.progress, processes


def check_ignored_sections(cfg) -> None:
    """A key set in a section the chosen experiment does not read is an error."""
    sys.path.insert(0, HERE)
    from configs import base
    from lth_jax import experiments
    defaults = base.get_config()
    for section in experiments.IGNORED_SECTIONS.get(cfg.experiment, ()):
        ours, default = cfg[section].to_dict(), defaults[section].to_dict()
        for key in sorted(ours):
            if ours[key] != default.get(key):
                raise BadInput(f"{section}.{key} is set, but the {cfg.experiment} experiment does not read the "
                               f"{section} section; remove it, or choose the experiment that uses it")


def main(argv) -> int:
    logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO
    try:
        cfg, workdir, overwrite, progress, processes = parse(argv)
        from lth_jax import experiments, parallel
        experiment = experiments.get(cfg.experiment)
        check_ignored_sections(cfg)
        # before anything computes with JAX
        if parallel.initialize_distributed(cfg.parallel.distributed, heartbeat_timeout=cfg.parallel.heartbeat_timeout,
                                           **processes):
            import jax
            print(f"process {jax.process_index()} of {jax.process_count()}: {jax.local_device_count()} of "
                  f"{jax.device_count()} devices", flush=True)
            progress = progress and parallel.writes_files()  # one progress display, process 0's
    except BadInput as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted before the run started", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 -- LthError from experiments.get
        print(f"error: {first_line(e)}", file=sys.stderr)
        return 2
    return run(experiment, cfg, workdir, overwrite, progress)


def run(experiment, cfg, workdir, overwrite, progress) -> int:
    from lth_jax.errors import LthError
    from lth_jax.trainer import Diverged
    from lth_jax.stages import POSITION, Interrupted
    try:
        experiment.run(cfg, workdir, overwrite=overwrite, progress=progress)
    except LthError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Diverged as e:
        print(f"error: {e}; lower optimizer.learning_rate or check the data, then start a new --workdir",
              file=sys.stderr)
        return 3
    except Interrupted as e:
        print(str(e), file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        where = (f"during {POSITION['label']} (last evaluation: step {POSITION['step']})" if POSITION["label"]
                 else "before training started")
        print(f"interrupted {where}; run the same command to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
