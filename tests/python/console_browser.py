"""Drive the web console in headless Chromium (Debian's chromium and
chromium-driver) with Selenium, as a person would: open links, fill forms,
press buttons. Called by tests/tests/console.rs with a scenario name and a
JSON object of inputs; prints one JSON object per step on stdout, which the
Rust test asserts on.
"""

import json
import os
import sys
import tempfile

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = os.environ.get("MEMHOST_CHROMIUM", "/usr/bin/chromium")
DRIVER = os.environ.get("MEMHOST_CHROMEDRIVER", "/usr/bin/chromedriver")


def browser(width=1280, height=900):
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--window-size={width},{height}",
        f"--user-data-dir={tempfile.mkdtemp(prefix='memhost-chromium-')}",
    ]:
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=DRIVER), options=opts)


def navigating(d, act):
    """Do `act` (a click, a key), then wait until the next page replaced
    this one: a form's answer arrives after the click returns."""
    old = d.find_element(By.TAG_NAME, "html")
    act()

    def replaced(_):
        # Chromium reports a node of a page that is gone either as stale or
        # as "does not belong to the document": both mean the page changed.
        try:
            old.is_enabled()
            return False
        except WebDriverException:
            return True

    WebDriverWait(d, 15).until(replaced)
    WebDriverWait(d, 15).until(
        lambda d: d.execute_script("return document.readyState") == "complete"
    )


def say(step, **fields):
    print(json.dumps({"step": step, **fields}), flush=True)


def text(d, css):
    found = d.find_elements(By.CSS_SELECTOR, css)
    return found[0].text if found else None


def page(d):
    """What a person sees: where they are, the heading, messages."""
    return {
        "url": d.current_url,
        "h1": text(d, "h1"),
        "flash": [e.text for e in d.find_elements(By.CSS_SELECTOR, ".flash")],
        "who": text(d, "header .who a"),
    }


def has(d, css):
    return len(d.find_elements(By.CSS_SELECTOR, css)) > 0


def session_cookie(d):
    for c in d.get_cookies():
        if c["name"].endswith("memhost_session"):
            return c
    return None


def use_link(d, link):
    d.get(link)
    before = page(d)
    buttons = d.find_elements(By.CSS_SELECTOR, "form button[type=submit]")
    if buttons:
        navigating(d, buttons[0].click)
    return before, page(d)


def sign_in(d, base, user, password):
    d.get(base + "/console/login")
    d.find_element(By.NAME, "user").send_keys(user)
    d.find_element(By.NAME, "password").send_keys(password)
    navigating(d, d.find_element(By.CSS_SELECTOR, "form button[type=submit]").click)
    return page(d)


def sign_out(d):
    button = d.find_element(By.CSS_SELECTOR, "header form[action='/console/sign-out'] button")
    navigating(d, button.click)
    return page(d)


def csrf_token(d):
    found = d.find_elements(By.CSS_SELECTOR, "input[name=csrf]")
    return found[0].get_attribute("value") if found else None


def scenario_sign_in(a):
    d = browser()
    try:
        before, after = use_link(d, a["link"])
        say("link", asked=before, landed=after)
        d.get(a["link"])
        say("link_again", seen=page(d))
        d.get(a["expired_link"])
        say("link_expired", seen=page(d))
        cookie = session_cookie(d)
        say("cookie", cookie=cookie)
        d.get(a["base"] + "/console")
        out = sign_out(d)
        d.get(a["base"] + "/console/approvals")
        say("signed_out", after_sign_out=out, then=page(d))
        say("wrong_password", seen=sign_in(d, a["base"], a["user"], a["password"] + "x"))
        seen = sign_in(d, a["base"], a["user"], a["password"])
        say("password", seen=seen, cookie=session_cookie(d), csrf=csrf_token(d))
    finally:
        d.quit()


