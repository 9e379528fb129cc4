"""Imported once by the forkserver of ``kb serve``'s live checks (see ``kb.warm``): importing this
module is the warm-up. Every check forked from that server then finds torch, pytest and its plugins,
MkDocs and Material's plugins already imported. Only installed packages and kb's own code: the
project's snippets and tests are read by each check as they are then. A failure here only makes
the checks start cold.
"""

try:  # first: the plugin sets OMP_NUM_THREADS=1 before torch is imported
    import kb.pytest_plugin  # noqa: F401
except Exception:  # noqa: BLE001
    pass

try:
    import nbmake.pytest_items  # noqa: F401
    import numpy  # noqa: F401
    import pytest  # noqa: F401
    import pytest_codeblocks  # noqa: F401
    import torch  # noqa: F401
    import xdist  # noqa: F401

    import kb.check  # noqa: F401
    import kb.sandbox  # noqa: F401
    from kb.project import Project
    from kb.site import Site

    Site.load(Project.find())  # imports MkDocs' and Material's plugins (entry points, jieba)
except Exception:  # noqa: BLE001
    pass
