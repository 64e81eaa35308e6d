"""The dashboard (API.md "Dashboard"): its values (admin/board.py), its token flow and
fragments over HTTP against a running gateway, and the whole page in a real headless
Chromium against `tlsgate serve` with worker processes."""

from __future__ import annotations

import os
import re
import shutil
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio

from admin import board, session
from gateway.routing.snapshot import Snapshot
from tests.harness import (
    Pki,
    admin_gateway,
    backends,
    free_port,
    gateway_yaml,
    route_yaml,
    serve_process,
    service_yaml,
    tls_client,
)

YAML = {"content-type": "application/yaml"}
TOKEN = "dashboard-t0ken-0123456789"
#: Where `scripts/screenshot` asks the browser test to write the README's picture.
SCREENSHOT_ENV = "TLSGATE_SCREENSHOT"


# --- the values -----------------------------------------------------------------------------


def test_badges_say_which_conditions_are_healthy() -> None:
    shown = board.badges(
        [
            {"type": "Accepted", "status": "True", "reason": "Accepted"},
            {"type": "ResolvedRefs", "status": "False", "reason": "BackendNotFound"},
            {"type": "Conflicted", "status": "False", "reason": "NoConflicts"},
            {"type": "Programmed", "status": "Unknown", "reason": "Pending"},
            "not a condition",
        ]
    )
    assert [(b.type, b.tone) for b in shown] == [
        ("Accepted", "ok"),
        ("ResolvedRefs", "bad"),
        ("Conflicted", "ok"),
        ("Programmed", "warn"),
    ]
    assert board.badges(None) == ()


def test_rates_come_from_counter_deltas() -> None:
    # A counter that appears at the second sample counts from 0; one that goes down was
    # reset (0, never negative).
    fig = board.figure([None, 10.0, 30.0, 5.0], [0.0, 1.0, 3.0, 4.0])
    assert fig.now == 0.0
    assert fig.points.count(",") == 3
    assert board.figure([None, 10.0, 30.0], [0.0, 1.0, 3.0]).now == 10.0
    assert board.figure([1.0], [0.0]).now is None
    assert board.sparkline([]) == ""
    flat = board.sparkline([0.0, 0.0])
    assert {p.split(",")[1] for p in flat.split()} == {f"{board.SPARK_HEIGHT - 1:.1f}"}


def test_history_restarts_after_a_gap() -> None:
    history = board.History(size=3)
    empty = board.counts_of({}, 0.0)
    for at in (0.0, 1.0, 2.0, 3.0):
        assert history.due(at)
        history.add(attrs.evolve(empty, at=at))
    assert [s.at for s in history.samples] == [1.0, 2.0, 3.0]
    assert not history.due(3.5)
    history.add(attrs.evolve(empty, at=3.0 + board.GAP_SECONDS + 1))
    assert len(history.samples) == 1


def test_counts_group_what_the_dashboard_shows() -> None:
    totals = {
        (
            "tlsgate_listener_connections_total",
            (("gateway", "infra/gw"), ("listener", "infra/gw/tls"), ("route", "apps/db")),
        ): 4.0,
        (
            "tlsgate_listener_connections_total",
            (("gateway", "infra/gw"), ("listener", "infra/gw/tls"), ("route", "")),
        ): 1.0,
        ("tlsgate_listener_bytes_total", (("direction", "up"), ("listener", "infra/gw/tls"))): 5.0,
        ("tlsgate_listener_bytes_total", (("direction", "down"), ("listener", "infra/gw/tls"))): 7,
        (
            "tlsgate_connections_finished_total",
            (
                ("gateway", "infra/gw"),
                ("listener", "infra/gw/tls"),
                ("outcome", "rejected-no-route"),
                ("route", ""),
            ),
        ): 1.0,
        (
            "tlsgate_connections_finished_total",
            (("gateway", ""), ("listener", ""), ("outcome", "rejected-no-sni"), ("route", "")),
        ): 2.0,
        ("tlsgate_connections_refused_total", (("reason", "max-connections"),)): 3.0,
    }
    counts = board.counts_of(totals, 1.0)
    assert counts.listener_connections == {"infra/gw/tls": 5.0}
    assert counts.listener_bytes == {"infra/gw/tls": 12.0}
    assert counts.rejections == {
        ("infra/gw/tls", "rejected-no-route"): 1.0,
        ("", "rejected-no-sni"): 2.0,
    }
    live = board.live_figures(Snapshot(generation=1, statuses={}, binds={}), [counts], {})
    assert live.listeners == ()
    assert live.unrouted == (("refused-max-connections", 3), ("rejected-no-sni", 2))


