"""Real OpenSSH servers for the SSH tests and the SSH benchmark.

`SshLab` makes a world-readable scratch directory with a client key pair, an
`authorized_keys` file shared by every server it starts, and a `known_hosts`
file listing each server's throwaway host key. `SshServer` is one
`/usr/sbin/sshd -D` on 127.0.0.1 and a free port, configured to need no PAM, no
system host keys and no setup outside the lab directory, so any number of them
run side by side. Tests log in as the non-root user `fleetdeck-test` (created on
first use; we run as root in CI) and, where they say so, as root.

See DEVELOPERS.md for running the same server by hand.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

SSHD = "/usr/sbin/sshd"
TEST_USER = "fleetdeck-test"
# sshd's own processes: the listener and, per connection, the privileged monitor
# and the user's side. OpenSSH 9.8 and later run a connection as `sshd-session`
# (and authentication as `sshd-auth` from 10.0).
SSHD_NAMES = frozenset({"sshd", "sshd-session", "sshd-auth"})
# How long a server gets to start listening; generous for a loaded 2-core machine.
START_TIMEOUT = 20.0


def missing_tools() -> str | None:
    """Why real-OpenSSH tests cannot run here, or None when they can."""
    if not os.path.exists(SSHD):
        return f"{SSHD} is missing (apt-get install openssh-server, or `make test`)"
    for tool in ("ssh-keygen", "ssh", "ps"):
        if shutil.which(tool) is None:
            return f"{tool} is missing (apt-get install openssh-client procps)"
    if os.geteuid() != 0:
        # sshd must run as root to switch to the test user.
        return "the SSH tests start sshd and log in as another user: run them as root"
    return None


def ensure_test_user(name: str = TEST_USER) -> None:
    """Create the unprivileged login user the tests use, once per machine.

    `usermod -p '*'`: a new account is locked ('!'), and without PAM sshd refuses
    any login to a locked account, key or not; '*' allows keys, never a password.
    """
    if subprocess.run(["id", "-u", name], capture_output=True).returncode == 0:
        return
    subprocess.run(["useradd", "-m", "-s", "/bin/sh", name], check=True, capture_output=True)
    subprocess.run(["usermod", "-p", "*", name], check=True, capture_output=True)


def free_port() -> int:
    """A TCP port nobody listens on right now (a tiny race we retry on)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def keygen(path: Path, comment: str) -> str:
    """Make an ed25519 key pair without a passphrase; return the public key line."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        capture_output=True,
    )
    return path.with_name(path.name + ".pub").read_text().strip()


@dataclass
class SshServer:
    """One running sshd on 127.0.0.1:`port`, with its own host key."""

    name: str
    lab: SshLab
    port: int
    host_key: Path
    host_key_line: str  # "ssh-ed25519 AAAA... comment"
    address: str = "127.0.0.1"
    netns: str | None = None  # a network namespace to run in (`ip netns exec`)
    process: subprocess.Popen[bytes] | None = None
    frozen: list[psutil.Process] = field(default_factory=list)
    extra: tuple[str, ...] = ()  # more sshd_config lines (a test's restriction)

    @property
    def log(self) -> Path:
        """sshd's own log (-e sends it to stderr, which goes here)."""
        return self.lab.root / f"{self.name}.sshd.log"

    def config_text(self) -> str:
        """The sshd_config of this server."""
        return "\n".join(
            [
                f"Port {self.port}",
                f"ListenAddress {self.address}",
                f"HostKey {self.host_key}",
                f"AuthorizedKeysFile {self.lab.authorized_keys}",
                "PidFile none",
                "UsePAM no",
                "StrictModes no",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PermitRootLogin prohibit-password",
                "MaxSessions 20",
                "MaxStartups 50",
                "LogLevel ERROR",
                *self.extra,
                "",
            ]
        )

    def start(self) -> None:
        """Start sshd and wait until it greets a client."""
        config = self.lab.root / f"{self.name}.sshd_config"
        config.write_text(self.config_text())
        # sshd checks that its privilege-separation directory exists.
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        with open(self.log, "ab") as log:
            # `ip netns exec` execs sshd: the pid is the listener's either way.
            self.process = subprocess.Popen(
                [*prefix, SSHD, "-D", "-e", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sshd {self.name} exited: {self.log.read_text()[-2000:]}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.address, self.port), timeout=2) as sock,
            ):
                sock.settimeout(5)
                if sock.recv(64).startswith(b"SSH-2.0-"):
                    return
            time.sleep(0.05)
        raise RuntimeError(f"sshd {self.name} did not answer on port {self.port}")

    def sshd_processes(self) -> list[psutil.Process]:
        """The listener and every sshd it forked for a connection (not the users' shells)."""
        if self.process is None:
            return []
        try:
            listener = psutil.Process(self.process.pid)
            found = [listener]
            for child in listener.children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    if child.name() in SSHD_NAMES:
                        found.append(child)
        except psutil.Error:
            return []
        return found

    def freeze(self) -> None:
        """Make the host stop answering: SIGSTOP the listener and its connections.

        The attempts keep running, as on a host whose network went away; they
        must be stopped by the wrapper once sshd notices the connection is gone.
        """
        self._stop_processes(self.sshd_processes())

    def freeze_connections(self) -> None:
        """SIGSTOP the connections open now but not the listener: the old
        connections go silent (their sessions see no end of input) while new
        ones are served, as after a partition that healed."""
        self._stop_processes(self.sshd_processes()[1:])

    def _stop_processes(self, processes: list[psutil.Process]) -> None:
        self.frozen += processes
        for proc in processes:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """Undo `freeze()`."""
        for proc in self.frozen:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(signal.SIGCONT)
        self.frozen = []

    def stop(self) -> None:
        """Stop the server and every connection it still serves."""
        self.thaw()
        if self.process is None:
            return
        # Connection children first: killing the listener alone leaves them.
        for proc in reversed(self.sshd_processes()):
            with contextlib.suppress(psutil.Error):
                proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def host(self, **overrides: object) -> dict[str, object]:
        """A `[hosts.NAME]` table (as a dict) for this server."""
        table: dict[str, object] = {
            "address": self.address,
            "port": self.port,
            "user": TEST_USER,
            "identity": str(self.lab.client_key),
            "known_hosts": str(self.lab.known_hosts),
            "connect_timeout": 10.0,
            "keepalive_interval": 2.0,
            "keepalive_count": 3,
        }
        table.update(overrides)
        return table

    def known_hosts_line(self) -> str:
        """This server's line for a known_hosts file."""
        name = self.address if self.port == 22 else f"[{self.address}]:{self.port}"
        return f"{name} {self.host_key_line}"

    def ssh_argv(self, *command: str, user: str = TEST_USER) -> list[str]:
        """Plain OpenSSH `ssh` running `command` on this server (the benchmark's baseline)."""
        return [
            "ssh",
            "-p",
            str(self.port),
            "-i",
            str(self.lab.client_key),
            "-o",
            "BatchMode=yes",
            "-o",
            f"UserKnownHostsFile={self.lab.known_hosts}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "IdentitiesOnly=yes",
            "-F",
            "/dev/null",
            f"{user}@{self.address}",
            *command,
        ]


