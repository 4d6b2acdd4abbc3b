import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import pytest  # noqa: E402

from crash import main_py  # noqa: E402


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
