"""The command lines of main.py and ``python -m lth_jax.sweep``: parsing a
config with its overrides, the one-line refusals of bad input, and the exit
codes (0 done; 2 bad input, or a fault such as a full disk after which the
same command resumes; 3 training diverged; 130 interrupted, resumable)."""

import dataclasses
import errno
import os
import re
import signal
import sys
from typing import Any

from absl import flags, logging
from ml_collections import config_flags

# the checkout holding main.py and configs/ (an editable install; configs/ is not packaged)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(ROOT, "configs", "default.py")


class BadInput(Exception):
    """A command line we refuse; the message is the one line to print."""


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    while len(text) > 1 and text[0] == text[-1] and text[0] in "\"'":  # a KeyError's message, quoted
        text = text[1:-1]
    return (text.splitlines() or [type(e).__name__])[0]


@dataclasses.dataclass
class Command:
    config: Any
    workdir: str
    overwrite: bool
    progress: bool
    processes: dict  # initialize_distributed's coordinator, num_processes, process_id
    sweep: str = ""  # python -m lth_jax.sweep: the sweep file


def parse(argv, sweep: bool = False, usage: str = "") -> Command:
    """The Command of a command line (with --sweep FILE when `sweep`), or BadInput."""
    saved, sys.argv = sys.argv, list(argv)  # config_flags reads the overrides it defines from sys.argv
    # configs/X.py imports configs.base: the folder holding configs/ must be importable from any cwd
    given = [m.group(1) for a in argv if (m := re.match(r"--config=([^:]+)", a))]
    given += [b for a, b in zip(argv, argv[1:]) if a == "--config"]
    for root in [ROOT] + [os.path.dirname(os.path.dirname(os.path.abspath(g))) for g in given]:
        if root not in sys.path:
            sys.path.insert(0, root)
    try:
        return _parse(argv, sweep, usage or __doc__)
    finally:
        sys.argv = saved


def _parse(argv, sweep, usage):
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
        if sweep:
            flags.DEFINE_string("sweep", None, "the sweep file: get_sweep() returns {config key: [values]}",
                                flag_values=fv, required=True)
        if any(a in ("-h", "--help", "--helpfull", "-?") for a in argv[1:]):
            raise SystemExit(print(usage + "\n" + fv.get_help()))
        rest = fv(argv)
        if len(rest) > 1:
            raise BadInput(f"unexpected arguments: {' '.join(rest[1:])}; options are --config, --config.KEY=VALUE, "
                           f"{'--sweep, ' if sweep else ''}--workdir, --overwrite, --noprogress")
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
        raise BadInput(f"{first_line(e)}; see --helpfull") from None
    except (OSError, ImportError, TypeError, ValueError) as e:
        raise BadInput(f"cannot load --config: {first_line(e)}") from None
    processes = {"coordinator": fv.coordinator, "num_processes": fv.num_processes, "process_id": fv.process_id}
    return Command(cfg, fv.workdir, fv.overwrite, fv.progress, processes, fv.sweep if sweep else "")


def check_config(cfg) -> None:
    """What every command checks of a config before its experiment's own checks."""
    check_element_types(cfg)
    check_ignored_sections(cfg)


def element_type_error(value: tuple, default: tuple):
    """Why `value` cannot replace the tuple `default` (an element of another type than all of the
    default's; an int does for a float), or None."""
    kinds = {type(v) for v in default}
    if len(kinds) != 1:
        return None
    kind = kinds.pop()
    for v in value:
        if not (isinstance(v, kind) or (kind is float and isinstance(v, int) and not isinstance(v, bool))):
            return f"its elements must be {kind.__name__}, like the default {default!r}"
    return None


def check_element_types(cfg) -> None:
    """A tuple key's elements have the type of configs/base.py's default ones
    (ml_collections checks the type of a key, not of its elements)."""
    from configs import base

    def walk(ours, defaults, prefix):
        for key in ours.keys():
            value, default = ours[key], defaults.get(key) if hasattr(defaults, "get") else None
            if hasattr(value, "keys"):
                walk(value, default, f"{prefix}{key}.")
            elif isinstance(value, tuple) and isinstance(default, tuple):
                why = element_type_error(value, default)
                if why:
                    raise BadInput(f"cannot set {prefix}{key} = {value!r}: {why}")
    walk(cfg, base.get_config(), "")