@dataclass
class SshLab:
    """A scratch directory with a client key and any number of sshd servers."""

    root: Path
    client_key: Path
    authorized_keys: Path
    known_hosts: Path
    servers: list[SshServer] = field(default_factory=list)

    @classmethod
    def create(cls) -> SshLab:
        """Make the directory, the client key pair and the (empty) known_hosts."""
        # Not under pytest's tmp_path: that is mode 0700 and root's, and sshd reads
        # authorized_keys as the login user.
        root = Path(tempfile.mkdtemp(prefix="fleetdeck-sshlab-"))
        root.chmod(0o755)
        client_key = root / "client_key"
        public = keygen(client_key, "fleetdeck-test-client")
        authorized_keys = root / "authorized_keys"
        authorized_keys.write_text(public + "\n")
        authorized_keys.chmod(0o644)
        known_hosts = root / "known_hosts"
        known_hosts.write_text("")
        return cls(root, client_key, authorized_keys, known_hosts)

    def start_server(
        self,
        name: str,
        *,
        trusted: bool = True,
        netns: NetworkNamespace | None = None,
        extra: tuple[str, ...] = (),
    ) -> SshServer:
        """Start a server with a fresh host key; `trusted` lists it in known_hosts.

        With `netns`, the server runs in that namespace, on its address; `extra`
        lines are added to its sshd_config.
        """
        host_key = self.root / f"{name}.host_key"
        line = keygen(host_key, f"fleetdeck-test-host-{name}")
        last_error: Exception | None = None
        for _ in range(5):
            if netns is None:
                server = SshServer(name, self, free_port(), host_key, line, extra=extra)
            else:
                # Nothing else listens in a namespace of our own.
                server = SshServer(
                    name,
                    self,
                    22,
                    host_key,
                    line,
                    address=netns.address,
                    netns=netns.name,
                    extra=extra,
                )
            try:
                server.start()
            except RuntimeError as exc:  # lost the race for the port: try another
                last_error = exc
                server.stop()
                continue
            self.servers.append(server)
            if trusted:
                with open(self.known_hosts, "a") as known:
                    known.write(server.known_hosts_line() + "\n")
            return server
        raise RuntimeError(f"could not start sshd {name}: {last_error}")

    def stop_server(self, server: SshServer) -> None:
        """Stop one server for good (one a test started for itself)."""
        server.stop()
        with contextlib.suppress(ValueError):
            self.servers.remove(server)

    def close(self) -> None:
        """Stop every server and remove the directory."""
        for server in self.servers:
            server.stop()
        self.servers.clear()
        shutil.rmtree(self.root, ignore_errors=True)


