"""The control socket of a fleet on another machine, reached over SSH:
`ssh://[user@]host[:port]/path/to/state_dir`.

Nothing of fleetdeck listens on a network port, and nothing of fleetdeck runs
on the remote side for the link: asyncssh asks the remote sshd to connect a
channel to `STATE_DIR/control.sock` (OpenSSH's direct-streamlocal forwarding,
what `ssh -L local.sock:remote.sock` does). sshd connects as the login user,
so the supervisor's peer-credential check sees that user's uid: log in as the
user the fleet runs as. The server must allow it (`AllowStreamLocalForwarding`,
yes by default in OpenSSH).

The SSH side is the user's, as with `ssh`: ~/.ssh/config applies (HostName,
User, Port, IdentityFile, ProxyJump...), the keys are ~/.ssh's and the agent's,
and host keys are checked against ~/.ssh/known_hosts and
/etc/ssh/ssh_known_hosts: an unknown key or one that differs from them is
refused, never accepted (there is no fleet file here to opt in with
`trust_unknown_host_key`; `ssh` to the host once, or `ssh-keyscan`, to add it).

The protocol code is the client's own (`SocketClient`, blocking reads in its
thread): this transport hands it one end of a socket pair, and an event loop
in a thread of its own copies bytes between the other end and the channel.
(asyncssh's own line reading stops at the channel's receive window, smaller
than a big fleet's snapshot line; the client splits lines itself.)
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import shlex
import socket
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote

import asyncssh

from fleetdeck.remote.protocol import SOCKET_NAME
from fleetdeck.remote.socket_client import AttachError, Transport

T = TypeVar("T")

# How long to wait for the host (TCP, SSH handshake and login).
CONNECT_SECONDS = 15.0
# A dead link is noticed after about KEEPALIVE_SECONDS x (KEEPALIVE_COUNT + 1).
KEEPALIVE_SECONDS = 15.0
KEEPALIVE_COUNT = 3
# How long the whole opening (login, channel, the look at why it failed) may take.
OPEN_SECONDS = 60.0
# Bytes copied at a time between the channel and the socket pair.
CHUNK = 256 * 1024
# What the terminal session that keeps sshd's TCP_NODELAY on runs (`_quicken`):
# a loop of the login shell reading the terminal, which ends when the terminal
# is hung up (reads return end of file), whatever SIGHUP's disposition is (a
# process may inherit it ignored or blocked). Its first words name it in `ps`.
HOLD_COMMAND = ": fleetdeck-attach-hold; while read -r line; do :; done"
# How long closing may wait for the connection to end.
CLOSE_SECONDS = 5.0


@dataclass(frozen=True)
class SshTarget:
    """A state directory on another machine, as `ssh://[user@]host[:port]/path` names it."""

    host: str
    path: str  # absolute, on the remote machine
    user: str | None = None
    port: int | None = None  # None: ~/.ssh/config's, or 22

    @property
    def destination(self) -> str:
        """`[user@]host[:port]`, for messages."""
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port is not None else ""
        return f"{user}{self.host}{port}"

    @property
    def socket(self) -> str:
        """The control socket's path on the remote machine."""
        return f"{self.path.rstrip('/')}/{SOCKET_NAME}"

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port is not None else ""
        return f"ssh://{user}{host}{port}{self.path}"