def test_access_filter_matches_fields_and_text() -> None:
    recent: list[tuple[float, dict[str, object]]] = [
        (1.0, {"client": "127.0.0.1:1", "route": "apps/db", "outcome": "closed"}),
        (2.0, {"client": "127.0.0.1:2", "route": None, "outcome": "rejected-no-route"}),
        (3.0, {"client": "10.0.0.9:3", "route": "apps/cache", "outcome": "closed"}),
    ]
    assert [line.at for line in board.access_lines(recent, "")] == [3.0, 2.0, 1.0]
    assert [line.at for line in board.access_lines(recent, "outcome=closed")] == [3.0, 1.0]
    assert [line.at for line in board.access_lines(recent, "ROUTE=apps/ 10.0.0")] == [3.0]
    assert [line.at for line in board.access_lines(recent, "route=db")] == [1.0]
    assert board.access_lines(recent, "sni=x") == []  # a field the line does not have
    assert [line.at for line in board.access_lines(recent, "", limit=1)] == [3.0]
    assert board.access_lines(recent, "outcome=rejected")[0].tone == "warn"


def test_certificates_soonest_first_with_warnings() -> None:
    day = 86400.0
    rows = board.certificate_rows({"a/late": 100 * day, "a/soon": 5 * day, "a/old": -day}, 0.0)
    assert [(r.secret, r.tone) for r in rows] == [
        ("a/old", "bad"),
        ("a/soon", "warn"),
        ("a/late", "ok"),
    ]


def test_explain_form_is_checked() -> None:
    assert board.explain_query({}) == (None, None, None, "")
    assert board.explain_query({"port": "443", "sni": " db.example.com "}) == (
        443,
        "db.example.com",
        None,
        "",
    )
    assert board.explain_query({"port": "99999"})[3]
    assert board.explain_query({"port": "x"})[3]


def test_the_cookie_is_not_the_token() -> None:
    header = session.set_cookie(TOKEN, secure=True)
    assert TOKEN not in header
    assert "HttpOnly" in header
    assert "SameSite=Strict" in header
    assert "Secure" in header
    value = header.split(";")[0]
    assert session.has_session(value, TOKEN)
    assert not session.has_session(value, TOKEN + "x")  # a new token ends every session
    assert not session.has_session('tlsgate_dashboard="unterminated', TOKEN)
    assert not session.has_session("", TOKEN)


# --- over HTTP against a running gateway -----------------------------------------------------


def _bundle(port: int, backend_port: int) -> str:
    return (
        gateway_yaml(port)
        + service_yaml("db", backend_port)
        + route_yaml("db", ["db.example.com"], [("db", 1)])
        + route_yaml("late", ["db.example.com"], [("db", 1)])
    )


async def test_token_flow_and_what_the_cookie_opens(pki: Pki) -> None:
    port = free_port()
    async with admin_gateway(None, token=TOKEN) as (_, url):
        async with httpx.AsyncClient(base_url=url) as http:
            page = await http.get("/ui")
            assert page.status_code == 303
            assert page.headers["location"] == "/ui/login"
            fragment = await http.get("/ui/live/figures", headers={"HX-Request": "true"})
            assert fragment.status_code == 401
            assert fragment.headers["hx-redirect"] == "/ui/login"
            assert (await http.get("/ui/login")).status_code == 200
            css = await http.get("/ui/static/water-2.1.1.min.css")
            assert css.status_code == 200
            assert css.headers["content-type"].startswith("text/css")
            assert (await http.get("/ui/static/..%2Fapp.py")).status_code == 404
            assert (await http.get("/ui/static/app.py")).status_code == 404
            wrong = await http.post("/ui/login", data={"token": "guess"})
            assert wrong.status_code == 401
            assert "set-cookie" not in wrong.headers
            right = await http.post("/ui/login", data={"token": TOKEN})
            assert right.status_code == 303
            cookie = right.headers["set-cookie"]
            assert "HttpOnly" in cookie
            assert "SameSite=Strict" in cookie
            assert "Path=/ui" in cookie
            assert TOKEN not in cookie
            jar = {session.COOKIE: cookie.split(";")[0].split("=", 1)[1]}
        async with httpx.AsyncClient(base_url=url, cookies=jar) as browser:
            page = await browser.get("/ui")
            assert page.status_code == 200
            assert "script-src 'self'" in page.headers["content-security-policy"]
            assert page.headers["cache-control"] == "no-store"
            # The cookie opens the dashboard's reads, nothing else.
            assert (await browser.get("/v1/gateways")).status_code == 401
            applied = await browser.post("/v1/apply", headers=YAML, content=gateway_yaml(port))
            assert applied.status_code == 401
            assert (await browser.post("/ui/live/figures")).status_code == 401
            logout = await browser.post("/ui/logout")
            assert logout.status_code == 303
            assert "Max-Age=0" in logout.headers["set-cookie"]
        # The token itself opens it too (a script with curl).
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(base_url=url, headers=auth) as script:
            assert (await script.get("/ui/live/config")).status_code == 200