def check_ignored_sections(cfg) -> None:
    """A key set in a section the chosen experiment does not read is an error."""
    from configs import base
    from lth_jax import experiments
    defaults = base.get_config()
    for section in experiments.IGNORED_SECTIONS.get(cfg.experiment, ()):
        ours, default = cfg[section].to_dict(), defaults[section].to_dict()
        for key in sorted(ours):
            if ours[key] != default.get(key):
                raise BadInput(f"{section}.{key} is set, but the {cfg.experiment} experiment does not read the "
                               f"{section} section; remove it, or choose the experiment that uses it")


def main(argv, usage: str = "", sweep: bool = False, start=None) -> int:
    """Parse, then `start(cmd)` (default: the config's experiment) returns what to
    run; everything refused before it runs is one line and exit code 2."""
    logging.set_verbosity(logging.WARNING)  # orbax logs every checkpoint step at INFO
    from lth_jax import provenance
    provenance.set_command(list(argv[1:]), "-m lth_jax.sweep" if sweep else "main.py")
    try:
        cmd = parse(argv, sweep=sweep, usage=usage)
        call = (start or _experiment)(cmd)
    except BadInput as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted before the run started", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 -- LthError from experiments.get or a sweep's checks
        print(f"error: {first_line(e)}", file=sys.stderr)
        return 2
    return run(call)


def _experiment(cmd: Command):
    experiment = prepare(cmd)
    return lambda: experiment.run(cmd.config, cmd.workdir, overwrite=cmd.overwrite, progress=cmd.progress)


def prepare(cmd: Command, check_sections: bool = True):
    """The experiment module of cmd.config, after the section check and, with
    several processes, JAX's distributed start (which must come before anything
    computes with JAX); cmd.progress is turned off outside process 0."""
    from lth_jax import experiments, parallel
    experiment = experiments.get(cmd.config.experiment)
    if check_sections:
        check_config(cmd.config)
        experiment.check_config(cmd.config)
    p = cmd.config.parallel
    if parallel.initialize_distributed(p.distributed, heartbeat_timeout=p.heartbeat_timeout, **cmd.processes):
        import jax
        print(f"process {jax.process_index()} of {jax.process_count()}: {jax.local_device_count()} of "
              f"{jax.device_count()} devices", flush=True)
        cmd.progress = cmd.progress and parallel.writes_files()  # one progress display, process 0's
    return experiment


# Set when a run stopped on a fault (a full disk): library threads (checkpoint saves,
# TensorBoard) may still fail at exit, so `exit` ends the process without running them.
FAULT = False


def run(call) -> int:
    """call(), with lth_jax's errors and interruptions turned into an exit code and one line on stderr."""
    global FAULT
    from lth_jax.errors import LthError
    from lth_jax.trainer import Diverged
    from lth_jax.stages import Interrupted, interrupted_message
    try:
        call()
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
        print(interrupted_message(), file=sys.stderr)
        return 130
    except OSError as e:
        FAULT = True
        print(f"error: {os_error(e)}", file=sys.stderr)
        return 2
    return 0


def os_error(e: OSError) -> str:
    """One line for a failed read or write while a run works: the files written
    before it are whole (atomic writes), so the same command resumes."""
    where = f" ({e.filename})" if e.filename else ""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"no space left on the device{where}; the run's files so far are kept: free some space, then "
                "run the same command to resume")
    return (f"{e.strerror or first_line(e)}{where}; the run's files so far are kept: fix that, then run the same "
            "command to resume")


def process(main, argv) -> None:
    """Run `main(argv)` as the whole process (``python main.py``, ``-m lth_jax.sweep``)
    and exit with its code: a second Ctrl-C ends it at once (`stages.HARD_STOP`),
    and so does the exit after a fault (FAULT)."""
    from lth_jax import stages
    stages.HARD_STOP = True
    code = main(argv)
    # the run is over: a Ctrl-C while the interpreter shuts down (library exit hooks) ends it at once
    signal.signal(signal.SIGINT, lambda signum, frame: os._exit(code))
    if FAULT:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
