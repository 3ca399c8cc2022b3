"""The proxy processes a provision server runs: started ahead of demand, assigned on request, always reaped.

Starting `asylo proxy` costs a Python start and the import of gRPC: a few hundred milliseconds, most of a provision
request if paid then. So `ProxyLauncher` keeps `warm` proxies started in standby (`asylo proxy --standby`): they
listen, have everything imported, and wait for one line on their standard input naming the image and the session
token. A request takes one of them (a cold start only when none is ready) and the pool is refilled behind it.

The launcher tells every proxy the measurement of the image it must host — the one the image store verified,
possibly long ago — and the proxy refuses whatever else it finds at that path (a file replaced in the operator's
directory since); the launcher also checks the measurement a standby reports back. With mutual TLS, the proxy is
also told the certificate of the one client it serves.

Every proxy is our child, with our pipe on its standard input as its lifeline: `RunningProxy.release` closes it,
and the proxy finalizes its enclave and exits, or is killed if it lingers. If the provision server itself dies,
the pipes close and the proxies exit on their own (and, on Linux, the kernel's parent-death signal backs that up).
For the proxies that still survive — stopped, wedged in enclave code — each one's pid and start time are recorded
in `pid_dir`, and the next run's `kill_orphans` kills exactly those processes: the start time tells a proxy of ours
from an unrelated process that got its pid later.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from asylo._files import FileTooLargeError, NotRegularFileError, private_directory, read_regular_file
from asylo._malloc import with_huge_pages
from asylo.identity.machine import PlatformOptions
from asylo.remote.child_process import ListeningChild
from asylo.remote.credentials import is_loopback_address
from asylo.remote.provision import READY_PREFIX, ProxyTls
from asylo.remote.provision_client import join_host_port
from asylo.remote.proxy_process import ASSIGNED_PREFIX
from asylo.remote.transports import Transport, check_transport, default_transport
from asylo.status import EnclaveUnavailable, FailedPreconditionError

_log = logging.getLogger(__name__)
_proxy_log = logging.getLogger("asylo.proxy")

#: How often the pool thread looks for standby proxies that died (and replaces them), when nothing else wakes it.
_POOL_CHECK_INTERVAL = 0.5
#: After a standby failed to start, the pool waits this long before trying again, doubling up to the maximum: a
#: broken installation must not turn into a loop of process starts.
_RETRY_DELAY = 0.5
_MAX_RETRY_DELAY = 30.0
#: How long `kill_orphans` waits for a killed process to be gone.
_KILL_WAIT = 5.0


@dataclass(frozen=True)
class ProxySettings:
    """How the provision server's proxies run (the same for standby and cold-started ones)."""

    #: Proxies listen on f"{listen_host}:0": an ephemeral port each, reported back over the pipe.
    listen_host: str = "127.0.0.1"
    #: The proxies' TLS; required unless `listen_host` is loopback (plaintext gRPC is for loopback only).
    tls: ProxyTls | None = None
    #: Seconds a proxy waits for its host after it got its enclave.
    hello_timeout: float = 30.0
    #: Seconds of a session without traffic or running calls after which the proxy ends it (None: never).
    idle_timeout: float | None = None
    #: Seconds a proxy may take to listen, and a standby to load its assigned image.
    startup_timeout: float = 30.0
    #: The interpreter that runs `python -m asylo proxy`.
    python: str = sys.executable
    #: The platform the proxies attest with (resolved: never "auto", so every proxy uses the same one).
    platform: PlatformOptions = field(default_factory=PlatformOptions)
    #: How the proxies take their sessions ("direct" or "grpc"); the provision answer tells hosts.
    transport: Transport = field(default_factory=default_transport)

    def __post_init__(self) -> None:
        if self.tls is None and not is_loopback_address(self.listen):
            raise ValueError(f"proxies listening on {self.listen_host!r} need TLS (ProxySettings.tls): plaintext "
                             f"gRPC is allowed only on loopback")
        for name in ("hello_timeout", "startup_timeout"):
            if not getattr(self, name) >= 0.1:
                raise ValueError(f"{name} must be at least 0.1 s")
        if self.idle_timeout is not None and not self.idle_timeout >= 0.1:
            raise ValueError("idle_timeout must be at least 0.1 s (or None: no idle timeout)")

    @property
    def listen(self) -> str:
        return join_host_port(self.listen_host, 0)

    def proxy_args(self) -> list[str]:
        """The options every proxy gets, standby or not."""
        args = [self.python, "-m", "asylo", "proxy", "--listen", self.listen, "--exit-with-parent",
                "--hello-timeout", repr(self.hello_timeout), "--transport", check_transport(self.transport)]
        if self.idle_timeout is not None:
            args += ["--idle-timeout", repr(self.idle_timeout)]
        if self.tls is not None:
            args += self.tls.args()
        return args + self.platform.proxy_args()


