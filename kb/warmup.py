"""Imported once by the forkserver of ``kb serve``'s live checks (see ``kb.warm``): importing this
module is the warm-up. Every check forked from that server then finds torch, pytest, Jupyter's
client, MkDocs and Material's plugins already imported. Only installed packages and kb's own code:
the project's snippets and tests are read by each check as they are then. pytest's plugins
themselves (kb's, nbmake, xdist, pytest-codeblocks) are left for each session to import, so that
pytest rewrites their assertions as in any run. A failure here only makes the checks start cold.
"""

import gc
import os

# As kb.pytest_plugin does for every session: torch on one thread, set before torch is imported.
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

try:
    import _pytest.python  # noqa: F401
    import jupyter_client  # noqa: F401
    import nbclient  # noqa: F401
    import nbformat  # noqa: F401
    import numpy  # noqa: F401
    import pytest  # noqa: F401
    import torch  # noqa: F401

    import kb.check  # noqa: F401
    import kb.sandbox  # noqa: F401
    from kb.project import Project
    from kb.site import Site

    Site.load(Project.find())  # imports MkDocs' and Material's plugins (entry points, jieba)
    # torch imports torch.distributed.tensor on the first assert_close (0.7 s on 2 cores): a test's
    # first comparison should not pay for it at every check
    torch.testing.assert_close(torch.zeros(1), torch.zeros(1))
except Exception:  # noqa: BLE001
    pass

# Everything imported above lives as long as the server: frozen, the garbage collector of every check
# forked from it skips those objects (a full collection over them is 0.3 s on 2 cores).
gc.freeze()
