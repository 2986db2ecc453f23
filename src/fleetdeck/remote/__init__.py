"""The fleet outlives the terminal: a supervisor's control socket, and the
clients that attach to it (the TUI, the script commands).

- `protocol.py`: the one versioned JSON-lines protocol (docs/protocol.md).
- `server.py`: `ControlServer`, in the supervisor's process, over its engine.
- `socket_client.py`: `SocketClient`, an `EngineClient` at the other end of the
  socket, and `RemoteRun`, the `RunHandle` of a run in another process.
- `ssh_transport.py`: `SshTransport`, the same socket on another machine, over
  SSH (`ssh://[user@]host[:port]/state_dir`).
- `supervise.py`: the detached supervisor (`fleetdeck start`) and its registry.
- `commands.py`: `fleetdeck start|attach|ps|stop|status|...`.
"""
