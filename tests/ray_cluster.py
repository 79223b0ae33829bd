"""A real multi-node Ray cluster on this one machine, inside a network namespace that has only loopback.

Outside such a namespace Ray advertises the machine's other addresses; inside, every node is 127.0.0.1 and
nothing of the cluster can be reached from the network. The namespace comes from
`unshare --user --map-root-user --net --pid --fork --mount-proc --kill-child` (works unprivileged where user
namespaces are on). Its PID namespace is the safety net: when the namespace's first process ends, the kernel
kills everything else in it, so no Ray daemon can outlive a test run, whatever happens to pytest.

Used by tests/ray_harness.py (the cluster side of the Ray tests) and bench/supervisor.py (--backend ray).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

PYTHON = sys.executable
RAY = str(Path(PYTHON).with_name("ray"))
NS_FLAGS = ["--user", "--map-root-user", "--net", "--pid", "--fork", "--mount-proc", "--kill-child"]
IN_NAMESPACE = "HEYGEM_TEST_IN_NAMESPACE"
# A folder of any length is bind-mounted here inside the namespace: Ray's unix sockets live under its temp
# folders and their paths must stay under 108 bytes, which pytest's tmp_path alone would exceed.
SHORT_ROOT = Path("/mnt")
MS_BIND = 4096
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1
# Quick death marks: the head's GCS declares a node dead after 3 missed 0.5 s health checks (default: 5 of 3 s).
FAST_HEALTH = {"RAY_health_check_period_ms": "500", "RAY_health_check_failure_threshold": "3",
               "RAY_health_check_timeout_ms": "500", "RAY_health_check_initial_delay_ms": "500"}


def lo_up() -> None:
    """`ip link set lo up` without iproute2 (often not on a user's PATH): SIOCSIFFLAGS on lo."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(sock, _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | _IFF_UP))


def only_loopback() -> bool:
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def namespace_command(argv: list[str]) -> list[str]:
    return ["unshare", *NS_FLAGS, *argv]


def namespace_problem(timeout_s: float = 30) -> str | None:
    """None when a loopback-only namespace can be made here, else why not (the reason of a skip)."""
    if shutil.which("unshare") is None:
        return "util-linux `unshare` is not installed"
    probe = [PYTHON, "-c", "from tests.ray_cluster import lo_up, only_loopback; lo_up(); assert only_loopback()"]
    try:
        done = subprocess.run(namespace_command(probe), capture_output=True, text=True, timeout=timeout_s,
                              cwd=Path(__file__).resolve().parent.parent)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare could not run: {exc}"
    if done.returncode != 0:
        return (f"loopback-only network namespaces are unavailable here (unshare {' '.join(NS_FLAGS)} exited "
                f"{done.returncode}: {done.stderr.strip()[-300:]})")
    return None


def inside_namespace(bind: Path | None) -> None:
    """First thing in a process started with namespace_command(): loopback up, `bind` on SHORT_ROOT, and a
    PID 1 that reaps (see become_init)."""
    lo_up()
    if not only_loopback():
        raise RuntimeError(f"not in a loopback-only namespace: {socket.if_nameindex()}")
    if bind is not None:
        bind.mkdir(parents=True, exist_ok=True)
        libc = ctypes.CDLL(None, use_errno=True)
        # --mount-proc gave us a private mount namespace: the bind is invisible outside.
        if libc.mount(str(bind).encode(), str(SHORT_ROOT).encode(), None, MS_BIND, None) != 0:
            raise OSError(ctypes.get_errno(), f"bind mount of {bind} on {SHORT_ROOT} failed")
        os.environ["TMPDIR"] = str(SHORT_ROOT)
    os.environ[IN_NAMESPACE] = "1"
    if os.getpid() == 1:
        become_init()


def become_init() -> None:
    """PID 1 of the namespace must reap orphans (every daemon `ray start` leaves is reparented to it), or they
    stay zombies and stopping a node waits its whole grace period for them. So PID 1 forks: the child goes on;
    PID 1 only reaps, forwards SIGTERM/SIGINT, and exits with the child's status, at which point the kernel
    kills whatever is left in the namespace."""
    child = os.fork()
    if child == 0:
        return
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda number, _: os.kill(child, number))
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(1)
        except InterruptedError:
            continue
        if pid == child:
            os._exit(os.waitstatus_to_exitcode(status) & 0xFF)


def processes(pattern: str = "") -> list[tuple[int, str]]:
    """Live processes (not zombies) whose command line holds `pattern`, except this one."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            command = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if command.strip() and state != "Z" and pattern in command:
            found.append((int(entry), command.strip()))
    return found


def marked(prefix: str) -> list[tuple[int, str]]:
    """Processes whose environment carries a task marker HEYGEM_TASK=<prefix>…: a task's node guard, worker and
    their children (heygem.supervisor.processes.TASK_MARKER)."""
    found = []
    for pid, command in processes():
        with contextlib.suppress(OSError):
            markers = [item for item in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                       if item.startswith(b"HEYGEM_TASK=")]
            if any(item[len(b"HEYGEM_TASK="):].decode(errors="replace").startswith(prefix) for item in markers):
                found.append((pid, command))
    return found


def task_workers(code: str) -> list[int]:
    """The worker process of a ray task on its node: heygem's worker, not the guard that started it."""
    return [pid for pid, command in marked(code)
            if "-m heygem.supervisor.backends.ray_node" in command and "node_guard" not in command]