def scenario_reader(a):
    d = browser()
    try:
        sign_in(d, a["base"], a["user"], a["password"])
        d.get(f"{a['base']}/console/ns/{a['ns']}")
        ns_page = page(d)
        store_form = has(d, f"form[action='/console/ns/{a['ns']}/memories']")
        listed = [e.text for e in d.find_elements(By.CSS_SELECTOR, "td a.clip")]
        d.get(f"{a['base']}/console/ns/{a['ns']}/m/{a['memory']}")
        say(
            "reader",
            ns_page=ns_page,
            store_form=store_form,
            listed=listed,
            memory=page(d),
            content=text(d, ".content"),
            change_form=has(d, "textarea[name=content]"),
            forget_button=has(d, "form[action$='/forget']"),
            nav=[e.text for e in d.find_elements(By.CSS_SELECTOR, "header nav a")],
            cookie=session_cookie(d),
            csrf=csrf_token(d),
        )
        d.get(f"{a['base']}/console/ns/{a['ns']}?q={a['query']}")
        say(
            "search",
            results=[
                {
                    "text": row.find_element(By.CSS_SELECTOR, "a.clip").text,
                    "channels": [c.text for c in row.find_elements(By.CSS_SELECTOR, ".chan")],
                }
                for row in d.find_elements(By.CSS_SELECTOR, "tbody tr")
            ],
        )
    finally:
        d.quit()


def scenario_approve(a):
    d = browser()
    try:
        use_link(d, a["link"])
        d.get(a["base"] + "/console/approvals")
        queue = [e.text for e in d.find_elements(By.CSS_SELECTOR, "tbody tr")]
        link = d.find_element(By.CSS_SELECTOR, f"a[href='/console/approvals/{a['approval']}']")
        navigating(d, link.click)
        item = page(d)
        inserted = [e.text for e in d.find_elements(By.CSS_SELECTOR, ".diff ins")]
        deleted = [e.text for e in d.find_elements(By.CSS_SELECTOR, ".diff del")]
        facts = text(d, "dl.facts")
        # The keyboard is enough: type the comment, Tab to Approve, Enter.
        comment = d.find_element(By.NAME, "comment")
        comment.send_keys("checked with the team")
        comment.send_keys(Keys.TAB)
        focused = d.switch_to.active_element
        focused_is_approve = focused.get_attribute("value") == "approve"
        navigating(d, lambda: focused.send_keys(Keys.ENTER))
        say(
            "approve",
            queue=queue,
            item=item,
            inserted=inserted,
            deleted=deleted,
            facts=facts,
            after=page(d),
            votes=[e.text for e in d.find_elements(By.CSS_SELECTOR, "tbody tr")],
            vote_form=has(d, "button[value=approve]"),
            tab_reached_approve=focused_is_approve,
        )
    finally:
        d.quit()


def fill(d, form_css, fields):
    form = d.find_element(By.CSS_SELECTOR, form_css)
    for name, value in fields.items():
        box = form.find_element(By.NAME, name)
        box.clear()
        box.send_keys(value)
    navigating(d, form.find_element(By.CSS_SELECTOR, "button[type=submit]").click)


def scenario_write(a):
    """A writer stores, changes and forgets memories from the browser."""
    d = browser()
    try:
        use_link(d, a["link"])
        ns = a["ns"]
        d.get(f"{a['base']}/console/ns/{ns}")
        fill(d, f"form[action='/console/ns/{ns}/memories']",
             {"content": a["content"], "tags": "planning, q3"})
        stored = page(d)
        memory_url = d.current_url.split("?")[0]
        fill(d, "form[action^='/console/ns/'][method=post]:not([action$='/forget'])",
             {"content": a["changed"]})
        changed = page(d)
        inserted = [e.text for e in d.find_elements(By.CSS_SELECTOR, ".diff ins")]
        d.get(f"{a['base']}/console/ns/{a['held_ns']}")
        fill(d, f"form[action='/console/ns/{a['held_ns']}/memories']", {"content": a["content"]})
        held = page(d)
        approval = [e.get_attribute("href") for e in d.find_elements(By.CSS_SELECTOR, "main a[href^='/console/approvals/'], main a[href*='/console/approvals/']")]
        d.get(memory_url)
        forget = d.find_element(By.CSS_SELECTOR, "form[action$='/forget'] button")
        navigating(d, forget.click)
        forgot = page(d)
        say("write", stored=stored, memory_url=memory_url, changed=changed,
            inserted=inserted, held=held, approval=approval, forgot=forgot)
    finally:
        d.quit()


