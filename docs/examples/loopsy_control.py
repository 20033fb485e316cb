"""A small client of Loopsy's local control API (docs/control-api.md), in Python.

Needs the `cbor2` package (pip install cbor2). Usage:

    python3 loopsy_control.py [HOME [PEER]]

HOME is the node's state directory (default: ~/.local/share/loopsy); with PEER, a paired
device, it also runs `uname` there. The functions below are the whole client: copy them.
"""

import os
import socket
import struct
import sys

import cbor2

API_VERSION = 1
MAX_FRAME = 1024 * 1024
# Exec frames are at most 256 KiB: input goes in pieces.
STDIN_CHUNK = 64 * 1024


class LoopsyError(Exception):
    """The node answered with an `error`: `code` says which kind."""

    def __init__(self, code, message):
        super().__init__(f"{code}: {message}")
        self.code = code


class Connection:
    """One request to the node, and the frames it answers with."""

    def __init__(self, home, op, **fields):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(os.path.join(home, "control.sock"))
        self.send({"v": API_VERSION, "op": op, **fields})

    def send(self, message):
        body = cbor2.dumps(message)
        self.sock.sendall(struct.pack(">I", len(body)) + body)

    def recv(self):
        """The next frame, or None once the node closed the connection."""
        header = self._read(4)
        if header is None:
            return None
        (length,) = struct.unpack(">I", header)
        if length > MAX_FRAME:
            raise LoopsyError("bad_request", f"a frame of {length} bytes is too large")
        body = self._read(length)
        if body is None:
            raise LoopsyError("internal", "the node closed the connection mid-frame")
        message = cbor2.loads(body)
        if message.get("type") == "error":
            raise LoopsyError(message["code"], message["message"])
        return message

    def _read(self, n):
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                return None
            data += chunk
        return data

    def close(self):
        self.sock.close()


def request(home, op, **fields):
    """Sends one request and returns its one response."""
    connection = Connection(home, op, **fields)
    try:
        return connection.recv()
    finally:
        connection.close()


def run(home, peer, argv, stdin=b""):
    """Runs argv on a peer; returns (exit code, stdout, stderr)."""
    start = {"argv": argv, "cwd": None, "env": [], "timeout_secs": 60, "pty": None}
    connection = Connection(home, "exec", peer=peer, start=start)
    try:
        connection.recv()  # `stream`: from here on, /loopsy/exec/1 frames
        for start_at in range(0, len(stdin), STDIN_CHUNK):
            connection.send({"type": "stdin", "data": stdin[start_at:start_at + STDIN_CHUNK]})
        connection.send({"type": "stdin_eof"})
        out, err = b"", b""
        while (reply := connection.recv()) is not None:
            if reply["type"] == "stdout":
                out += reply["data"]
            elif reply["type"] == "stderr":
                err += reply["data"]
            elif reply["type"] == "refused":
                raise LoopsyError("refused", reply["reason"])
            elif reply["type"] == "exited":
                return reply["code"], out, err
        raise LoopsyError("unreachable", "the connection closed before the program ended")
    finally:
        connection.close()


def main():
    home = sys.argv[1] if len(sys.argv) > 1 else os.path.expanduser("~/.local/share/loopsy")
    me = request(home, "id")
    print(f"this device: {me['name']} ({me['peer_id']})")
    for peer in request(home, "peers")["peers"]:
        state = "online" if peer["online"] else "offline"
        print(f"{peer['name'] or peer['peer_id']}: {state}, {peer['connection']}")
    request(home, "ctx_set", key="example/greeting", value="hello from python", ttl_secs=None)
    entry = request(home, "ctx_get", key="example/greeting")["entries"][0]
    print(f"ctx {entry['key']} = {entry['value']}")
    if len(sys.argv) > 2:
        code, out, _ = run(home, sys.argv[2], ["uname", "-s"])
        print(f"uname on {sys.argv[2]}: {out.decode().strip()} (exit code {code})")


if __name__ == "__main__":
    main()