class RayCluster:
    """A head with no CPUs and no GPUs (tasks run on worker nodes only) plus worker nodes, each one
    `ray start --block` process with its own temp folder (two nodes starting at once in one folder would pick
    the same socket name and one of them would abort)."""

    def __init__(self, root: Path, port: int = 6379, object_store_mb: int = 200, fast_health: bool = True) -> None:
        """`fast_health`: FAST_HEALTH for the tests; False keeps Ray's defaults (the benchmark's figures)."""
        self.root = root
        self.fast_health = fast_health
        self.port = port
        self.object_store_mb = object_store_mb
        self.token_file = root / "ray-token"
        self.nodes: dict[str, subprocess.Popen[bytes]] = {}  # node id -> its `ray start`
        self.lost: list[subprocess.Popen[bytes]] = []  # the `ray start` of nodes killed, exiting on their own
        self.head_id = ""
        self._count = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def environment(self) -> dict[str, str]:
        """Token authentication with a token of our own: never ~/.ray/auth_token."""
        return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token_file),
                **(FAST_HEALTH if self.fast_health else {})}

    def start(self, workers: list[dict[str, float]]) -> RayCluster:
        self.root.mkdir(parents=True, exist_ok=True)
        self.token_file.write_text(os.urandom(16).hex())
        self.token_file.chmod(0o600)
        os.environ.update(self.environment())
        self.head_id = self._node_of(self._start_node(["--head", f"--port={self.port}", "--num-cpus=0",
                                                       "--num-gpus=0", "--include-dashboard=false"]))
        starting = [self._start_node(self._worker_args(spec)) for spec in workers]
        self.wait_alive([self.head_id, *(self._node_of(process) for process in starting)])
        return self

    def add_worker(self, spec: dict[str, float]) -> str:
        node_id = self._node_of(self._start_node(self._worker_args(spec)))
        self.wait_alive([node_id])
        return node_id

    def _worker_args(self, spec: dict[str, float]) -> list[str]:
        return [f"--address={self.address}", f"--num-cpus={spec.get('cpus', 1):g}",
                f"--num-gpus={spec.get('gpus', 0):g}"]

    def _start_node(self, args: list[str]) -> subprocess.Popen[bytes]:
        self._count += 1
        with (self.root / f"node-{self._count}.log").open("wb") as log:
            return subprocess.Popen([RAY, "start", "--block", "--disable-usage-stats",
                                     f"--object-store-memory={self.object_store_mb * 1024 * 1024}",
                                     f"--temp-dir={self.root / f'n{self._count}'}", *args],
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                    env={**os.environ, **self.environment()})

    def _node_of(self, process: subprocess.Popen[bytes], timeout_s: float = 90) -> str:
        """The node id of the raylet that `process` (a `ray start --block`) started."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for pid, command in processes("raylet/raylet"):
                with contextlib.suppress(OSError, IndexError):
                    parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
                    if parent == process.pid:
                        node_id = command.split("--node_id=")[1].split()[0]
                        self.nodes[node_id] = process
                        return node_id
            if process.poll() is not None:
                raise RuntimeError(f"ray start exited {process.returncode}; see {self.root}/node-*.log")
            time.sleep(0.05)
        raise TimeoutError(f"no raylet appeared within {timeout_s} s; see {self.root}/node-*.log")

    def wait_alive(self, node_ids: list[str], timeout_s: float = 90) -> None:
        """Until the GCS lists these nodes as alive (connecting a driver for the question if none is)."""
        import ray

        connected_here = not ray.is_initialized()
        if connected_here:
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        try:
            deadline = time.monotonic() + timeout_s
            while not set(node_ids) <= {node["NodeID"] for node in ray.nodes() if node["Alive"]}:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"Ray nodes {node_ids} not alive within {timeout_s} s")
                time.sleep(0.1)
        finally:
            if connected_here:
                ray.shutdown()

    def raylet_pid(self, node_id: str) -> int | None:
        return next((pid for pid, command in processes("raylet/raylet") if f"--node_id={node_id}" in command), None)

    def kill_node(self, node_id: str) -> None:
        """SIGKILL a worker node's raylet: to the cluster, the machine is gone. Its `ray start` then exits."""
        pid = self.raylet_pid(node_id)
        if pid is None:
            raise RuntimeError(f"no raylet runs for node {node_id}")
        os.kill(pid, signal.SIGKILL)
        self.lost.append(self.nodes.pop(node_id))

    def stop(self) -> list[str]:
        """SIGTERM each node's `ray start --block`, workers first, head last (each stops its own daemons);
        `ray stop --force` only as a sweep. Returns what is left of Ray on this machine (should be nothing)."""
        order = [node for node in self.nodes if node != self.head_id] + [self.head_id]
        for process in [*self.lost, *(self.nodes.pop(node_id) for node_id in order if node_id in self.nodes)]:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        left = ray_processes()
        if left:
            subprocess.run([RAY, "stop", "--force", "--grace-period", "2"], capture_output=True, timeout=120)
            left = ray_processes()
        return [command[:120] for _, command in left]


def ray_processes() -> list[tuple[int, str]]:
    """Every Ray daemon and Ray worker process visible from here."""
    return [(pid, command) for pid, command in processes()
            if any(mark in command for mark in ("raylet", "gcs_server", "ray::", "ray/_private", "ray/dashboard",
                                                "ray/autoscaler", "default_worker.py"))]
