"""The redacting shim: the process that owns one local attempt, so it can outlive us.

    python -I -S .../fleetdeck/shim.py DIR STATUS_PATH ATTEMPT_ID [-r NAME]... -- COMMAND [ARG]...

Most attempts run under a shim of a few lines of sh (`executors/local.py`,
`SH_SHIM`), which is ten times cheaper to start; this one is for attempts whose
log must have secrets masked, and does the same otherwise. The local executor
starts it in the attempt's own session (so the shim is the session and
process-group leader) with stdout and stderr on the attempt's log file. The
shim starts COMMAND in DIR, waits for it, and records its exit status as one
line `ATTEMPT_ID STATUS` appended to STATUS_PATH, the run's status file (one
write(): a reader sees the whole line or none): STATUS is the decimal exit
code, or -N when a signal N killed it. It then exits the same way. If the
supervisor dies meanwhile, the attempt goes on, its output still reaches the
log, and the next supervisor finds the status (or the shim still running) and
takes the attempt up again.

With `-r NAME` (names only: values never go on a command line, where `ps` shows
them), the value of each such environment variable, when set and not empty, is
replaced by `***` in the log. COMMAND's output then passes through a pipe and
the shim; without it, COMMAND writes straight to the log and the shim only waits.

Start-up cost matters (one shim per attempt): this file imports nothing but
built-in modules (`python -X importtime` shows only those), and is run with
`-I -S` (no site, no user or environment paths), outside the fleetdeck package.
"""

# Built in, unlike `signal`, which imports enum (milliseconds per attempt); typeshed
# has no stub for it.
import _signal  # type: ignore[import-not-found]
import os
import sys

# Exit statuses a shell would give, for a command that cannot be run.
NOT_FOUND = 127
CANNOT_RUN = 126
CHUNK = 65536


def record(status_path: str, attempt_id: str, code: int) -> None:
    """Append `ATTEMPT_ID CODE` to the status file, in one write."""
    fd = os.open(status_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, b"%s %d\n" % (attempt_id.encode(), code))
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    """Write all of `data` to `fd`."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def held_back(data: bytes, secrets: list[bytes]) -> int:
    """How many bytes at the end of `data` could be the start of a secret that the
    next read completes: those wait for it."""
    longest = 0
    for secret in secrets:
        for size in range(min(len(secret) - 1, len(data)), longest, -1):
            if secret.startswith(data[-size:]):
                longest = size
                break
    return longest


def redact(data: bytes, secrets: list[bytes]) -> bytes:
    """`data` with every secret replaced by `***` (longest secrets first)."""
    for secret in secrets:
        data = data.replace(secret, b"***")
    return data


def pump(source: int, secrets: list[bytes]) -> None:
    """Copy `source` to stdout (the log) with the secrets replaced, until its end."""
    pending = b""
    while True:
        chunk = os.read(source, CHUNK)
        if not chunk:
            break
        data = redact(pending + chunk, secrets)
        keep = held_back(data, secrets)
        write_all(1, data[: len(data) - keep])
        pending = data[len(data) - keep :]
    if pending:
        write_all(1, pending)
    os.close(source)


def main(args: list[str]) -> int:
    """Run the attempt described by `args` (see the module's docstring)."""
    directory, status_path, attempt_id = args[:3]
    names: list[str] = []
    at = 3
    while args[at] == "-r":
        names.append(args[at + 1])
        at += 2
    argv = args[at + 1 :]
    values = {os.environ.get(name, "") for name in names}
    secrets = sorted((value.encode() for value in values if value), key=len, reverse=True)
    try:
        os.chdir(directory)
    except OSError as exc:
        # As sh's `cd` would: no status recorded, exit 126.
        write_all(2, f"fleetdeck: cannot enter {directory!r}: {exc.strerror}\n".encode())
        return CANNOT_RUN
    actions = []
    reader = -1
    if secrets:
        reader, writer = os.pipe()
        actions = [
            (os.POSIX_SPAWN_DUP2, writer, 1),
            (os.POSIX_SPAWN_DUP2, writer, 2),
            (os.POSIX_SPAWN_CLOSE, reader),
            (os.POSIX_SPAWN_CLOSE, writer),
        ]
    try:
        # Python ignores SIGPIPE and SIGXFSZ; the command gets the defaults back,
        # as subprocess gives them. posix_spawnp reports an exec failure here.
        pid = os.posix_spawnp(
            argv[0],
            argv,
            os.environ,
            file_actions=actions,
            setsigdef=(_signal.SIGPIPE, _signal.SIGXFSZ),
        )
    except OSError as exc:
        code = NOT_FOUND if isinstance(exc, FileNotFoundError) else CANNOT_RUN
        write_all(2, f"fleetdeck: cannot run {argv[0]!r}: {exc.strerror}\n".encode())
        record(status_path, attempt_id, code)
        return code
    if secrets:
        os.close(writer)
        pump(reader, secrets)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    record(status_path, attempt_id, code)
    if code < 0:
        # Die of the same signal, so whoever waits for the shim sees what happened.
        _signal.signal(-code, _signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        return 128 - code
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
