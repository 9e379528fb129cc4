"""Run a page's code block (or a notebook) in a throw-away sandbox that holds.

The block runs in a process forked from the test process (torch is already
imported there, so a block starts in milliseconds), which then enters Linux
namespaces of its own, as bubblewrap does:

- a user namespace (root inside, no capability outside it; every capability
  is dropped before the block runs, and ``no_new_privs`` is set);
- a PID namespace whose PID 1 runs the block: the test process cannot be seen
  or signalled, and when PID 1 ends the kernel kills every process the block
  started, however it forked or ``setsid``-ed;
- a mount namespace whose root is a fresh read-only tmpfs holding only the
  system's programs and libraries (``/usr`` and the like, a few ``/etc``
  files), the interpreter and its venv, and the project (all read-only, the
  project's ``.git`` hidden); a size-limited tmpfs at ``/tmp`` (the block's
  working folder) and ``/dev/shm``; a read-only ``/dev`` with null, zero,
  full, random and urandom; the namespace's own ``/proc``;
- a network namespace with nothing but its own loopback (a notebook's kernel
  talks to its client over it): no address outside can be reached;
- IPC, UTS and cgroup namespaces of its own;
- a seccomp filter: no Unix socket can be made (``socket(AF_UNIX)``, io_uring),
  so a host process's socket in a folder the block may read is out of reach.

Limits: ``processes`` (RLIMIT_NPROC, counted per block: threads count too),
``memory_mb`` (RLIMIT_AS: how much address space each process may map beyond
what the forked process already maps; also the size of ``/tmp`` and of
``/dev/shm``; per process, as no cgroup is used: a block that spreads memory over
many processes is bounded by ``processes`` times that), and ``timeout`` seconds,
after which everything is killed.

The result comes back as JSON over a pipe, never as a pickle: nothing a block
writes is executed by the test process, and a block that exits early, closes
the pipe or writes anything but the one expected message (it carries a nonce
drawn for the run) fails. Every other descriptor the block inherits, but
pytest's capture files, is pointed at /dev/null first. (A block decides its own
outcome anyway, as its code could catch its own failure: the point is that it
gains nothing outside the sandbox by lying.)

Where the kernel refuses these namespaces, no block runs: each fails with one
line that says why (there is no weaker fallback).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import resource
import secrets
import select
import signal
import socket
import stat
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path

# <linux/sched.h>, <linux/mount.h>, <linux/prctl.h>, <linux/capability.h>, <linux/sockios.h>
_CLONE_NEWNS, _CLONE_NEWCGROUP, _CLONE_NEWUTS = 0x00020000, 0x02000000, 0x04000000
_CLONE_NEWIPC, _CLONE_NEWUSER, _CLONE_NEWPID, _CLONE_NEWNET = 0x08000000, 0x10000000, 0x20000000, 0x40000000
_NAMESPACES = (
    _CLONE_NEWUSER | _CLONE_NEWNS | _CLONE_NEWPID | _CLONE_NEWNET | _CLONE_NEWIPC | _CLONE_NEWUTS | _CLONE_NEWCGROUP
)
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_REMOUNT = 1, 2, 4, 8, 32
_MS_NOATIME, _MS_NODIRATIME, _MS_BIND, _MS_REC, _MS_PRIVATE, _MS_RELATIME = 1024, 2048, 4096, 16384, 1 << 18, 1 << 21
_MNT_DETACH = 2
_PR_SET_PDEATHSIG, _PR_CAPBSET_DROP, _PR_SET_NO_NEW_PRIVS = 1, 24, 38
_CAP_VERSION_3 = 0x20080522
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}

# What a block may read besides the project and the interpreter: programs and libraries
# (a block may run `sh` or start a notebook kernel), and the few /etc files they read.
_SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_ETC = (
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "alternatives",
    "passwd",
    "group",
    "nsswitch.conf",
    "localtime",
    "fonts",
    "mime.types",
)
_DEVICES = ("null", "zero", "full", "random", "urandom")
_HIDDEN = (".git", ".env", ".netrc")  # in the project: never readable by a block
_HARMLESS_INODES = ("anon_inode:[eventpoll]", "anon_inode:[eventfd]")
_MAX_RESULT = 4 << 20  # bytes of result text the test process accepts

_libc = ctypes.CDLL(None, use_errno=True)


class SandboxError(Exception):
    """The kernel would not give a block its sandbox."""


class BlockTimeout(Exception):
    pass


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _check(result: int, what: str) -> None:
    if result != 0:
        e = ctypes.get_errno()
        raise SandboxError(f"{what}: {os.strerror(e)} ({errno.errorcode.get(e, e)})")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = lambda s: None if s is None else os.fsencode(s)
    _check(
        _libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
        f"mount {source or fstype or ''} on {target}",
    )


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _readable_roots(project: Path) -> list[tuple[str, str]]:
    """The folders a block may read, as (source, target), outermost target first (a folder
    inside another is bound after it). A folder reached through a symlink is bound at both
    paths: sys.path names the venv as it was given, not as it resolves."""
    prefixes = {
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        sys.base_exec_prefix,
        os.path.dirname(sys.executable),
        os.path.dirname(os.path.realpath(sys.executable)),
        str(project),
    }
    pairs = set()
    for p in prefixes:
        if p and os.path.isdir(p):
            real = os.path.realpath(p)
            pairs |= {(real, real), (real, os.path.abspath(p))}
    return sorted(pairs, key=lambda pair: pair[1])


def _plan(project: Path, work: Path, memory_mb: int) -> list[tuple]:
    """What to mount, in order, as (kind, source, target, extra); targets are paths in the sandbox.

    Made by the test process, which can still see every source (the sandbox's user cannot:
    the interpreter may live under /root)."""
    size, plan = f"size={memory_mb}m", []
    for top in _SYSTEM:
        if os.path.islink(top):
            plan.append(("symlink", os.readlink(top), top, None))
        elif os.path.isdir(top):
            plan.append(("bind", top, top, "ro"))
    plan += [("bind", f"/etc/{name}", f"/etc/{name}", "ro") for name in _ETC if os.path.exists(f"/etc/{name}")]
    plan.append(("tmpfs", None, "/tmp", f"{size},mode=1777"))
    plan += [("bind", source, target, "ro") for source, target in _readable_roots(project)]
    for name, base in [(name, base) for name in _HIDDEN for base in sorted({project, project.resolve()})]:
        hidden = base / name
        if hidden.is_dir():
            plan.append(("tmpfs", None, str(hidden), "size=4k,mode=0555,ro"))
        elif hidden.exists():
            plan.append(("bind", "/dev/null", str(hidden), "ro"))
    plan.append(("mkdir", None, str(work), None))
    if not str(work).startswith("/tmp/"):
        plan.append(("tmpfs", None, str(work), f"{size},mode=0700"))
    plan.append(("tmpfs", None, "/dev", "size=64k,mode=0755"))
    plan += [("bind", f"/dev/{name}", f"/dev/{name}", "rw") for name in _DEVICES]
    plan += [
        ("symlink", target, f"/dev/{name}", None)
        for name, target in (
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
        )
    ]
    plan.append(("tmpfs", None, "/dev/shm", f"{size},mode=1777"))
    plan.append(("remount-ro", None, "/dev", None))
    plan.append(("proc", None, "/proc", None))
    return plan


def _open_sources(plan: list[tuple]) -> dict[str, int]:
    """O_PATH descriptors of the bind sources."""
    return {source: os.open(source, os.O_PATH | os.O_CLOEXEC) for kind, source, _, _ in plan if kind == "bind"}


def _bind(fd: int, target: str, *, writable: bool) -> None:
    """Bind what ``fd`` names at ``target`` (a folder or a file), read-only unless asked."""
    if stat.S_ISDIR(os.fstat(fd).st_mode):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if not os.path.lexists(target):
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT, 0o644))
    _mount(f"/proc/self/fd/{fd}", target, None, _MS_BIND | _MS_REC)
    if not writable:  # keep the flags the kernel locks on a mount seen from a user namespace
        kept = os.statvfs(fd).f_flag & (
            _MS_NOSUID | _MS_NODEV | _MS_NOEXEC | _MS_NOATIME | _MS_NODIRATIME | _MS_RELATIME
        )
        _mount(None, target, None, _MS_BIND | _MS_REMOUNT | _MS_RDONLY | kept)


def _build_root(root: str, plan: list[tuple], sources: dict[str, int]) -> None:
    """Mount the block's file system at ``root`` (a tmpfs), then make it this process's ``/``."""
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)
    _mount("tmpfs", root, "tmpfs", _MS_NOSUID | _MS_NODEV, "size=4m,mode=0755")
    for kind, source, target, extra in plan:
        where = root + target
        if kind == "symlink":
            os.makedirs(os.path.dirname(where), exist_ok=True)
            os.symlink(source, where)
        elif kind == "bind":
            _bind(sources[source], where, writable=extra == "rw")
        elif kind == "mkdir":
            os.makedirs(where, exist_ok=True)
        elif kind == "tmpfs":
            os.makedirs(where, exist_ok=True)
            options = extra.removesuffix(",ro")
            flags = _MS_NOSUID | _MS_NODEV | (_MS_RDONLY if extra.endswith(",ro") else 0)
            _mount("tmpfs", where, "tmpfs", flags, options)
        elif kind == "remount-ro":
            _mount(None, where, None, _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV)
        elif kind == "proc":
            os.makedirs(where, exist_ok=True)
            _mount("proc", where, "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
    for fd in sources.values():  # a descriptor of a host folder would be a way out
        os.close(fd)
    # pivot_root(".", "."): the new root stacks over the old one, which is then detached
    os.chdir(root)
    number = _SYS_PIVOT_ROOT.get(os.uname().machine)
    if number is None:
        raise SandboxError(f"pivot_root: unknown system call number on {os.uname().machine}")
    _check(_libc.syscall(number, b".", b"."), "pivot_root")
    _check(_libc.umount2(b".", _MNT_DETACH), "umount the old root")
    os.chdir("/")
    _mount(None, "/", None, _MS_BIND | _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV)


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(s, _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(s, _SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | _IFF_UP))


def _quiet_inherited_fds(keep: set[int]) -> None:
    """Point every inherited descriptor but ``keep``, pytest's captured output files (deleted
    regular files) and event loops' inodes at /dev/null: pipes and sockets to the test process
    (pytest-xdist talks to its controller over them) are out of the block's reach."""
    null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd in keep or fd == null:
            continue
        try:
            info = os.fstat(fd)
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if (stat.S_ISREG(info.st_mode) and info.st_nlink == 0) or target in _HARMLESS_INODES:
            continue
        inheritable = os.get_inheritable(fd)
        os.dup2(null, fd, inheritable=inheritable)
    os.close(null)