async def test_fragments_show_routes_figures_and_access_lines(pki: Pki) -> None:
    port = free_port()
    with backends(pki, ("db", ["db.example.com"])) as (db,):
        async with (
            admin_gateway(None) as (server, url),
            httpx.AsyncClient(base_url=url) as http,
        ):
            assert (await http.get("/ui/login", follow_redirects=False)).status_code == 303
            applied = await http.post("/v1/apply", headers=YAML, content=_bundle(port, db.port))
            assert applied.status_code == 200
            config = (await http.get("/ui/live/config")).text
            assert 'data-route="apps/db"' in config
            assert re.search(r'class="badge ok"[^>]*>Accepted<', config)
            # The younger route lost db.example.com to the older: marked shadowed.
            late = config[config.index('data-route="apps/late"') :]
            assert "shadowed" in late[: late.index("</tr>")]
            assert "infra/gw/tls" in (await http.get("/ui/live/figures")).text
            context = pki.client_context()
            with trio.fail_after(30):
                async with tls_client(port, "db.example.com", context) as client:
                    assert await client.call("PING") == "PONG"
                    figures = (await http.get("/ui/live/figures")).text
                    row = figures[figures.index('data-route="apps/db"') :]
                    assert '<td class="open">1</td>' in row[: row.index("</tr>")]
                await server.proxy.idle.wait()
            access = (await http.get("/ui/live/access", params={"q": "route=apps/db"})).text
            assert "outcome=closed" in access
            none = await http.get("/ui/live/access", params={"q": "route=nothing " * 1000})
            assert none.status_code == 200
            assert "No recent connection matches" in none.text
            explained = await http.get(
                "/ui/explain", params={"port": str(port), "sni": "db.example.com"}
            )
            assert "routed" in explained.text
            assert "apps/db" in explained.text
            rejected = await http.get("/ui/explain", params={"port": str(port), "sni": "x.org"})
            assert "rejected" in rejected.text
            bad = await http.get("/ui/explain", params={"port": "<script>"})
            assert bad.status_code == 200
            assert "<script>" not in bad.text
            # Values from documents are escaped: a route's hostname cannot inject markup.
            html = (await http.get("/ui")).text
            assert '<script src="/ui/static/htmx-2.0.11.min.js"></script>' in html
            assert "<script>" not in html


# --- in a real browser ----------------------------------------------------------------------


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found is not None:
            # Debian's /usr/bin/chromium is a shell wrapper; the binary is beside it.
            real = Path("/usr/lib/chromium/chromium")
            return str(real) if real.exists() else found
    pytest.fail("chromium is missing: scripts/setup-env installs Debian's chromium")


def _hold_connection(port: int, context: ssl.SSLContext) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    tls = context.wrap_socket(raw, server_hostname="db.example.com")
    lines = tls.makefile("rb")
    assert lines.readline().startswith(b"HELLO ")
    tls.sendall(b"PING\n")
    assert lines.readline() == b"PONG\n"
    lines.close()
    return tls


def _some_traffic(port: int, context: ssl.SSLContext, *, seconds: float) -> None:
    """A few connections a second for `seconds` (for the sparklines of the README's
    picture; bounded in count and time)."""
    for i in range(int(seconds * 4)):
        _hold_connection(port, context).close()
        time.sleep(0.25 if i % 8 < 5 else 0.1)


