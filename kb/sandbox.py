"""Run a page's code block in a throw-away process that cannot write into the project.

Each block runs in a forked child: whatever it changes in memory (a patched
``assert_close``, a global, an environment variable) dies with the child, so
no block can change what a later test sees. The child works in a temporary
folder and, where the kernel offers Landlock (Linux 5.13+), may write nowhere
but there and in /dev; elsewhere an audit hook refuses Python-level writes
inside the project. A child that does not finish in time is killed, and so is
anything it started.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import select
import signal
import sys
import time
from pathlib import Path
from typing import Callable

# Landlock (include/uapi/linux/landlock.h); syscall numbers are shared by x86_64 and aarch64 ABIs.
_SYSCALLS = {"x86_64": (444, 445, 446), "aarch64": (444, 445, 446)}
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38
_WRITE_RIGHTS = [1 << 1] + [1 << b for b in range(4, 13)]  # write file, remove dir/file, make char/dir/reg/sock/fifo/block/sym
_REFER, _TRUNCATE = 1 << 13, 1 << 14


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def landlock_write_only_in(folders: list[Path]) -> bool:
    """Forbid this process (and its children) to write anywhere but in ``folders``.

    Reading stays allowed everywhere. Returns False where the kernel has no Landlock.
    """
    numbers = _SYSCALLS.get(os.uname().machine)
    if numbers is None:
        return False
    create, add_rule, restrict = numbers
    libc = ctypes.CDLL(None, use_errno=True)
    abi = libc.syscall(create, None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION))
    if abi < 1:
        return False
    rights = sum(_WRITE_RIGHTS) | (_REFER if abi >= 2 else 0) | (_TRUNCATE if abi >= 3 else 0)
    attr = _RulesetAttr(rights)
    ruleset = libc.syscall(create, ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)), ctypes.c_uint32(0))
    if ruleset < 0:
        return False
    try:
        for folder in folders:
            fd = os.open(folder, os.O_PATH | os.O_CLOEXEC)
            try:
                rule = _PathBeneathAttr(rights, fd)
                if libc.syscall(add_rule, ruleset, _RULE_PATH_BENEATH, ctypes.byref(rule), ctypes.c_uint32(0)) != 0:
                    return False
            finally:
                os.close(fd)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            return False
        return libc.syscall(restrict, ruleset, ctypes.c_uint32(0)) == 0
    finally:
        os.close(ruleset)


def _guard_project(root: Path) -> None:
    """Fallback without Landlock: refuse Python-level writes inside the project."""
    root = root.resolve()
    writing = {"os.remove", "os.rmdir", "os.rename", "os.mkdir", "os.symlink", "os.link", "os.truncate",
               "os.chmod", "os.utime", "shutil.rmtree", "shutil.move", "shutil.copyfile"}

    def inside(path) -> bool:
        try:
            return Path(os.fsdecode(path)).resolve().is_relative_to(root)
        except (TypeError, ValueError, OSError):
            return False

    def hook(event: str, args: tuple) -> None:
        if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
            mode, flags = args[1], args[2] if len(args) > 2 else 0
            wants = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC))
            if wants and inside(args[0]):
                raise PermissionError(f"a page block may not write into the project: {os.fsdecode(args[0])}")
        elif event in writing and any(inside(a) for a in args[:2] if isinstance(a, (str, bytes, os.PathLike))):
            raise PermissionError(f"a page block may not change the project ({event})")

    sys.addaudithook(hook)


class BlockTimeout(Exception):
    pass


def run_forked(fn: Callable[[], str | None], *, work: Path, project: Path, timeout: float) -> str | None:
    """Run ``fn`` in a forked child confined to ``work``; return what it returned (a failure text or None).

    A child that outlives ``timeout`` seconds is killed and reported as such, with every
    process it started (they share its process group).
    """
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 0
        try:
            os.setpgid(0, 0)  # its own process group: whatever it starts is killed with it
            os.close(r)
            os.chdir(work)
            os.environ.update(TMPDIR=str(work), HOME=str(work), MPLCONFIGDIR=str(work))
            if not landlock_write_only_in([work, Path("/dev")]):
                _guard_project(project)

            def alarm(signum, frame):
                raise BlockTimeout(f"the block did not finish within {timeout:g} s (killed)")

            signal.signal(signal.SIGALRM, alarm)
            signal.setitimer(signal.ITIMER_REAL, timeout)
            result = fn()
            signal.setitimer(signal.ITIMER_REAL, 0)
            data = pickle.dumps(result)
        except BaseException as e:  # noqa: BLE001 - everything is reported to the parent
            data = pickle.dumps(f"{type(e).__name__}: {e}")
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(w, view):]
        except BaseException:  # noqa: BLE001
            code = 1
        finally:
            for stream in (sys.stdout, sys.stderr):
                try:
                    stream.flush()
                except BaseException:  # noqa: BLE001
                    pass
            os._exit(code)
    os.close(w)
    chunks, deadline = [], time.monotonic() + timeout + 10
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return f"the block did not finish within {timeout:g} s (killed)"
            ready, _, _ = select.select([r], [], [], left)
            if ready:
                chunk = os.read(r, 1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
    finally:
        os.close(r)
        for kill in (os.killpg, os.kill):  # the block, and any process it started
            try:
                kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        os.waitpid(pid, 0)
    if not chunks:
        return "the block's process died without a result (crashed or exited)"
    return pickle.loads(b"".join(chunks))