def parse_target(text: str) -> SshTarget:
    """The `SshTarget` an `ssh://` URL names (AttachError, in one line, if it names none)."""
    rest = text.removeprefix("ssh://")
    where, slash, path = rest.partition("/")
    usage = "ssh://[user@]host[:port]/path/to/state_dir"
    if not slash or not path.strip("/"):
        raise AttachError(f"{text}: no state directory after the host (want {usage})")
    user, at, hostport = where.rpartition("@")
    if at and not user:
        raise AttachError(f"{text}: empty user name before '@' (want {usage})")
    if hostport.startswith("["):  # [IPv6 address]:port
        host, bracket, after = hostport[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            raise AttachError(f"{text}: unclosed '[' in the host (want {usage})")
        port_text = after[1:] if after else None
    else:
        host, colon, port_text_or_empty = hostport.partition(":")
        port_text = port_text_or_empty if colon else None
    if not host:
        raise AttachError(f"{text}: no host (want {usage})")
    port: int | None = None
    if port_text is not None:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise AttachError(f"{text}: port {port_text!r} is not a number from 1 to 65535")
        port = int(port_text)
    return SshTarget(host=host, path="/" + unquote(path), user=unquote(user) or None, port=port)


def known_hosts_files() -> list[Path]:
    """The known_hosts files host keys are checked against, as OpenSSH's defaults."""
    return [Path("~/.ssh/known_hosts").expanduser(), Path("/etc/ssh/ssh_known_hosts")]


class _HostKeys(asyncssh.SSHClient):
    """Says why a host key was refused: asyncssh asks it only for a key no
    known_hosts file lists for the host, and it never accepts one."""

    def __init__(self, transport: SshTransport) -> None:
        self._transport = transport

    def validate_host_public_key(
        self, host: str, addr: str, port: int, key: asyncssh.SSHKey
    ) -> bool:
        listed: list[Any] = []
        for path in self._transport.known_hosts:
            with contextlib.suppress(OSError, ValueError, asyncssh.Error):
                listed += list(
                    asyncssh.match_known_hosts(str(path), host, addr, None if port == 22 else port)[
                        0
                    ]
                )
        verdict = "changed" if listed else "unknown"
        self._transport.key_verdict = (verdict, key.get_fingerprint())
        return False


class SshTransport(Transport):
    """A supervisor's control socket on another machine, through an SSH connection
    that lives in a thread of its own (with its event loop)."""

    def __init__(self, target: SshTarget, sock: socket.socket, other: socket.socket) -> None:
        super().__init__(sock, str(target))
        self.target = target
        self.known_hosts = [path for path in known_hosts_files() if path.is_file()]
        self.key_verdict: tuple[str, str] | None = None  # why the host key was refused
        self._other = other  # the socket pair's end the channel is copied to and from
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="fleetdeck-ssh", daemon=True
        )
        self._conn: asyncssh.SSHClientConnection | None = None
        self._pumps: list[asyncio.Task[None]] = []
        self._lost: str | None = None
        self._closed = False

    @classmethod
    def open(cls, url: str) -> SshTransport:
        """Connect to the host of `url` and open a channel to its fleet's control
        socket (AttachError, in one line, if it cannot)."""
        target = parse_target(url)
        sock, other = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        transport = cls(target, sock, other)
        transport._thread.start()
        try:
            transport._call(asyncio.wait_for(transport._open(), OPEN_SECONDS))
        except TimeoutError:
            transport.close()
            sock.close()
            raise AttachError(
                f"{target}: {target.host} did not open the socket within {OPEN_SECONDS:g}s"
            ) from None
        except BaseException:
            transport.close()
            sock.close()
            raise
        return transport

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    # --- on the transport's own loop ------------------------------------------------

    async def _open(self) -> None:
        target = self.target
        known: list[str] | bytes = [str(path) for path in self.known_hosts] or b""
        try:
            conn = await asyncssh.connect(
                target.host,
                target.port if target.port is not None else (),
                username=target.user if target.user is not None else (),
                known_hosts=known,
                connect_timeout=CONNECT_SECONDS,
                keepalive_interval=KEEPALIVE_SECONDS,
                keepalive_count_max=KEEPALIVE_COUNT,
                client_factory=lambda: _HostKeys(self),
            )
        except asyncssh.HostKeyNotVerifiable as exc:
            raise AttachError(self._host_key_message(exc)) from None
        except asyncssh.PermissionDenied:
            raise AttachError(
                f"{target.destination}: login refused (tried the keys in ~/.ssh, those "
                "~/.ssh/config names and the SSH agent's)"
            ) from None
        except TimeoutError:
            raise AttachError(
                f"{target.destination}: no answer within {CONNECT_SECONDS:g}s"
            ) from None
        except ConnectionRefusedError:
            raise AttachError(
                f"{target.destination}: connection refused (is sshd listening there?)"
            ) from None
        except socket.gaierror as exc:
            raise AttachError(f"cannot resolve {target.host}: {exc.strerror}") from None
        except OSError as exc:
            if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
                raise AttachError(f"{target.host} is unreachable: {exc.strerror}") from None
            raise AttachError(f"cannot connect to {target.destination}: {exc}") from None
        except asyncssh.Error as exc:
            raise AttachError(f"SSH with {target.destination} failed: {exc.reason}") from None
        except ValueError as exc:  # asyncssh.ConfigParseError among them
            raise AttachError(f"SSH settings for {target.host}: {exc}") from None
        self._conn = conn
        try:
            chan_reader, chan_writer = await conn.open_unix_connection(target.socket)
        except asyncssh.ChannelOpenError as exc:
            raise AttachError(await self._open_refused(conn, exc)) from None
        await self._quicken(conn)
        reader, writer = await asyncio.open_connection(sock=self._other, limit=CHUNK)
        self._pumps = [
            asyncio.create_task(self._up(reader, chan_writer)),
            asyncio.create_task(self._down(chan_reader, writer)),
        ]

    async def _quicken(self, conn: asyncssh.SSHClientConnection) -> None:
        """Make sshd send small messages at once: OpenSSH turns Nagle's algorithm
        off (TCP_NODELAY) only for a connection with a terminal session, and
        without it a command's reply, sent just after its snapshot, waits for
        the client's delayed ACK (about 40 ms a key, measured). So a session
        on a pty holds a shell loop that the terminal's hangup ends with the
        connection. A server that refuses terminals (PermitTTY no, `restrict`)
        is only slower."""
        with contextlib.suppress(OSError, asyncssh.Error, TimeoutError):
            await asyncio.wait_for(
                conn.create_session(asyncssh.SSHClientSession, HOLD_COMMAND, term_type="dumb"),
                CONNECT_SECONDS,
            )

    def _host_key_message(self, exc: asyncssh.HostKeyNotVerifiable) -> str:
        target = self.target
        files = " or ".join(str(path) for path in self.known_hosts) or "~/.ssh/known_hosts"
        user_file = known_hosts_files()[0]
        port = f"-p {target.port} " if target.port not in (None, 22) else ""
        if self.key_verdict is None:
            return f"{target.destination}: host key not accepted: {exc.reason}"
        verdict, fingerprint = self.key_verdict
        if verdict == "changed":
            return (
                f"{target.destination}: HOST KEY CHANGED: it offered {fingerprint}, which does "
                f"not match {files} (the host was reinstalled, or someone is in the middle); "
                "refusing to connect"
            )
        return (
            f"{target.destination}: unknown host key {fingerprint}, not in {files}; refusing "
            f"to connect. If it is the host's key, add it (ssh-keyscan {port}{target.host} >> "
            f"{user_file}) or log in once with ssh to check it"
        )

    async def _open_refused(
        self, conn: asyncssh.SSHClientConnection, exc: asyncssh.ChannelOpenError
    ) -> str:
        """Why sshd would not connect to the control socket, in one line."""
        target = self.target
        forbidden = (
            f"{target.destination} does not let this login forward to a Unix socket "
            "(AllowStreamLocalForwarding no in its sshd_config, or restrict or "
            "no-port-forwarding on the key), which attaching over SSH needs"
        )
        if exc.code == asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED:
            return forbidden
        # OpenSSH answers "open failed" whatever the cause: a look with a shell
        # says which (the journal's lock file holds the supervisor's pid).
        path = shlex.quote(target.path)
        script = (
            f"[ -d {path} ] || exit 3; cd {path} 2>/dev/null || exit 6; "
            f"[ -S {SOCKET_NAME} ] || exit 4; [ -w {SOCKET_NAME} ] || exit 5; "
            'pid=$(cat lock 2>/dev/null); [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || exit 7; '
            # A zombie answers kill -0: its state in /proc says it is dead.
            '[ "$(sed "s/.*) //;s/ .*//" /proc/"$pid"/stat 2>/dev/null)" != Z ] || exit 7; '
            "exit 0"
        )
        try:
            result = await asyncio.wait_for(
                conn.run(script, check=False, stdin=asyncssh.DEVNULL), CONNECT_SECONDS
            )
            status = result.exit_status
        except (OSError, asyncssh.Error, TimeoutError):
            status = None
        login = target.user or "the login user"
        where = str(target)
        if status == 0:  # a supervisor runs, its socket is there and ours: sshd said no
            return forbidden
        return {
            3: f"{where}: no such state directory on {target.host}",
            4: f"{where}: no fleet is running there (no {SOCKET_NAME})",
            5: f"{where}: the fleet there is not {login}'s: log in as the user it runs as",
            6: f"{where}: {login} cannot enter it: log in as the user the fleet runs as",
            7: f"{where}: no fleet is running there (its supervisor has gone; "
            "`fleetdeck start` there resumes it)",
        }.get(
            status or -1,
            f"{where}: no fleet is running there ({target.host} could not connect to "
            f"{SOCKET_NAME}: {exc.reason})",
        )

    async def _up(self, reader: asyncio.StreamReader, chan: asyncssh.SSHWriter[bytes]) -> None:
        """The client's requests, to the channel; its end closes the channel."""
        try:
            while data := await reader.read(CHUNK):
                chan.write(data)
                await chan.drain()
            chan.write_eof()
        except (OSError, asyncssh.Error) as exc:
            self._lost = self._lost or self._why_lost(exc)

    async def _down(self, chan: asyncssh.SSHReader[bytes], writer: asyncio.StreamWriter) -> None:
        """The supervisor's messages, to the client; the channel's end (or the
        connection's loss) ends the client's stream."""
        try:
            while data := await chan.read(CHUNK):
                writer.write(data)
                await writer.drain()
        except (OSError, asyncssh.Error) as exc:
            self._lost = self._lost or self._why_lost(exc)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    def _why_lost(self, exc: BaseException) -> str:
        reason = exc.reason if isinstance(exc, asyncssh.Error) else str(exc)
        return f"the SSH connection to {self.target.destination} was lost: {reason}"

    async def _shutdown(self) -> None:
        for pump in self._pumps:
            pump.cancel()
        for pump in self._pumps:
            with contextlib.suppress(asyncio.CancelledError, OSError, asyncssh.Error):
                await pump
        if self._conn is not None:
            self._conn.close()
            with contextlib.suppress(TimeoutError, OSError, asyncssh.Error):
                await asyncio.wait_for(self._conn.wait_closed(), CLOSE_SECONDS)

    # --- Transport ------------------------------------------------------------------

    def lost(self) -> str | None:
        """Why the SSH connection failed under the client, if it did."""
        return None if self._closed else self._lost

    def close(self) -> None:
        """Close the SSH connection and stop its thread (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(
                    CLOSE_SECONDS * 2
                )
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(CLOSE_SECONDS)
        if not self._thread.is_alive():
            self._loop.close()
        with contextlib.suppress(OSError):
            self._other.close()