@pytest.mark.slow
async def test_dashboard_in_headless_chromium(pki: Pki, tmp_path: Path) -> None:
    """`tlsgate serve --workers 2` with a token: the browser is sent to the login form,
    signs in, sees the route and its Accepted badge, sees the open-connection figure go
    to 1 and back to 0 while a client holds a connection, finds the access line with the
    filter, explains a connection; no console error (the CSP holds), and a screenshot."""
    from playwright.sync_api import expect, sync_playwright

    binary = _chromium()
    port, admin = free_port(), free_port()
    url = f"http://127.0.0.1:{admin}"
    screenshot = tmp_path / "dashboard.png"
    wanted = os.environ.get(SCREENSHOT_ENV)
    context = pki.client_context()

    def browse() -> list[str]:
        problems: list[str] = []
        with sync_playwright() as playwright:
            args = ["--no-sandbox"] if os.geteuid() == 0 else []
            browser = playwright.chromium.launch(executable_path=binary, args=args)
            try:
                tab = browser.new_context(viewport={"width": 1280, "height": 900})
                page = tab.new_page()

                def console(message: Any) -> None:
                    if message.type == "error":
                        problems.append(f"{message.text} {message.location}")

                page.on("console", console)
                page.on("pageerror", lambda e: problems.append(str(e)))
                page.goto(f"{url}/ui")
                assert page.url == f"{url}/ui/login"
                page.fill("#token", "not the token")
                page.click("button[type=submit]")
                expect(page.locator(".error")).to_have_text("That is not the token.")
                problems.clear()  # the 401 of the wrong token is a console error, as it should be
                page.fill("#token", TOKEN)
                page.click("button[type=submit]")
                page.wait_for_url(f"{url}/ui")
                [cookie] = [c for c in tab.cookies() if c["name"] == session.COOKIE]
                assert cookie["httpOnly"]
                assert cookie["sameSite"] == "Strict"
                assert TOKEN not in cookie["value"]

                route = page.locator('#routes tr.tlsroute[data-route="apps/db"]')
                expect(route).to_contain_text("db.example.com")
                expect(route.locator(".badge.ok", has_text="Accepted")).to_have_count(1)
                expect(page.locator("#system")).to_contain_text("Workers (2)")

                open_cell = page.locator('#figures tr.route[data-route="apps/db"] td.open')
                expect(open_cell).to_have_text("0")
                held = _hold_connection(port, context)
                try:
                    expect(open_cell).to_have_text("1", timeout=15_000)
                    if wanted:  # the README's picture: the top of the page, with traffic
                        _some_traffic(port, context, seconds=8.0)
                        page.locator("h1").scroll_into_view_if_needed()
                        page.screenshot(path=wanted)
                finally:
                    held.close()
                expect(open_cell).to_have_text("0", timeout=15_000)
                rate = page.locator('#figures tr.route[data-route="apps/db"] td.rate').first
                expect(rate).not_to_have_text("-", timeout=15_000)

                page.fill("#q", "route=apps/db outcome=closed")
                expect(page.locator("#access table.access")).to_contain_text(
                    "route=apps/db", timeout=15_000
                )
                page.fill("#q", "route=no-such-route")
                expect(page.locator("#access")).to_contain_text("No recent connection matches")
                page.fill("#q", "")

                page.fill('#explain-form input[name="port"]', str(port))
                page.fill('#explain-form input[name="sni"]', "db.example.com")
                page.click("#explain-form button")
                expect(page.locator("#explained")).to_contain_text("routed")
                expect(page.locator("#explained")).to_contain_text("apps/db")

                page.screenshot(path=str(screenshot), full_page=True)
                page.click("form.logout button")
                page.wait_for_url(f"{url}/ui/login")
            finally:
                browser.close()
        return problems

    with backends(pki, ("db", ["db.example.com"])) as (db,):
        bootstrap = tmp_path / "bundle.yaml"
        bootstrap.write_text(_bundle(port, db.port))
        env = {**os.environ, "TLSGATE_ADMIN_TOKEN": TOKEN}
        args = ["--bootstrap", str(bootstrap), "--admin", f"127.0.0.1:{admin}"]
        args += ["--state-dir", "", "--workers", "2"]
        async with serve_process(*args, env=env, admin_url=url, path="/readyz"):
            problems = await trio.to_thread.run_sync(browse)
    assert problems == [], "\n".join(problems)
    assert screenshot.stat().st_size > 10_000
