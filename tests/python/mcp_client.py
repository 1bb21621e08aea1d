"""Drive memhost's /mcp endpoint with the official MCP Python SDK (`mcp`),
as an MCP client would. Called by tests/tests/mcp.rs; prints one JSON
object per line with what it saw, for the Rust test to check.

usage: mcp_client.py SCENARIO URL KEY NAMESPACE MODE
  SCENARIO  tools | reader | refused | restart | admin (connects to /mcp?profile=admin)
  MODE      auto (2026-07-28, server/discover) | legacy (initialize handshake)
"""

import asyncio
import json
import sys

from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client


def say(**seen):
    print(json.dumps(seen), flush=True)


def result(r):
    """A CallToolResult as plain data."""
    return {
        "is_error": r.is_error,
        "structured": r.structured_content,
        "text": [c.text for c in r.content if getattr(c, "type", "") == "text"],
    }


async def tools(client, ns):
    listed = await client.list_tools()
    say(
        step="list_tools",
        tools={
            t.name: {
                "read_only": t.annotations.read_only_hint if t.annotations else None,
                "destructive": t.annotations.destructive_hint if t.annotations else None,
                "idempotent": t.annotations.idempotent_hint if t.annotations else None,
                "required": (t.input_schema or {}).get("required", []),
                "properties": sorted((t.input_schema or {}).get("properties", {}).keys()),
            }
            for t in listed.tools
        },
    )
    stored = result(
        await client.call_tool(
            "memory_store",
            {
                "namespace": ns,
                "content": "Alice prefers green tea over coffee in the morning",
                "title": "Alice's drink",
                "tags": ["prefs"],
            },
        )
    )
    say(step="store", **stored)
    mid = stored["structured"]["id"]
    say(step="store_again", **result(await client.call_tool(
        "memory_store", {"namespace": ns, "content": "Alice prefers green tea over coffee in the morning"})))
    say(step="recall", **result(await client.call_tool(
        "memory_recall", {"namespace": ns, "query": "what does Alice drink in the morning?", "k": 3})))
    say(step="get", **result(await client.call_tool("memory_get", {"namespace": ns, "id": mid})))
    say(step="update", **result(await client.call_tool(
        "memory_update", {"namespace": ns, "id": mid, "content": "Alice now prefers black coffee"})))
    say(step="list", **result(await client.call_tool("memory_list", {"namespace": ns})))
    say(step="namespaces", **result(await client.call_tool("memory_namespaces", {})))
    found = result(await client.call_tool("search", {"query": "coffee"}))
    say(step="search", **found)
    first = found["structured"]["results"][0]["id"] if found["structured"]["results"] else ns + "/none"
    say(step="fetch", **result(await client.call_tool("fetch", {"id": first})))
    say(step="bad_id", **result(await client.call_tool("memory_get", {"namespace": ns, "id": "not-a-uuid"})))
    say(step="unknown_ns", **result(await client.call_tool(
        "memory_recall", {"namespace": "no-such-namespace", "query": "x"})))
    say(step="forget", **result(await client.call_tool("memory_forget", {"namespace": ns, "id": mid})))
    say(step="get_forgotten", **result(await client.call_tool("memory_get", {"namespace": ns, "id": mid})))


async def reader(client, ns):
    listed = await client.list_tools()
    say(step="list_tools", names=sorted(t.name for t in listed.tools))
    say(step="store", **result(await client.call_tool("memory_store", {"namespace": ns, "content": "x"})))
    say(step="recall", **result(await client.call_tool("memory_recall", {"namespace": ns, "query": "tea"})))


async def admin(client, ns):
    listed = await client.list_tools()
    say(step="list_tools", names=sorted(t.name for t in listed.tools))
    say(step="create", **result(await client.call_tool(
        "namespace_create", {"name": ns, "embedder": "none", "redaction": "off"})))
    say(step="store", **result(await client.call_tool("memory_store", {"namespace": ns, "content": "made over MCP"})))
    say(step="delete", **result(await client.call_tool("namespace_delete", {"namespace": ns})))
    say(step="gone", **result(await client.call_tool("memory_list", {"namespace": ns})))


async def restart(client, ns):
    before = result(await client.call_tool(
        "memory_store", {"namespace": ns, "content": "The server restarts while Bob waits"}))
    say(step="before", **before)
    # The test restarts the server now, then writes a line.
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    say(step="after_recall", **result(await client.call_tool(
        "memory_recall", {"namespace": ns, "query": "server restarts", "mode": "lexical"})))
    say(step="after_store", **result(await client.call_tool(
        "memory_store", {"namespace": ns, "content": "Bob went on after the restart"})))


async def main():
    scenario, url, key, ns, mode = sys.argv[1:6]
    if scenario == "admin":
        url += "?profile=admin"
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {key}"})
    async with http:
        try:
            async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:
                await {"tools": tools, "reader": reader, "restart": restart, "refused": reader, "admin": admin}[scenario](
                    client, ns
                )
        except BaseException as e:  # noqa: BLE001 - report whatever the SDK raised
            if scenario != "refused":
                raise
            while isinstance(e, BaseExceptionGroup) and e.exceptions:
                e = e.exceptions[0]
            say(step="refused", error=f"{type(e).__name__}: {e}")


asyncio.run(main())