def _drop_privileges() -> None:
    cap = 0
    while _libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) == 0:
        cap += 1
    header, data = _CapHeader(_CAP_VERSION_3, 0), (_CapData * 2)()
    _check(_libc.capset(ctypes.byref(header), data), "capset")
    _check(_libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")


def _deny_unix_sockets() -> None:
    """A seccomp filter (libseccomp, through pyseccomp): the block may not make a Unix socket.

    A pathname socket of a host process, in a folder the block may read (the project), is
    connectable through a read-only mount, and no namespace stops that: a socket(2) of family
    AF_UNIX, and io_uring (which makes sockets without socket(2)), fail with EACCES. A connected
    stream pair (socketpair(2)) reaches nothing outside and stays allowed; a datagram pair does not
    (a datagram socket sends to any pathname, by sendto or a new connect), so it is refused too
    (its type is masked: SOCK_CLOEXEC and SOCK_NONBLOCK may be or-ed in). Another architecture's system
    calls (int 0x80 on x86-64) are not in the filter: they kill the block (libseccomp's default).
    The filter is inherited by every process the block starts and cannot be removed."""
    try:
        import pyseccomp as seccomp
    except ImportError as e:  # no weaker fallback: the block does not run
        raise SandboxError(f"pyseccomp is not installed ({e}): make setup installs it") from None
    denied = seccomp.ERRNO(errno.EACCES)
    rules = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    rules.add_rule(denied, "socket", seccomp.Arg(0, seccomp.EQ, socket.AF_UNIX))
    rules.add_rule(
        denied,
        "socketpair",
        seccomp.Arg(0, seccomp.EQ, socket.AF_UNIX),
        seccomp.Arg(1, seccomp.MASKED_EQ, 0xF, socket.SOCK_DGRAM),
    )
    rules.add_rule(denied, "io_uring_setup")
    try:
        rules.load()
    except (OSError, RuntimeError) as e:
        raise SandboxError(f"seccomp filter: {e}") from None


# Environment variables a block sees (besides LC_*): paths, locale, thread counts, KB_FAST.
ENVIRONMENT = {
    "PATH",
    "LANG",
    "LANGUAGE",
    "TZ",
    "PYTHONPATH",
    "PYTHONHASHSEED",
    "PYTHONDONTWRITEBYTECODE",
    "VIRTUAL_ENV",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "OPENBLAS_CORETYPE",
    "OPENBLAS_L2_SIZE",
    "JUPYTER_PATH",
    "TERM",
    "KB_FAST",
}


def _address_space() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def _enter(
    plan: list[tuple], sources: dict[str, int], work: Path, keep: set[int], processes: int, memory_mb: int
) -> None:
    """In PID 1 of the new namespaces: build the sandbox around this process."""
    os.setsid()  # a new session and process group: kill(0, ...) reaches only the block
    _build_root("/tmp", plan, sources)  # over the host's /tmp, seen from this mount namespace only
    _loopback_up()
    _quiet_inherited_fds(keep)
    resource.setrlimit(resource.RLIMIT_NPROC, (processes, processes))
    limit = _address_space() + (memory_mb << 20)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # A file (a memfd included: memory that maps nothing) may not outgrow the memory allowance.
    resource.setrlimit(resource.RLIMIT_FSIZE, (memory_mb << 20, memory_mb << 20))
    _drop_privileges()
    _deny_unix_sockets()
    os.chdir(work)
    # The test process's environment (CI tokens, keys) is emptied, and the copies of it this fork
    # inherited are wiped (a copy the test process itself keeps elsewhere is not: a strict xfail in
    # tests/test_hostile_blocks.py): only what Python, torch and the block's own folders need.
    # (only the kept values are read: reading a value leaves a copy of it in memory)
    kept = {k: os.environ[k] for k in list(os.environ) if k in ENVIRONMENT or k.startswith("LC_")}
    _forget_environment()
    os.environ.update(kept, TMPDIR=str(work), HOME=str(work), MPLCONFIGDIR=str(work))


_BYTES_DATA = bytes.__basicsize__ - 1  # where a bytes object's characters start (CPython)


def _forget_environment() -> None:
    """Empty the environment, and wipe its copies that this fork of the test process holds in
    memory a block can read: the values os.environ keeps (bytes, in CPython's heap, freed but not
    erased by clear()), and the block of strings the process started with (on its stack, between
    env_start and env_end of /proc/self/stat: what /proc/PID/environ shows)."""
    for value in os.environ._data.values():  # type: ignore[attr-defined]
        if isinstance(value, bytes) and len(value) > 1:  # b"" and one-byte bytes are shared singletons
            ctypes.memset(id(value) + _BYTES_DATA, 0, len(value))
    os.environ.clear()
    with open("/proc/self/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    start, end = int(fields[47]), int(fields[48])  # fields 50 and 51: env_start, env_end
    if 0 < start < end:
        ctypes.memset(start, 0, end - start)


def _send(fd: int, message: dict) -> None:
    view = memoryview(json.dumps(message).encode())
    while view:
        view = view[os.write(fd, view) :]


def _unshare_mapped(plan: list[tuple]) -> dict[str, int]:
    """Enter new namespaces as root of a new user namespace, mapped to an unprivileged user
    outside (nobody, when we are root; else ourselves): root outside would be exempt from
    RLIMIT_NPROC. A process may not map another user once inside, so a helper forked just
    before, still outside, writes the map. Returns descriptors of the bind sources, opened in
    the new mount namespace while this process is still its real user outside: the
    unprivileged user may not look them up (the interpreter may live under /root)."""
    uid, gid = os.geteuid(), os.getegid()
    outer_uid, outer_gid = (65534, 65534) if uid == 0 else (uid, gid)
    me = os.getpid()
    go_r, go_w = os.pipe()
    helper = os.fork()
    if helper == 0:
        code = 1
        try:
            os.close(go_w)
            if os.read(go_r, 1) == b"u":
                if uid != 0:
                    _write(f"/proc/{me}/setgroups", "deny")
                _write(f"/proc/{me}/uid_map", f"0 {outer_uid} 1")
                _write(f"/proc/{me}/gid_map", f"0 {outer_gid} 1")
                code = 0
        finally:
            os._exit(code)
    os.close(go_r)
    try:
        _check(_libc.unshare(_NAMESPACES), "unshare (user, mount, PID and network namespaces)")
        os.write(go_w, b"u")
    finally:
        os.close(go_w)
        _, status = os.waitpid(helper, 0)
    if status != 0:
        raise SandboxError("could not map the user namespace's root to an unprivileged user")
    sources = _open_sources(plan)
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)
    if uid == 0:
        os.setgroups([])
    return sources


def _middle(
    fn, nonce: str, w: int, release: int, plan: list[tuple], work: Path, timeout: float, processes: int, memory_mb: int
) -> None:
    """The forked child: enters the namespaces, forks PID 1 to run the block, and kills it when
    the test process says so (or dies). Never returns."""
    try:
        sources = _unshare_mapped(plan)
    except (SandboxError, OSError) as e:
        _send(w, {"nonce": nonce, "sandbox": f"{e}"})
        os._exit(0)
    block = os.fork()
    if block == 0:  # PID 1 of the new PID namespace
        os.close(release)
        _block(fn, nonce, w, plan, sources, work, timeout, processes, memory_mb)
    os.close(w)
    try:
        os.read(release, 1)  # the test process closes it when done, or dies
    finally:
        os.kill(block, signal.SIGKILL)  # PID 1 dies: the kernel kills everything in its namespace
        os.waitpid(block, 0)
        os._exit(0)


def _block(
    fn,
    nonce: str,
    w: int,
    plan: list[tuple],
    sources: dict[str, int],
    work: Path,
    timeout: float,
    processes: int,
    memory_mb: int,
) -> None:
    message: dict = {"nonce": nonce}
    try:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        _enter(plan, sources, work, {0, 1, 2, w}, processes, memory_mb)
    except BaseException as e:  # noqa: BLE001 - reported, the block does not run
        message["sandbox"] = str(e) if isinstance(e, SandboxError) else f"{type(e).__name__}: {e}"
    else:

        def alarm(signum, frame):
            raise BlockTimeout(f"the block did not finish within {timeout:g} s (killed)")

        try:
            signal.signal(signal.SIGALRM, alarm)
            signal.setitimer(signal.ITIMER_REAL, timeout)
            result = fn()
            signal.setitimer(signal.ITIMER_REAL, 0)
            message["failure"] = None if result is None else str(result)
        except BaseException as e:  # noqa: BLE001 - everything is reported to the parent
            message["failure"] = f"{type(e).__name__}: {e}"
    code = 0
    try:
        _send(w, message)
    except BaseException:  # noqa: BLE001
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:  # noqa: BLE001
                pass
        os._exit(code)


def _verdict(data: bytes, nonce: str) -> str | None:
    """The block's failure text or None, from the one JSON message it must have sent."""
    if not data:
        return "the block's process ended without a result (it crashed, exited or closed its output)"
    try:
        message = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return f"the block's process sent a malformed result ({len(data)} bytes that are not one JSON message)"
    if (
        not isinstance(message, dict)
        or message.get("nonce") != nonce
        or set(message) not in ({"nonce", "failure"}, {"nonce", "sandbox"})
    ):
        return "the block's process sent a result that is not the sandbox's (forged or garbled)"
    if "sandbox" in message:
        return (
            f"page blocks run only in a sandbox, and this kernel would not give one: {message['sandbox']} "
            "(Linux user namespaces are needed)"
        )
    failure = message["failure"]
    if failure is not None and not isinstance(failure, str):
        return "the block's process sent a result that is not the sandbox's (forged or garbled)"
    if failure is not None and not failure.strip():  # a failure is never read as a pass, text or not
        return "the block failed and said nothing (an exception with an empty message)"
    return failure


def run_forked(
    fn: Callable[[], str | None],
    *,
    work: Path,
    project: Path,
    timeout: float,
    processes: int = 64,
    memory_mb: int = 1024,
) -> str | None:
    """Run ``fn`` in a forked, sandboxed child; return what it returned (a failure text or None).

    ``work`` is the path of the block's working folder (a fresh tmpfs inside the sandbox);
    ``project`` is readable (without its ``.git``). A block that outlives ``timeout`` seconds is
    killed with every process it started, and reported as such.
    """
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    plan = _plan(Path(project).absolute(), Path(work), memory_mb)
    nonce = secrets.token_hex(16)
    r, w = os.pipe()
    release_r, release_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.close(release_w)
            _middle(fn, nonce, w, release_r, plan, Path(work), timeout, processes, memory_mb)
        finally:
            os._exit(1)
    os.close(w)
    os.close(release_r)
    data, deadline, late = bytearray(), time.monotonic() + timeout + 5, False
    poller = select.poll()
    poller.register(r, select.POLLIN)
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                late = True
                break
            if poller.poll(left * 1000):
                chunk = os.read(r, 1 << 16)
                if not chunk:
                    break
                data += chunk
                if len(data) > _MAX_RESULT:
                    return f"the block's process sent more than {_MAX_RESULT >> 20} MiB of result (killed)"
    finally:
        os.close(r)
        os.close(release_w)  # the middle process kills PID 1, and with it the whole namespace
        os.waitpid(pid, 0)
    if late:
        return f"the block did not finish within {timeout:g} s (killed)"
    return _verdict(bytes(data), nonce)
