"""The repository's root, not the package: lth_jax is the folder lth_jax/ in here.

Python runs this file only where a clone's folder is itself named lth_jax and
its parent is the working directory or on sys.path, as in a notebook at
/content with the clone at /content/lth_jax. There `import lth_jax` would
find the clone first; without this file it became an empty namespace
package (submodules imported, `lth_jax.fit` did not exist, nothing said
why). So it loads the package inside the clone in its place. Imported under
any other name it does nothing: pytest, seeing this file, takes the root for
a package and imports it under the folder's name at the first test (putting
the folder's parent on sys.path, as it does for any package).
"""
if __name__ == "lth_jax":
    import importlib.util
    import os
    import sys

    _inner = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lth_jax")
    _spec = importlib.util.spec_from_file_location("lth_jax", os.path.join(_inner, "__init__.py"),
                                                   submodule_search_locations=[_inner])
    _package = importlib.util.module_from_spec(_spec)
    sys.modules["lth_jax"] = _package  # the import statement returns what sys.modules holds after this file ran
    _spec.loader.exec_module(_package)
