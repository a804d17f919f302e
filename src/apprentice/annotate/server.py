"""The annotation web app: annotators vote blind on pairs of outputs; an admin watches progress, tallies, invites.

    from apprentice.annotate.server import create_app, serve
    serve("votes.sqlite", host="127.0.0.1", port=8000, votes_per_item=1)   # what `apprentice annotate` runs

Pages: `/a/<token>` (an invite link: stores the token in an HttpOnly, SameSite=Strict cookie, then moves on so the
token leaves the address bar), `/vote` (the current item, GET; a vote, POST), `/next` (POST: move on), `/admin`,
`/admin/invite` (POST), `/admin/export`. Plain HTML forms do everything; a few lines of inline script add keys.

Safety, in one place: every POST carries a form token derived from the session (CSRF); request bodies are capped
before any handler runs; every page is sent with a Content-Security-Policy that allows only this page's own inline
script (by nonce), so output text that slips past escaping still cannot run; model outputs are rendered as Markdown
with raw HTML disabled and unsafe link schemes refused. Annotator pages never carry generator names, file names or
source order: the store hands out random item ids, random sides and least-voted-then-random order.
"""

from __future__ import annotations

import base64
import hmac
import io
import json
import secrets
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markdown_it import MarkdownIt
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from apprentice.annotate import store
from apprentice.errors import UserError
from apprentice.evaluate.stats import summarize

MAX_BODY_BYTES = 64 * 1024
MAX_COMMENT_CHARS = 2000
ANNOTATOR_COOKIE = "apprentice_annotator"
ADMIN_COOKIE = "apprentice_admin"
COOKIE_MAX_AGE_S = 30 * 24 * 3600
HERE = Path(__file__).parent

T = TypeVar("T")


def _markdown() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])

    def external_links(state: Any) -> None:
        # A link in an output opens elsewhere, so following it never throws away a half-written comment.
        for token in state.tokens:
            for child in token.children or ():
                if child.type == "link_open":
                    child.attrSet("target", "_blank")
                    child.attrSet("rel", "noopener noreferrer nofollow")

    md.core.ruler.push("external_links", external_links)
    return md


def render_markdown(md: MarkdownIt, text: str) -> Markup:
    """Markdown to HTML with every piece of raw HTML escaped and javascript:/data: links refused by markdown-it."""
    return Markup(md.render(text))


# ------------------------------------------------------------------------------------------------------ middleware


class LimitBody:
    """Refuse request bodies over `limit` bytes with 413 before the app sees them (declared or streamed)."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = PlainTextResponse("Request body too large", status_code=413)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await too_large(scope, receive, send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await too_large(scope, receive, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body, replayed = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class SecurityHeaders:
    """Headers on every response; the CSP nonce is drawn per request and handed to templates via request.state."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        nonce = secrets.token_urlsafe(16)
        scope.setdefault("state", {})["csp_nonce"] = nonce
        csp = (f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'self'; img-src 'self' data:; "
               "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + [
                    (b"content-security-policy", csp.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"cache-control", b"no-store"),
                ]
            await send(message)

        await self.app(scope, receive, send_with_headers)


# ------------------------------------------------------------------------------------------------------------- app


class _Connections:
    """One SQLite connection per worker thread (a connection must not be shared by concurrent threads)."""

    def __init__(self, path: Path):
        self.path = path
        self.local = threading.local()

    def get(self) -> Any:
        db = getattr(self.local, "db", None)
        if db is None:
            db = self.local.db = store.connect(self.path)
        return db


