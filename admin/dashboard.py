"""The dashboard (API.md "Dashboard"): `GET /ui` and the fragments its page refreshes.

HTTP edge. Server-rendered with Jinja2 (Quart's own), refreshed by the vendored htmx
polling small fragments; every asset is served from memory by this module (no CDN, no
build step). Read-only: the only POSTs are the login form and the logout, which set and
clear the dashboard's cookie (`admin/session.py`); the edge lets the cookie open the
dashboard's GETs and nothing else.

The live figures are rates between samples of the counters the main process already sums
(`board.History`): a sample is taken when a fragment is asked for, one a second at most, so
the dashboard costs nothing while nobody looks at it.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Iterable, Mapping
from importlib import resources
from typing import TYPE_CHECKING, Any

import attrs
import trio
from quart import Response, render_template, request

from admin import board, session
from gateway import tlsgate_version
from gateway.api.convert import with_status
from gateway.routing.explain import explain, table_to_wire
from gateway.store.sqlite import StoreUnavailable
from gateway.store.writes import list_of

if TYPE_CHECKING:
    from quart_trio import QuartTrio

    from admin.app import Views

#: What the page asks of the browser: scripts, styles and requests only from here, no
#: frames, no inline script (htmx's eval is off, see base.html).
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
#: The vendored assets (admin/static, licences in THIRD-PARTY-LICENSES.txt).
ASSETS = {
    "htmx-2.0.11.min.js": "text/javascript; charset=utf-8",
    "water-2.1.1.min.css": "text/css; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "THIRD-PARTY-LICENSES.txt": "text/plain; charset=utf-8",
}
#: A failed login waits this long before its answer: guessing a token one request at a
#: time is slow (the token's length is what makes it unguessable).
LOGIN_FAILURE_DELAY = 0.5
#: Documents listed per kind at most (a page of 10,000 routes is no overview).
DOCUMENTS_SHOWN = 200


@attrs.frozen(kw_only=True)
class Sources:
    """What the dashboard reads besides the write path and the views' own sources."""

    #: The data plane's counters (`board.Totals`): this process's, or the workers' summed.
    totals: Callable[[], board.Totals]
    #: Connections open per (gateway, listener, route).
    open: Callable[[], board.OpenCounts]
    #: The newest access-log lines, (Unix time, fields), oldest first.
    recent: Callable[[], Iterable[tuple[float, Mapping[str, object]]]]
    #: Secret -> its certificate's notAfter (Unix time).
    certificates: Callable[[], Mapping[str, float]]
    #: The admin token, when one is configured (the login form checks it).
    token: str | None = None