class RunningProxy:
    """One proxy serving (or about to serve) one session. Its owner must `release` it."""

    def __init__(self, child: ListeningChild, port: int, pids: _PidFiles | None) -> None:
        self._child = child
        self._pids = pids
        self.port = port
        self.pid = child.pid

    def __repr__(self) -> str:
        return f"RunningProxy(pid={self.pid}, port={self.port}, returncode={self.returncode})"

    @property
    def returncode(self) -> int | None:
        """The exit code once the proxy has exited and been reaped (negative: killed by that signal), else None."""
        return self._child.process.returncode

    def exited(self) -> bool:
        """Whether the proxy has exited (its session is over); reaps it if so. Never blocks."""
        if self._child.poll() is None:
            return False
        self._forget()
        return True

    def release(self, grace: float = 8.0) -> None:
        """Let the proxy go: close its pipe, so it finalizes its enclave and exits, and reap it; kill it if it has
        not exited within `grace` seconds. Blocks until it is reaped. Idempotent."""
        self._child.release(grace)
        self._forget()

    def let_go(self) -> None:
        """Close the proxy's pipe without waiting (see `release_all`)."""
        self._child.let_go()

    def _forget(self) -> None:
        if self._pids is not None:
            self._pids.remove(self.pid)


def release_all(proxies: Sequence[RunningProxy], grace: float = 8.0) -> None:
    """Release many proxies in about `grace` seconds in all, not `grace` each: every pipe is closed first, so they
    all finalize at once, and then each is reaped with what is left of one shared deadline (killed past it)."""
    for proxy in proxies:
        proxy.let_go()
    deadline = time.monotonic() + grace
    for proxy in proxies:
        proxy.release(max(0.0, deadline - time.monotonic()))


@dataclass(frozen=True)
class _Standby:
    child: ListeningChild
    port: int


@dataclass(frozen=True)
class _Work:
    """What one launch asks of its proxy."""

    image_path: Path
    token: bytes
    measurement: bytes | None
    client_cert_sha256: bytes | None


