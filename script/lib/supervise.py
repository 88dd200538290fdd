"""Run one command so that it cannot outlive the process that started it (stdlib only; started by
``baf_spawn`` in script/lib/common.sh and by ``make demo``)::

    python script/lib/supervise.py [--grace SECONDS] -- COMMAND [ARG...]

The command runs in a process group of its own (a new session), so one signal reaches everything
it starts. This process stays in between and ends that group when

* it receives SIGTERM, SIGINT, SIGHUP or SIGQUIT: the signal is passed on to the group;
* the process that started it goes away, whatever the reason -- SIGKILL included, which nobody can
  trap: the parent is watched (``getppid`` changes when it dies), and SIGTERM goes to the group;
* the command itself ends (killed or not): whatever it left in its group gets SIGTERM.

A group still alive ``--grace`` seconds (default ``BAF_KILL_GRACE`` or 3) after its SIGTERM/SIGINT
gets SIGKILL, so a stopped run leaves no process behind. Should this process itself be killed with
SIGKILL, the command gets SIGTERM from the kernel (``PR_SET_PDEATHSIG`` on Linux); a stage script's
own jobs are supervised the same way one level down, so they follow.

The exit status is the command's (128 + N when a signal N
ended it).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import select
import signal
import subprocess
import sys
import time

PR_SET_PDEATHSIG = 1
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
POLL_SECONDS = 0.2


def _pdeathsig_setter():
    """A ``preexec_fn`` that makes the kernel send SIGTERM to the child when this process dies
    (Linux); ``None`` elsewhere (the parent watch of the levels below still applies)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    supervisor = os.getpid()

    def set_pdeathsig():
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != supervisor:  # this process died between fork and prctl
            os._exit(143)

    return set_pdeathsig


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group, from /proc (Linux); ``[]`` elsewhere."""
    members = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return members
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()  # after "pid (comm) "
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != b"Z":
            members.append(int(name))
    return members


class Supervisor:
    def __init__(self, command: list[str], grace: float):
        self.command = command
        self.grace = grace
        self.parent = os.getppid()
        self.received: list[int] = []
        self.child: subprocess.Popen | None = None
        self.deadline: float | None = None  # SIGKILL for the group after this moment

    # ----- signals
    def _on_signal(self, signum, _frame):
        self.received.append(signum)

    def _signal_group(self, signum: int) -> None:
        if self.child is None:
            return
        try:
            os.killpg(self.child.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    def _stop_group(self, signum: int) -> None:
        """``signum`` to the group now (and SIGCONT, in case it is stopped), SIGKILL after the grace."""
        self._signal_group(signum)
        self._signal_group(signal.SIGCONT)
        if self.deadline is None:
            self.deadline = time.monotonic() + self.grace

    # ----- the watch
    def _exited(self) -> bool:
        """True when the child has ended; it stays a zombie (not reaped), so its process group id
        cannot be reused before the group is cleaned up."""
        if not hasattr(os, "waitid"):  # macOS: reaped at once (its group is then cleaned up by id)
            return self.child.poll() is not None
        try:
            info = os.waitid(os.P_PID, self.child.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True
        return info is not None

    def _wait_for_event(self, pidfd: int | None) -> None:
        if pidfd is None:
            time.sleep(POLL_SECONDS / 4)
            return
        try:
            select.select([pidfd], [], [], POLL_SECONDS)
        except InterruptedError:  # pragma: no cover (PEP 475 retries)
            pass

    def run(self) -> int:
        for signum in FORWARDED:
            signal.signal(signum, self._on_signal)
        try:
            self.child = subprocess.Popen(self.command, start_new_session=True, preexec_fn=_pdeathsig_setter())
        except OSError as err:
            print(f"supervise.py: cannot run {self.command[0]}: {err.strerror}", file=sys.stderr)
            return 127
        try:
            pidfd = os.pidfd_open(self.child.pid)
        except (AttributeError, OSError):
            pidfd = None
        if self.parent == 1 or os.getppid() != self.parent:  # started by a parent already gone
            self._stop_group(signal.SIGTERM)
        while not self._exited():
            while self.received:
                signum = self.received.pop(0)
                self._stop_group(signal.SIGTERM if signum in (signal.SIGHUP, signal.SIGQUIT) else signum)
            if self.deadline is None and os.getppid() != self.parent:
                self._stop_group(signal.SIGTERM)  # the parent died (SIGKILL cannot be trapped)
            if self.deadline is not None and time.monotonic() >= self.deadline:
                self._signal_group(signal.SIGKILL)
                self.deadline = float("inf")
            self._wait_for_event(pidfd)
        self._clean_up_group()
        status = self.child.wait()
        return 128 - status if status < 0 else status

    def _clean_up_group(self) -> None:
        """Whatever the command left in its group (it ended, killed or not) gets SIGTERM, then SIGKILL."""
        pgid = self.child.pid
        self._signal_group(signal.SIGTERM)
        self._signal_group(signal.SIGCONT)
        if not sys.platform.startswith("linux"):
            return
        end = time.monotonic() + self.grace
        while _group_members(pgid) and time.monotonic() < end:
            time.sleep(0.05)
        if _group_members(pgid):
            self._signal_group(signal.SIGKILL)


def main(argv: list[str]) -> int:
    grace = float(os.environ.get("BAF_KILL_GRACE", "3"))
    if argv[:1] == ["--grace"] and len(argv) >= 2:
        grace, argv = float(argv[1]), argv[2:]
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print("usage: supervise.py [--grace SECONDS] -- COMMAND [ARG...]", file=sys.stderr)
        return 2
    return Supervisor(argv, grace).run()


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except OSError as err:  # pragma: no cover
        if err.errno != errno.EINTR:
            raise
