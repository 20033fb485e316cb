"""Drives `loopsy mcp` with the official MCP Python SDK, as an agent's client would.

Usage: mcp_client.py LOOPSY HOME PEER

HOME is the state directory of a running node that is paired with PEER. The script
checks each answer it gets and exits non-zero at the first one that is wrong; on success
it prints one JSON line with what the caller checks on the peer itself.
"""

import asyncio
import base64
import json
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

TOOLS = {
    "peers", "exec", "read_file", "write_file", "copy",
    "session_list", "session_start", "session_keys", "session_screen", "session_kill",
    "ctx_get", "ctx_set", "ctx_list", "ctx_delete", "msg_send", "msg_inbox",
}


def check(condition, what, got=None):
    if not condition:
        raise SystemExit(f"FAILED: {what}" + (f": got {got!r}" if got is not None else ""))


async def call(session, name, args=None, error=False):
    result = await session.call_tool(name, args or {})
    text = result.content[0].text if result.content else ""
    check(bool(result.is_error) == error, f"{name} {'fails' if error else 'succeeds'}", text)
    return text if error else result.structured_content


async def main(loopsy, home, peer):
    server = StdioServerParameters(command=loopsy, args=["--home", home, "mcp"])
    async with stdio_client(server) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            check(init.server_info.name == "loopsy", "server name", init.server_info.name)
            tools = {tool.name for tool in (await session.list_tools()).tools}
            check(TOOLS <= tools, "every tool listed", sorted(tools))

            peers = (await call(session, "peers"))["peers"]
            check(any(p["name"] == peer and p["paired"] and p["online"] for p in peers),
                  "the peer is listed, paired and online", peers)

            ran = await call(session, "exec", {
                "peer": peer, "argv": ["sh", "-c", "echo out; echo err >&2; exit 3"]})
            check((ran["exit_code"], ran["stdout"], ran["stderr"]) == (3, "out\n", "err\n"),
                  "exec's code and output", ran)
            ran = await call(session, "exec", {"peer": peer, "argv": ["wc", "-c"],
                                               "stdin": "hello"})
            check(ran["stdout"].strip() == "5", "exec's stdin", ran)
            ran = await call(session, "exec", {
                "peer": peer, "argv": ["sh", "-c", "yes | head -c 100000"],
                "max_output_bytes": 1000})
            check(ran["stdout_truncated"] and ran["stdout_bytes"] == 100000
                  and len(ran["stdout"]) == 1000, "exec's output cut and counted", ran)
            missing = await call(session, "exec", {"peer": "no-such-device", "argv": ["true"]},
                                 error=True)
            check("no-such-device" in missing, "an unknown device is named", missing)

            text = "héllo from an agent\n"
            wrote = await call(session, "write_file", {
                "peer": peer, "path": "from agent.txt", "content": text})
            check(wrote["bytes"] == len(text.encode()), "write_file's size", wrote)
            read = await call(session, "read_file", {"peer": peer, "path": "from agent.txt"})
            check((read["content"], read["encoding"], read["truncated"]) == (text, "utf-8", False),
                  "read_file gives back what was written", read)
            blob = bytes(range(256)) * 8
            await call(session, "write_file", {
                "peer": peer, "path": "blob.bin", "encoding": "base64",
                "content": base64.b64encode(blob).decode()})
            read = await call(session, "read_file", {"peer": peer, "path": "blob.bin",
                                                     "max_bytes": 1000})
            check(read["encoding"] == "base64" and read["truncated"] and read["size"] == 2048
                  and base64.b64decode(read["content"]) == blob[:1000],
                  "a binary file in base64, cut at max_bytes", read)
            refused = await call(session, "read_file", {"peer": peer, "path": "../outside"},
                                 error=True)
            check("refused" in refused and ".." in refused,
                  "a path out of the file roots is refused, and named", refused)

            started = await call(session, "session_start", {
                "peer": peer, "name": "agent", "command": ["sh"], "rows": 10, "cols": 60})
            screen = await call(session, "session_keys", {
                "session": started["id"], "peer": peer, "keys": "echo $((6 * 7))",
                "enter": True, "wait_ms": 10000})
            # Typed ahead of a slow shell, the line is echoed before the prompt, and the
            # answer then follows the prompt on its line ("# 42").
            check(any(line.split()[-1:] == ["42"] for line in screen["text"].splitlines()),
                  "the session's screen shows the answer", screen)
            check((screen["rows"], screen["cols"], screen["status"]) == (10, 60, "running"),
                  "the session keeps its size and runs", screen)
            # Found by asking the mesh, by name.
            again = await call(session, "session_screen", {"session": "agent"})
            check(again["text"] == screen["text"], "session_screen reads the same screen", again)

            listed = (await call(session, "session_list"))["sessions"]
            check(any(s["id"] == started["id"] and s["host"] == peer for s in listed),
                  "session_list has it", listed)
            resources = {r.uri for r in (await session.list_resources()).resources}
            uri = next((u for u in resources if u.endswith("/" + started["id"])), None)
            check("loopsy://peers" in resources and uri, "peers and the session as resources",
                  resources)
            contents = (await session.read_resource(uri)).contents[0].text
            check("42" in contents, "the session resource is its screen", contents)

            entry = await call(session, "ctx_set", {"key": "agent/task", "value": "build"})
            check(entry["value"] == "build", "ctx_set", entry)
            entry = await call(session, "ctx_get", {"key": "agent/task"})
            check(entry["value"] == "build", "ctx_get", entry)
            keys = [e["key"] for e in (await call(session, "ctx_list",
                                                  {"prefix": "agent/"}))["entries"]]
            check(keys == ["agent/task"], "ctx_list", keys)
            await call(session, "ctx_delete", {"key": "agent/task"})
            await call(session, "ctx_get", {"key": "agent/task"}, error=True)

            sent = await call(session, "msg_send", {"peer": peer, "text": "build is green"})
            check(sent["id"], "msg_send", sent)
            print(json.dumps({"session": started["id"], "message": sent["id"]}))


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