class ProxyLauncher:
    """Starts proxies for the provision server: from a pool of `warm` standby proxies when one is ready, else cold.

    `start()` begins filling the pool (a thread named "asylo-proxy-pool"); `launch()` gives a proxy hosting an
    image; `close()` stops the pool, reaps its proxies and cuts short the launches in progress. The proxies that
    `launch` returned belong to the caller, who releases them (close does not: they serve sessions).
    """

    def __init__(self, settings: ProxySettings, *, warm: int = 0, pid_dir: Path | None = None) -> None:
        if warm < 0:
            raise ValueError("warm must be 0 or more")
        self.settings = settings
        self._warm = warm
        self._pids = _PidFiles(pid_dir) if pid_dir is not None else None
        self._cond = threading.Condition()
        self._ready: collections.deque[_Standby] = collections.deque()
        #: Standby proxies spawned and not yet ready: close() lets them go, which ends the pool thread's wait.
        self._starting: set[ListeningChild] = set()
        #: Proxies that `launch` is starting or assigning: close() lets them go too, so that a server stopping does
        #: not wait out their start-up (their launch fails at once).
        self._launching: set[ListeningChild] = set()
        self._closed = False
        self._thread: threading.Thread | None = None

    # -- the caller's side ----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Begin filling the pool in the background (nothing to do without `warm`). Idempotent."""
        with self._cond:
            if self._closed:
                raise FailedPreconditionError("the proxy launcher is closed")
            if self._thread is not None or self._warm == 0:
                return
            self._thread = threading.Thread(target=self._fill, name="asylo-proxy-pool", daemon=True)
            self._thread.start()

    @property
    def warm_ready(self) -> int:
        """Standby proxies ready to be assigned now."""
        with self._cond:
            return len(self._ready)

    def launch(self, image_path: Path, token: bytes, *, measurement: bytes | None = None,
               client_cert_sha256: bytes | None = None) -> RunningProxy:
        """A proxy hosting the image at `image_path` for the host that presents `token`. Blocks until it listens
        with the image loaded and verified. EnclaveUnavailable (with what the proxy said) if it fails to start or
        refuses the image — which, given `measurement`, it does unless the image has that measurement;
        FailedPreconditionError after `close`. `client_cert_sha256`: the proxy serves only the host with that TLS
        client certificate (needs a client CA in the settings' TLS)."""
        if len(token) < 16:
            raise ValueError("a session token needs at least 16 bytes")
        if client_cert_sha256 is not None and (self.settings.tls is None or self.settings.tls.client_ca_file is None):
            raise ValueError("pinning a client certificate needs proxies with mutual TLS (a client CA)")
        work = _Work(image_path, token, measurement, client_cert_sha256)
        while True:
            with self._cond:
                if self._closed:
                    raise FailedPreconditionError("the proxy launcher is closed")
                standby = self._ready.popleft() if self._ready else None
                if standby is not None:
                    self._launching.add(standby.child)
                self._cond.notify_all()  # the pool refills behind us
            if standby is None:
                return self._launch_cold(work)
            if standby.child.poll() is None:
                return self._assign(standby, work)
            self._done_launching(standby.child)
            self._dead_standby(standby)  # it died while waiting: take the next

    def close(self, grace: float = 8.0) -> None:
        """Stop refilling, reap every standby proxy and every proxy a launch is still starting (whose launch then
        fails), and end the pool thread; `launch` refuses from now on. About `grace` seconds in all for the proxies
        to exit once let go; those that have not (stopped, wedged) are killed. Idempotent."""
        with self._cond:
            self._closed = True
            children = [*self._starting, *(standby.child for standby in self._ready), *self._launching]
            self._starting.clear()
            self._ready.clear()
            self._cond.notify_all()
        # Close every pipe first, so that they all wind down at once; then reap them one by one against one deadline.
        for child in children:
            child.let_go()
        deadline = time.monotonic() + grace
        for child in children:
            self._reap(child, max(0.0, deadline - time.monotonic()))
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    # -- starting proxies -----------------------------------------------------------------------------------------

    def _spawn(self, args: list[str], what: str) -> ListeningChild:
        try:
            child = ListeningChild(args, ready_prefix=READY_PREFIX, what=what, log=_proxy_log,
                                   env=with_huge_pages(os.environ))
        except OSError as exc:  # the interpreter cannot be run at all
            raise EnclaveUnavailable(f"cannot start {what} with {args[0]}: {exc}") from None
        if self._pids is not None:
            try:
                self._pids.add(child.pid)
            except OSError as exc:
                self._reap(child, grace=0)
                raise EnclaveUnavailable(f"cannot record the proxy's pid in {self._pids.directory}: {exc}") from None
        return child

    def _reap(self, child: ListeningChild, grace: float = 8.0) -> None:
        child.release(grace)
        if self._pids is not None:
            self._pids.remove(child.pid)

    def _done_launching(self, child: ListeningChild) -> None:
        with self._cond:
            self._launching.discard(child)

    def _launch_cold(self, work: _Work) -> RunningProxy:
        args = [*self.settings.proxy_args(), "--image", os.fspath(work.image_path), "--token-stdin"]
        if work.measurement is not None:
            args += ["--expect-measurement", work.measurement.hex()]
        if work.client_cert_sha256 is not None:
            args += ["--client-cert-sha256", work.client_cert_sha256.hex()]
        child = self._spawn(args, "the enclave's proxy")
        with self._cond:
            closed = self._closed
            if not closed:
                self._launching.add(child)
        try:
            if closed:  # close() came while we spawned: it could not see this one
                raise FailedPreconditionError("the proxy launcher is closed")
            port = child.start(work.token.hex().encode("ascii") + b"\n", self.settings.startup_timeout)
        except BaseException:
            self._reap(child)
            raise
        finally:
            self._done_launching(child)
        return RunningProxy(child, port, self._pids)

    def _assign(self, standby: _Standby, work: _Work) -> RunningProxy:
        assignment: dict[str, str] = {"image": os.fspath(work.image_path), "token": work.token.hex()}
        if work.measurement is not None:
            assignment["measurement"] = work.measurement.hex()
        if work.client_cert_sha256 is not None:
            assignment["client_cert_sha256"] = work.client_cert_sha256.hex()
        # JSON built by json.dumps, read by json.loads: the path cannot break out of its string.
        line = json.dumps(assignment).encode("ascii") + b"\n"
        try:
            loaded = standby.child.request(line, ASSIGNED_PREFIX, self.settings.startup_timeout).strip()
            # The proxy checked the measurement itself; checking its answer as well means that a proxy which did
            # not (a wrong build, a bug) is still never handed out to host other code.
            if work.measurement is not None and loaded != work.measurement.hex():
                raise EnclaveUnavailable(f"the standby proxy (pid {standby.child.pid}) loaded an image with "
                                         f"measurement {loaded}, not the expected {work.measurement.hex()}")
        except BaseException:
            self._reap(standby.child)
            raise
        finally:
            self._done_launching(standby.child)
        return RunningProxy(standby.child, standby.port, self._pids)

    def _dead_standby(self, standby: _Standby) -> None:
        _log.warning("standby proxy %d exited on its own (exit code %s); replacing it", standby.child.pid,
                     standby.child.poll())
        self._reap(standby.child)

    # -- the pool thread ------------------------------------------------------------------------------------------

    def _fill(self) -> None:
        """Keep `warm` standby proxies ready until close: replace the ones taken and the ones that died."""
        delay = 0.0
        while True:
            with self._cond:
                if delay:
                    self._cond.wait_for(lambda: self._closed, delay)
                elif len(self._ready) >= self._warm:
                    self._cond.wait(_POOL_CHECK_INTERVAL)
                if self._closed:
                    return
                dead = [standby for standby in self._ready if standby.child.poll() is not None]
                for standby in dead:
                    self._ready.remove(standby)
                missing = self._warm - len(self._ready)
            for standby in dead:
                self._dead_standby(standby)
            batch: list[ListeningChild] = []
            failed = False
            for _ in range(missing):
                try:
                    batch.append(self._spawn([*self.settings.proxy_args(), "--standby"], "a standby proxy"))
                except EnclaveUnavailable as exc:
                    _log.warning("could not start a standby proxy: %s", exc)
                    failed = True
                    break
            with self._cond:
                closed = self._closed
                if not closed:
                    self._starting.update(batch)
            if closed:  # close() came while we spawned: it could not see these
                for child in batch:
                    self._reap(child)
                return
            if self._bring_up(batch) < len(batch) or failed:
                delay = min(max(delay * 2, _RETRY_DELAY), _MAX_RETRY_DELAY)
            else:
                delay = 0.0

    def _bring_up(self, batch: list[ListeningChild]) -> int:
        """Wait for each freshly spawned standby (they start in parallel) and put it in the pool; return how many
        made it."""
        started = 0
        for child in batch:
            try:
                port = child.start(b"", self.settings.startup_timeout)
            except EnclaveUnavailable as exc:
                with self._cond:
                    closed = self._closed
                    self._starting.discard(child)
                if not closed:
                    _log.warning("a standby proxy failed to start: %s", exc)
                self._reap(child)
                continue
            with self._cond:
                self._starting.discard(child)
                if not self._closed:
                    self._ready.append(_Standby(child, port))
                    self._cond.notify_all()
                    started += 1
                    continue
            self._reap(child)  # closed while it started: close() already let it go
        return started


