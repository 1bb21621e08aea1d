"""Connect to memhost's /mcp the way a hosted MCP client does: the official
MCP Python SDK's OAuth client (`OAuthClientProvider`) discovers the
authorization server from the 401, registers itself, sends a person to
the consent page, exchanges the code and calls tools with the token. The
person is played here with plain HTTP: sign in to the console with a
password, read the consent page, press Allow. Called by
tests/tests/oauth.rs; prints one JSON object per line with what it saw.

usage: oauth_client.py URL USER PASSWORD NAMESPACE MODE
  URL   the server's /mcp
  MODE  auto (2026-07-28) | legacy (initialize handshake)
"""

import asyncio
import json
import sys
import time
from html.parser import HTMLParser
from urllib.parse import parse_qs, urljoin, urlparse

import httpx2
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientMetadata

REDIRECT = "http://127.0.0.1:9/callback"


def say(**seen):
    print(json.dumps(seen), flush=True)


class Form(HTMLParser):
    """The fields a browser would send from the page's last form: hidden
    inputs as they are, each select's selected option."""

    def __init__(self):
        super().__init__()
        self.fields, self.select, self.options = {}, None, {}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "input" and a.get("name") and a.get("type") == "hidden":
            self.fields[a["name"]] = a.get("value", "")
        elif tag == "select":
            self.select = a["name"]
        elif tag == "option" and self.select:
            if "selected" in a or self.select not in self.fields:
                self.fields[self.select] = a["value"]
            self.options.setdefault(self.select, []).append(a["value"])

    def handle_endtag(self, tag):
        if tag == "select":
            self.select = None


def form_of(html):
    f = Form()
    f.feed(html)
    return f


class Person:
    """A person at a browser: signs in to the console, reads the consent
    page, presses Allow."""

    def __init__(self, base, user, password):
        self.base, self.user, self.password = base, user, password
        self.consents = []

    async def consent(self, authorization_url):
        async with httpx2.AsyncClient(follow_redirects=False) as b:
            r = await b.get(authorization_url)
            if r.status_code == 303 and "/console/login" in r.headers["location"]:
                page = await b.get(urljoin(self.base, r.headers["location"]))
                sign_in = form_of(page.text).fields
                r = await b.post(
                    urljoin(self.base, "/console/login"),
                    data={**sign_in, "user": self.user, "password": self.password},
                )
                assert r.status_code == 303, (r.status_code, r.text[:300])
                r = await b.get(urljoin(self.base, r.headers["location"]))
            assert r.status_code == 200, (r.status_code, r.text[:500])
            page = form_of(r.text)
            self.consents.append(
                {
                    "shows_redirect_host": "127.0.0.1" in r.text,
                    "roles": {k: v for k, v in page.options.items()},
                    "scope": page.fields.get("scope"),
                    "csp": r.headers.get("content-security-policy"),
                }
            )
            r = await b.post(
                urljoin(self.base, "/console/oauth/authorize"),
                data={**page.fields, "decision": "allow"},
            )
            assert r.status_code == 303, (r.status_code, r.text[:500])
            back = r.headers["location"]
            assert back.startswith(REDIRECT), back
            q = parse_qs(urlparse(back).query)
            one = lambda k: q[k][0] if k in q else None  # noqa: E731
            return AuthorizationCodeResult(code=one("code"), state=one("state"), iss=one("iss"))


class Memory:
    """Token storage in memory (a real client keeps it on disk)."""

    def __init__(self):
        self.tokens, self.client = None, None

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens):
        self.tokens = tokens

    async def get_client_info(self):
        return self.client

    async def set_client_info(self, client_info):
        self.client = client_info


def result(r):
    return {
        "is_error": r.is_error,
        "structured": r.structured_content,
        "text": [c.text for c in r.content if getattr(c, "type", "") == "text"],
    }


async def main():
    url, user, password, ns, mode = sys.argv[1:6]
    base = f"{urlparse(url).scheme}://{urlparse(url).netloc}"
    person = Person(base, user, password)
    pending = {}

    async def redirect_handler(authorization_url):
        pending["url"] = authorization_url
        say(step="authorization_url", url=authorization_url)

    async def callback_handler():
        return await person.consent(pending.pop("url"))

    storage = Memory()
    provider = OAuthClientProvider(
        server_url=url,
        client_metadata=OAuthClientMetadata(
            client_name="SDK test connector",
            redirect_uris=[REDIRECT],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=storage,
        redirect_handler=redirect_handler,
        callback_handler=callback_handler,
    )
    async with create_mcp_http_client(auth=provider) as http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:
            tools = await client.list_tools()
            say(step="tools", names=sorted(t.name for t in tools.tools))
            say(step="registered", client_id=storage.client.client_id, consents=person.consents)
            say(step="store", **result(await client.call_tool(
                "memory_store", {"namespace": ns, "content": f"Dana keeps the spare keys in the blue drawer ({mode})"})))
            say(step="recall", **result(await client.call_tool(
                "memory_recall", {"namespace": ns, "query": "spare keys", "mode": "lexical"})))
            first = storage.tokens
            say(step="tokens", access=first.access_token, refresh=first.refresh_token,
                expires_in=first.expires_in, scope=first.scope)
            # The access token runs out: the SDK refreshes before the next call.
            provider.context.token_expiry_time = time.time() - 1
            say(step="after_refresh", **result(await client.call_tool("memory_list", {"namespace": ns})))
            second = storage.tokens
            say(step="refreshed", access=second.access_token, refresh=second.refresh_token,
                consents=len(person.consents))


asyncio.run(main())