class Dashboard:
    def __init__(self, views: Views, sources: Sources) -> None:
        self.views = views
        self.sources = sources
        self.history = board.History()
        package = resources.files("admin") / "static"
        self.assets = {name: (package / name).read_bytes() for name in ASSETS}

    def register(self, app: QuartTrio) -> None:
        app.add_url_rule("/ui", view_func=self.page, methods=["GET"])
        app.add_url_rule("/ui/", view_func=self.page, methods=["GET"])
        app.add_url_rule("/ui/live/config", view_func=self.config, methods=["GET"])
        app.add_url_rule("/ui/live/figures", view_func=self.figures, methods=["GET"])
        app.add_url_rule("/ui/live/system", view_func=self.system, methods=["GET"])
        app.add_url_rule("/ui/live/access", view_func=self.access, methods=["GET"])
        app.add_url_rule("/ui/explain", view_func=self.explain, methods=["GET"])
        app.add_url_rule("/ui/login", view_func=self.login, methods=["GET", "POST"])
        app.add_url_rule("/ui/logout", view_func=self.logout, methods=["POST"])
        app.add_url_rule("/ui/static/<name>", view_func=self.asset, methods=["GET"])

    # --- pages -------------------------------------------------------------------------------

    async def page(self) -> Response:
        context = {
            **self._config(),
            **self._figures(),
            **await self._system(),
            **self._access(request.args.get("q", "")[:200]),
            "explained": None,
            "explain_error": "",
            "form": {},
            "logout": self.sources.token is not None,
        }
        return await self._html("ui/index.html", context)

    async def config(self) -> Response:
        return await self._html("ui/_config.html", self._config())

    async def figures(self) -> Response:
        return await self._html("ui/_figures.html", self._figures())

    async def system(self) -> Response:
        return await self._html("ui/_system.html", await self._system())

    async def access(self) -> Response:
        query = request.args.get("q", "")[:200]
        return await self._html("ui/_access.html", self._access(query))

    async def explain(self) -> Response:
        port, sni, address, error = board.explain_query(request.args)
        result = None
        if port is not None and not error:
            try:
                result = explain(self.views.writes.snapshot, address, port, sni, self.views.health)
            except ValueError as exc:
                error = str(exc)
        context = {"explained": result, "explain_error": error, "form": request.args}
        return await self._html("ui/_explain.html", context)

    async def login(self) -> Response:
        token = self.sources.token
        if token is None:
            return _redirect("/ui")
        if request.method == "GET":
            return await self._html("ui/login.html", {"error": ""})
        form = await request.form
        if session.token_matches(form.get("token", "").strip(), token):
            response = _redirect("/ui")
            response.headers["Set-Cookie"] = session.set_cookie(token, secure=_secure())
            return response
        await trio.sleep(LOGIN_FAILURE_DELAY)
        return await self._html("ui/login.html", {"error": "That is not the token."}, 401)

    async def logout(self) -> Response:
        response = _redirect("/ui/login" if self.sources.token is not None else "/ui")
        response.headers["Set-Cookie"] = session.clear_cookie(secure=_secure())
        return response

    async def asset(self, name: str) -> Response:
        if name not in self.assets:
            return Response("not found\n", 404, content_type="text/plain")
        response = Response(self.assets[name], 200, content_type=ASSETS[name])
        response.headers["X-Content-Type-Options"] = "nosniff"
        # Names carry their version: a new one is a new name.
        response.headers["Cache-Control"] = "public, max-age=86400"
        return response

    # --- what the templates get ------------------------------------------------------------

    def _config(self) -> dict[str, Any]:
        writes = self.views.writes
        snapshot, documents = writes.snapshot, writes.documents
        statuses = snapshot.statuses

        def shown(kind: str) -> tuple[list[dict[str, Any]], int]:
            found = list_of(documents, kind)
            return [with_status(doc, statuses) for doc in found[:DOCUMENTS_SHOWN]], len(found)

        gateways, gateway_count = shown("Gateway")
        routes, route_count = shown("TLSRoute")
        return {
            "gateways": board.gateway_rows(gateways),
            "gateway_count": gateway_count,
            "routes": board.route_rows(routes, snapshot),
            "route_count": route_count,
            "table": table_to_wire(snapshot, self.views.health),
            "certificates": board.certificate_rows(self.sources.certificates(), time.time()),
            "generation": snapshot.generation,
            "revision": writes.revision,
            "shown_at_most": DOCUMENTS_SHOWN,
        }

    def _figures(self) -> dict[str, Any]:
        now = time.monotonic()
        if self.history.due(now):
            self.history.add(board.counts_of(self.sources.totals(), now))
        live = board.live_figures(
            self.views.writes.snapshot, list(self.history.samples), self.sources.open()
        )
        return {"live": live}

    async def _system(self) -> dict[str, Any]:
        replicas: list[dict[str, Any]] = []
        replicas_error = ""
        if self.views.replicas is not None:
            try:
                replicas = await self.views.replicas.replicas()
            except StoreUnavailable as exc:
                replicas_error = str(exc)
        return {
            "workers": self.views.workers() if self.views.workers is not None else [],
            "replicas": replicas,
            "replicas_error": replicas_error,
            "ready": self.views.ready(),
            "store": self.views.store() if self.views.store is not None else None,
            "version": tlsgate_version(),
        }

    def _access(self, query: str) -> dict[str, Any]:
        return {"lines": board.access_lines(self.sources.recent(), query), "query": query}

    async def _html(self, template: str, context: dict[str, Any], status: int = 200) -> Response:
        text = await render_template(template, **context, board=board, clock=_clock)
        response = Response(text, status, content_type="text/html; charset=utf-8")
        response.headers.update(SECURITY_HEADERS)
        return response


def _redirect(location: str) -> Response:
    response = Response("", 303)
    response.headers["Location"] = location
    response.headers.update(SECURITY_HEADERS)
    return response


def _secure() -> bool:
    return request.scheme == "https"


def _clock(unix: float, *, date_only: bool = False) -> str:
    """UTC, as the logs write it."""
    moment = datetime.datetime.fromtimestamp(unix, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%d" if date_only else "%Y-%m-%d %H:%M:%S")