# -- pid files ------------------------------------------------------------------------------------------------------

_PID_FILE_NAME = re.compile(r"[1-9][0-9]{0,9}")
#: A record holds a process start time in clock ticks: a handful of digits.
_MAX_RECORD_SIZE = 64


class _PidFiles:
    """`directory/<pid>` for every proxy alive, holding the process's start time (see `kill_orphans`)."""

    def __init__(self, directory: Path) -> None:
        # Refused if others could write to it: a record planted there would make us kill its process.
        self.directory = private_directory(directory, "the proxy pid records", parents=True)

    def add(self, pid: int) -> None:
        start = _start_time(pid)
        if start is None:
            return  # already gone (or no /proc here): nothing a later run could kill
        fd = os.open(self.directory / str(pid), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        with os.fdopen(fd, "w") as record:
            record.write(f"{start}\n")

    def remove(self, pid: int) -> None:
        with contextlib.suppress(OSError):
            (self.directory / str(pid)).unlink(missing_ok=True)


def kill_orphans(pid_dir: Path) -> int:
    """Kill the proxies an earlier run of the provision server recorded in `pid_dir` and left running; return how
    many were killed. Each record names a pid and that process's start time: a pid whose process has gone, or
    belongs to a process started at another time (the pid was reused), is left alone. Every record is removed.

    Linux only (it reads /proc); elsewhere it only removes the records.
    """
    if not pid_dir.is_dir():
        return 0
    private_directory(pid_dir, "the proxy pid records")  # a record someone else could plant would name their victim
    killed = 0
    for entry in sorted(pid_dir.iterdir()):
        if not _PID_FILE_NAME.fullmatch(entry.name):
            continue  # not ours
        pid = int(entry.name)
        recorded = _read_record(entry)
        if recorded is not None and pid != os.getpid() and _start_time(pid) == recorded:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            except PermissionError as exc:
                _log.warning("cannot kill the orphaned proxy %d: %s", pid, exc)
            else:
                killed += 1
                if not _wait_gone(pid, recorded, _KILL_WAIT):
                    _log.warning("the orphaned proxy %d is still there %g s after SIGKILL", pid, _KILL_WAIT)
        with contextlib.suppress(OSError):
            entry.unlink(missing_ok=True)
    return killed


def _read_record(path: Path) -> int | None:
    """The start time a pid record holds; None for anything else (a planted link, a FIFO, garbage)."""
    try:
        data, _ = read_regular_file(path, _MAX_RECORD_SIZE)
    except (OSError, NotRegularFileError, FileTooLargeError):
        return None
    text = data.strip()
    return int(text) if text.isdigit() else None


def _start_time(pid: int) -> int | None:
    """The process's start time (field 22 of /proc/<pid>/stat, in clock ticks since boot); None if there is no
    such process, or it is a zombie (it has exited; only its exit code is left to collect)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # Field 2 is the command name in parentheses and may contain spaces and parentheses: count from the last ")".
    fields = raw[raw.rfind(b")") + 2:].split()
    if len(fields) < 20 or fields[0] == b"Z":  # fields[0] is field 3, the state
        return None
    return int(fields[19])


def _wait_gone(pid: int, start: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _start_time(pid) == start:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
