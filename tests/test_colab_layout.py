"""The README's notebook layout: the clone at /content/lth_jax, the working
directory /content. `import lth_jax` there finds the clone's folder before
the installed package; the repository's top-level __init__.py hands the
import to the package inside (without it the clone became an empty
namespace package: no lth_jax.fit, nothing said why: the first case). The
second case (a notebook that changed into the clone) worked before too, and
stays working."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PROBE = ("import os, sys; sys.path[:0] = sys.argv[1:]; import lth_jax; from lth_jax import masks; "
         "print(lth_jax.fit.__module__, os.path.realpath(lth_jax.__file__), os.path.realpath(masks.__file__))")


@pytest.mark.parametrize("inside", [False, True], ids=["clone in the working directory",
                                                       "working directory inside the clone, /content first"])
def test_import_from_the_notebook_layout_gets_the_package(tmp_path, inside):
    os.symlink(ROOT, tmp_path / "lth_jax")  # the clone, named as the package
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # no path to the repository but the layout's
    # Colab's sys.path starts with "/content" (before the working directory "")
    cwd, first = (tmp_path / "lth_jax", [str(tmp_path)]) if inside else (tmp_path, [])
    out = subprocess.run([sys.executable, "-c", PROBE, *first], cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    module, package, masks = out.stdout.split()
    assert module == "lth_jax.trainer"
    inner = os.path.join(ROOT, "lth_jax")
    assert package == os.path.join(inner, "__init__.py") and masks == os.path.join(inner, "masks.py")