class AnnotateApp:
    """Routes and their handlers over one votes database."""

    def __init__(self, db_path: str | Path, votes_per_item: int):
        self.db_path = Path(db_path)
        self.votes_per_item = votes_per_item
        self.connections = _Connections(self.db_path)
        self.secret = store.secret(self.connections.get()).encode()
        self.md = _markdown()
        self.templates = Environment(loader=FileSystemLoader(HERE / "templates"),
                                     autoescape=select_autoescape(default=True))
        self.annotator_ids: dict[str, int] = {}  # token hash -> id; annotators are never deleted

    async def db(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a store function in a worker thread on that thread's connection."""
        return await run_in_threadpool(lambda: fn(self.connections.get(), *args))

    # ------------------------------------------------------------------------------------------------ sessions

    def form_token(self, role: str, token: str) -> str:
        return hmac.new(self.secret, f"{role}:{store.hash_token(token)}".encode(), "sha256").hexdigest()

    async def annotator(self, request: Request) -> tuple[int, str]:
        """(annotator id, form token) of the request's session; 401 without a session, 403 with a bad one."""
        token = request.cookies.get(ANNOTATOR_COOKIE)
        if not token:
            raise HTTPException(401, "Unauthorized")
        key = store.hash_token(token)
        annotator_id = self.annotator_ids.get(key)
        if annotator_id is None:
            annotator_id = await self.db(store.find_annotator, token)
            if annotator_id is None:
                raise HTTPException(403, "Forbidden")
            self.annotator_ids[key] = annotator_id
        return annotator_id, self.form_token("annotator", token)

    async def admin(self, request: Request) -> str:
        token = request.cookies.get(ADMIN_COOKIE)
        if not token:
            raise HTTPException(401, "Unauthorized")
        if not await self.db(store.is_admin, token):
            raise HTTPException(403, "Forbidden")
        return self.form_token("admin", token)

    @staticmethod
    async def checked_form(request: Request, form_token: str) -> dict[str, str]:
        form = await request.form()
        sent = form.get("csrf")
        if not isinstance(sent, str) or not hmac.compare_digest(sent, form_token):
            raise HTTPException(403, "Forbidden")
        return {k: v for k, v in form.items() if isinstance(v, str)}

    def page(self, request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = self.templates.get_template(template).render(nonce=request.state.csp_nonce, **context)
        return HTMLResponse(html, status_code=status)

    # -------------------------------------------------------------------------------------------------- routes

    async def enter(self, request: Request) -> Response:
        """An invite link: remember the token in a cookie, then leave the URL that carries it."""
        token = request.path_params["token"]
        if await self.db(store.find_annotator, token) is not None:
            cookie, target = ANNOTATOR_COOKIE, "/vote"
        elif await self.db(store.is_admin, token):
            cookie, target = ADMIN_COOKIE, "/admin"
        else:
            raise HTTPException(403, "Forbidden")
        # A page rather than a redirect: with SameSite=Strict, a redirect at the end of a chain that began on
        # another site (a webmail link) would arrive without the cookie just set.
        response = self.page(request, "enter.html", target=target)
        response.set_cookie(cookie, token, max_age=COOKIE_MAX_AGE_S, httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")
        return response

    async def home(self, request: Request) -> Response:
        if request.cookies.get(ADMIN_COOKIE) and not request.cookies.get(ANNOTATOR_COOKIE):
            await self.admin(request)
            return RedirectResponse("/admin", status_code=303)
        await self.annotator(request)
        return RedirectResponse("/vote", status_code=303)

    async def vote_page(self, request: Request) -> Response:
        annotator_id, form_token = await self.annotator(request)
        shown = await self.db(store.next_item, annotator_id, self.votes_per_item)
        progress = await self.db(store.progress, annotator_id, self.votes_per_item)
        if shown is None:
            return self.page(request, "done.html", progress=progress)
        return self.page(request, "vote.html", shown=shown, progress=progress, csrf=form_token,
                         instruction=render_markdown(self.md, shown.instruction),
                         left=render_markdown(self.md, shown.left), right=render_markdown(self.md, shown.right),
                         max_comment=MAX_COMMENT_CHARS)

    async def vote(self, request: Request) -> Response:
        annotator_id, form_token = await self.annotator(request)
        form = await self.checked_form(request, form_token)
        side, comment = form.get("choice", ""), form.get("comment", "")
        if side not in store.SIDES:
            raise HTTPException(400, "choice must be left, right or tie")
        if len(comment) > MAX_COMMENT_CHARS:
            raise HTTPException(400, f"comment longer than {MAX_COMMENT_CHARS} characters")
        try:
            await self.db(store.record_vote, annotator_id, form.get("item", ""), side, comment, self.votes_per_item)
        except store.VoteRejected as exc:
            return self.page(request, "message.html", status=409, message=str(exc))
        return RedirectResponse("/vote", status_code=303)

    async def next(self, request: Request) -> Response:
        annotator_id, form_token = await self.annotator(request)
        form = await self.checked_form(request, form_token)
        await self.db(store.advance, annotator_id, form.get("item", ""))
        return RedirectResponse("/vote", status_code=303)

    async def admin_page(self, request: Request) -> Response:
        form_token = await self.admin(request)
        return await self.render_admin(request, form_token)

    async def render_admin(self, request: Request, form_token: str, **extra: Any) -> Response:
        overview = await self.db(store.overview, self.votes_per_item)
        annotations = await self.db(store.annotations)
        summary = await run_in_threadpool(summarize, annotations) if annotations else None
        plot = await run_in_threadpool(tally_plot, summary) if summary else None
        return self.page(request, "admin.html", overview=overview, summary=summary, plot=plot, csrf=form_token,
                         votes_per_item=self.votes_per_item, db_name=self.db_path.name, **extra)

    async def invite(self, request: Request) -> Response:
        form_token = await self.admin(request)
        form = await self.checked_form(request, form_token)
        try:
            token = await self.db(store.add_annotator, form.get("name", ""))
        except UserError as exc:
            return await self.render_admin(request, form_token, invite_error=str(exc))
        link = f"{str(request.base_url).rstrip('/')}/a/{token}"
        return await self.render_admin(request, form_token, invited=form.get("name", "").strip(), link=link)

    async def export(self, request: Request) -> Response:
        await self.admin(request)
        annotations = await self.db(store.annotations)
        return Response(json.dumps(annotations, ensure_ascii=False, indent=1), media_type="application/json",
                        headers={"content-disposition": 'attachment; filename="annotations.json"'})


def tally_plot(summary: dict) -> str:
    """A small bar chart of a `stats.summarize` result as a base64 PNG (embedded in the admin page; no pyplot)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 2.2), dpi=100)
    ax = fig.add_subplot()
    labels = [f"{summary['opponent']} better", "tie", f"{summary['model']} better"]
    values = [summary["losses"], summary["ties"], summary["wins"]]
    ax.barh(labels, values, color=["#4c72b0", "#999999", "#dd8452"])
    ax.invert_yaxis()
    ax.set_xlabel("votes")
    for y, value in enumerate(values):
        ax.text(value, y, f" {value}", va="center")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode()


def create_app(db_path: str | Path, votes_per_item: int = 1) -> ASGIApp:
    """The ASGI app over an existing votes database (create it and import pairs with `store` first)."""
    handlers = AnnotateApp(db_path, votes_per_item)
    app = Starlette(routes=[
        Route("/", handlers.home),
        Route("/a/{token}", handlers.enter),
        Route("/vote", handlers.vote_page, methods=["GET"]),
        Route("/vote", handlers.vote, methods=["POST"]),
        Route("/next", handlers.next, methods=["POST"]),
        Route("/admin", handlers.admin_page),
        Route("/admin/invite", handlers.invite, methods=["POST"]),
        Route("/admin/export", handlers.export),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ])
    return SecurityHeaders(LimitBody(app, MAX_BODY_BYTES))


def serve(db_path: str | Path, host: str, port: int, votes_per_item: int) -> None:
    """Serve until interrupted."""
    import uvicorn

    uvicorn.run(create_app(db_path, votes_per_item), host=host, port=port, log_level="warning")
