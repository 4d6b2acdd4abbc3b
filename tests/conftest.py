import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import shutil  # noqa: E402

import jax  # noqa: E402
import pytest  # noqa: E402

from crash import CACHE, main_py  # noqa: E402

DATA_CACHE = CACHE + "_data"

# Tests compile the same programs many times (every tiny run builds its own
# steps); JAX's persistent compilation cache, one per test session and shared
# by the xdist workers and the main.py subprocesses, compiles each once.
jax.config.update("jax_compilation_cache_dir", CACHE)
for var, value in (("JAX_COMPILATION_CACHE_DIR", CACHE), ("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0"),
                   ("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")):
    os.environ.setdefault(var, value)  # notebook kernels and other subprocesses
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
# Generated datasets (MNIST-1D) are cached per session too, not in the user's ~/.cache.
os.environ["LTH_JAX_CACHE_DIR"] = DATA_CACHE


# The longest files first (minutes, measured), so that the two xdist workers
# (--dist loadfile) do not end with one of them alone on a long file.
LONGEST_FIRST = ["test_resume_stages.py", "test_multiprocess.py", "test_configs_mock_others.py", "test_notebook.py",
                 "test_configs_mock_lottery.py", "test_resume.py", "test_prune_at_init.py"]


def pytest_collection_modifyitems(session, config, items):
    def rank(item):
        name = os.path.basename(str(item.fspath))
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)
    items.sort(key=rank)  # stable: the order inside a file and among the others stays


def pytest_sessionfinish(session):
    if not hasattr(session.config, "workerinput"):  # the controlling process, after every worker is done
        shutil.rmtree(CACHE, ignore_errors=True)
        shutil.rmtree(DATA_CACHE, ignore_errors=True)


@pytest.fixture
def quick_compile():
    """XLA with most optimizations off, for tests that compile large programs
    (ResNets, Conv-6) to run them a few steps: compiling dominates them, and
    what they check (the run's files, shapes, bookkeeping) does not depend on
    how well the code is optimized."""
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", False)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Uninterrupted runs, made once: name -> workdir."""
    made = {}

    def get(name, args):
        if name not in made:
            workdir = tmp_path_factory.mktemp(f"ref_{name}")
            out = main_py(workdir, args)
            assert out.returncode == 0, out.stderr[-3000:]
            made[name] = workdir
        return made[name]
    return get