def processes_matching(marker: str) -> list[str]:
    """`ps` on the host (this machine): lines of live processes whose command line
    holds `marker`, whoever runs them. The SSH tests' proof that nothing is left."""
    listing = subprocess.run(
        ["ps", "-e", "-o", "pid=,stat=,user=,args="],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [
        line.strip()
        for line in listing.splitlines()
        # Zombies are dead: their parent has yet to reap them.
        if marker in line and line.split()[1][0] != "Z" and "ps -e -o" not in line
    ]


class NetworkNamespace:
    """A network namespace joined to this one by a veth pair: a host behind a
    link the tests can cut, for a real network partition.

    Addresses are link-local (169.254.N.1 here, 169.254.N.2 in the namespace):
    traffic cannot leave the pair. The link is cut and healed inside the
    namespace only; this side is never touched but to create and delete it.
    Needs root and `ip` (iproute2).
    """

    def __init__(self) -> None:
        tag = os.getpid() % 100_000
        self.name = f"fleetdeck-test-{tag}"
        self._outside = f"fdk{tag}o"
        self._inside = f"fdk{tag}i"
        subnet = 1 + tag % 250
        self.address = f"169.254.{subnet}.2"
        self._outside_address = f"169.254.{subnet}.1"

    @staticmethod
    def missing() -> str | None:
        """Why namespaces cannot be made here, or None when they can."""
        if os.geteuid() != 0:
            return "network namespaces need root"
        if shutil.which("ip") is None:
            return "ip (iproute2) is missing"
        return None

    def _ip(self, *args: str, inside: bool = False) -> None:
        prefix = ["ip", "netns", "exec", self.name] if inside else []
        subprocess.run([*prefix, "ip", *args], check=True, capture_output=True, timeout=30)

    def create(self) -> None:
        """Make the namespace and the link, both ends up."""
        self.delete()  # what a killed earlier run of this pid may have left
        self._ip("netns", "add", self.name)
        self._ip("link", "add", self._outside, "type", "veth", "peer", "name", self._inside)
        self._ip("link", "set", self._inside, "netns", self.name)
        self._ip("addr", "add", f"{self._outside_address}/30", "dev", self._outside)
        self._ip("link", "set", self._outside, "up")
        self._ip("addr", "add", f"{self.address}/30", "dev", self._inside, inside=True)
        self._ip("link", "set", "lo", "up", inside=True)
        self.heal()

    def cut(self) -> None:
        """Take the link down inside the namespace: packets either way are lost,
        and neither side's TCP is told anything."""
        self._ip("link", "set", self._inside, "down", inside=True)

    def heal(self) -> None:
        """Bring the link back up."""
        self._ip("link", "set", self._inside, "up", inside=True)

    def delete(self) -> None:
        """Remove the link and the namespace (stop the servers in it first)."""
        for args in (["link", "del", self._outside], ["netns", "del", self.name]):
            with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
                self._ip(*args)
