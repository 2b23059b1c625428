"""The console's files as served: no token needed for them, strict headers on every one, no
inline script or style, nothing fetched from another origin, every module it imports served,
and nothing outside its folder reachable. (The console at work: tests/console/.)"""

from __future__ import annotations

import re
from importlib import resources

from aiohttp import web
from aiohttp.test_utils import TestClient
from support import READER

Client = TestClient[web.Request, web.Application]
FOLDER = resources.files("egw.web").joinpath("console")
FILES = {f.name: f.read_text() for f in FOLDER.iterdir() if f.is_file()}
HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def csp_directives(value: str) -> dict[str, str]:
    return dict(d.strip().partition(" ")[::2] for d in value.split(";") if d.strip())


async def test_the_root_redirects_to_the_console_which_needs_no_token(api: Client) -> None:
    resp = await api.get("/", allow_redirects=False)
    assert resp.status == 302 and resp.headers["Location"] == "/ui/"
    shell = await api.get("/")
    assert shell.status == 200 and str(shell.url).endswith("/ui/")
    assert shell.headers["Content-Type"] == "text/html; charset=utf-8"
    assert '<script type="module" src="app.js"></script>' in await shell.text()


async def test_every_file_is_served_with_strict_headers(api: Client) -> None:
    assert {"index.html", "app.js", "api.js", "style.css", "logview.js", "ansi.js"} <= set(FILES)
    for name, text in FILES.items():
        resp = await api.get(f"/ui/{name}")
        assert resp.status == 200, name
        assert await resp.text() == text
        for header, value in HEADERS.items():
            assert resp.headers[header] == value, (name, header)
        csp = csp_directives(resp.headers["Content-Security-Policy"])
        assert csp["default-src"] == "'self'"
        assert csp["script-src"] == csp["style-src"] == csp["connect-src"] == "'self'"
        assert csp["frame-ancestors"] == "'none'" and csp["object-src"] == "'none'"
        assert "Set-Cookie" not in resp.headers
    js = await api.get("/ui/app.js")
    assert js.headers["Content-Type"] == "text/javascript; charset=utf-8"


async def test_nothing_outside_the_console_folder_is_served(api: Client) -> None:
    for url in ("/ui/nothing.js", "/ui/..%2Fopenapi.json", "/ui/%2E%2E%2Fui.py", "/ui/ui.py"):
        resp = await api.get(url)
        assert resp.status == 404, url
        assert (await resp.json())["error"]["code"] == "not_found"


async def test_whoami_names_the_tokens_scopes(api: Client) -> None:
    assert (await api.get("/v1/whoami")).status == 401
    resp = await api.get("/v1/whoami", headers=READER)
    assert await resp.json() == {
        "name": "reader",
        "scopes": ["tasks:read"],
        "namespaces": {"default": ["read"]},  # no namespaces configured: default only
    }


def test_no_inline_script_or_style_and_no_other_origin() -> None:
    html = FILES["index.html"]
    for tag in re.findall(r"<script\b[^>]*>", html):
        assert "src=" in tag, tag
    assert re.search(r"<script\b[^>]*>\s*[^<\s]", html) is None  # a script tag holds nothing
    for name, text in FILES.items():
        plain = text.replace('xmlns="http://www.w3.org/2000/svg"', "")  # a name, not a fetch
        assert re.search(r"https?://", plain) is None, name  # no CDN, no other origin
        if name.endswith(".html"):
            assert "<style" not in text and not re.search(r"\sstyle=", text), name
            assert not re.search(r"\son[a-z]+=", text), name  # no inline handlers
        if name.endswith(".js"):
            # the DOM is built with nodes and textContent: a task's text never becomes markup
            for risky in ("innerHTML", "outerHTML", "insertAdjacentHTML", "eval(", "new Function"):
                assert risky not in text, (name, risky)
            assert 'setAttribute("style"' not in text, name


def test_every_module_and_file_the_console_names_is_there() -> None:
    named = set(re.findall(r'(?:src|href)="([^"#]+)"', FILES["index.html"]))
    for name, text in FILES.items():
        if name.endswith(".js"):
            named |= set(re.findall(r'from "\./([^"]+)"', text))
    assert named <= set(FILES), named - set(FILES)
    # and nothing is dead weight: every script is imported by another or by the page
    scripts = {n for n in FILES if n.endswith(".js")}
    assert scripts <= named, scripts - named
