"""Run an experiment from an ml_collections config.

    python main.py --config configs/X.py --workdir DIR [--config.a.b=value] [--overwrite]

Several processes (see README "Several devices and hosts"): start the same
command in each, with --config.parallel.distributed=True where the cluster
tells JAX who is who (Cloud TPU VMs, SLURM), or with --coordinator=HOST:PORT
--num_processes=N --process_id=I. A sweep of configs: python -m lth_jax.sweep.

Exit codes: 0 done; 2 bad input (one line on stderr, nothing in the workdir
created or deleted) or a fault such as a full disk (one line; the files written
so far are kept and the same command resumes); 3 training diverged; 130
interrupted (Ctrl-C), resumable.
"""
import sys

from lth_jax import cli


def main(argv) -> int:
    return cli.main(argv, usage=__doc__)


if __name__ == "__main__":
    cli.process(main, sys.argv)