def scenario_screens(a):
    """Screenshots of the main pages, desktop and phone-sized."""
    out = a["out"]
    os.makedirs(out, exist_ok=True)
    shots = []
    for (width, height, suffix, pages) in [
        (1280, 860, "", a["pages"]),
        (390, 844, "-phone", a["phone_pages"]),
    ]:
        d = browser(width, height)
        try:
            d.get(a["base"] + "/console/login")
            d.save_screenshot(os.path.join(out, f"sign-in{suffix}.png"))
            use_link(d, a["links"].pop(0))
            for name, path in pages:
                d.get(a["base"] + path)
                # The whole page, up to a bound, not only the first screen.
                full = d.execute_script("return document.documentElement.scrollHeight")
                d.set_window_size(width, min(max(height, full + 20), 2400))
                file = os.path.join(out, f"{name}{suffix}.png")
                d.save_screenshot(file)
                d.set_window_size(width, height)
                # Nothing wider than the screen (tables scroll inside
                # their own box, or stack on a phone).
                wide = d.execute_script(
                    "return document.documentElement.scrollWidth > window.innerWidth"
                )
                shots.append({"name": name + suffix, "page": page(d), "too_wide": wide})
        finally:
            d.quit()
    say("screens", shots=shots)


def scenario_consent(a):
    """A hosted client's page on another site sends the person to the
    consent page (already signed in: the hop brings the session along),
    they share one namespace read-only and press Allow with the keyboard;
    the client's callback gets the code, which the client exchanges."""
    import base64
    import hashlib
    import http.server
    import secrets
    import threading
    import urllib.parse
    import urllib.request

    seen = {}

    class Site(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path.startswith("/cb"):
                seen["callback"] = self.path
                body = b"<!doctype html><title>Connected</title><h1>Connected</h1>"
            else:
                body = f'<!doctype html><title>Client</title><a id="go" href="{seen["authorize"]}">Connect memhost</a>'.encode()
            self.send_response(200)
            self.send_header("content-type", "text/html")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    site = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Site)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    port = site.server_address[1]
    base = a["base"]
    redirect = f"http://127.0.0.1:{port}/cb"
    reg = urllib.request.Request(
        base + "/oauth/register",
        data=json.dumps({"client_name": "Browser test client", "redirect_uris": [redirect]}).encode(),
        headers={"content-type": "application/json"},
    )
    client_id = json.load(urllib.request.urlopen(reg))["client_id"]
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    seen["authorize"] = base + "/console/oauth/authorize?" + urllib.parse.urlencode({
        "response_type": "code", "client_id": client_id, "redirect_uri": redirect, "state": "s1",
        "code_challenge": challenge, "code_challenge_method": "S256",
        "resource": base + "/mcp", "scope": "memory:read memory:write",
    })
    d = browser()
    try:
        say("signed_in", **sign_in(d, base, a["user"], a["password"]))
        # The client's page is on another site (localhost, not 127.0.0.1).
        d.get(f"http://localhost:{port}/")
        navigating(d, d.find_element(By.ID, "go").click)
        WebDriverWait(d, 15).until(lambda d: has(d, "form select"))
        selects = {
            e.get_attribute("name"): [o.get_attribute("value") for o in e.find_elements(By.TAG_NAME, "option")]
            for e in d.find_elements(By.CSS_SELECTOR, "form select")
        }
        say("consent", **page(d), host=text(d, ".host"), selects=selects,
            scopes=[e.text for e in d.find_elements(By.CSS_SELECTOR, ".consent ul li")])
        os.makedirs(a["out"], exist_ok=True)
        d.save_screenshot(os.path.join(a["out"], "consent.png"))
        from selenium.webdriver.support.ui import Select
        Select(d.find_element(By.NAME, "role:home")).select_by_value("reader")
        Select(d.find_element(By.NAME, "role:other")).select_by_value("none")
        # The keyboard: Tab from the last choice reaches Allow; Enter.
        d.find_element(By.NAME, "role:other").send_keys(Keys.TAB)
        focused = d.switch_to.active_element
        say("focus", text=focused.text, value=focused.get_attribute("value"))
        navigating(d, lambda: focused.send_keys(Keys.ENTER))
        WebDriverWait(d, 15).until(lambda d: "callback" in seen)
        say("callback", url=d.current_url, path=seen["callback"])
        code = urllib.parse.parse_qs(urllib.parse.urlparse(seen["callback"]).query)["code"][0]
        form = urllib.parse.urlencode({
            "grant_type": "authorization_code", "client_id": client_id, "code": code,
            "redirect_uri": redirect, "code_verifier": verifier, "resource": base + "/mcp",
        }).encode()
        tokens = json.load(urllib.request.urlopen(urllib.request.Request(base + "/oauth/token", data=form)))
        say("tokens", **tokens)
    finally:
        d.quit()
        site.shutdown()


if __name__ == "__main__":
    scenario, inputs = sys.argv[1], json.loads(sys.argv[2])
    globals()["scenario_" + scenario](inputs)
