"""The annotation web app: annotators vote blind on pairs of outputs; an admin watches progress, tallies (with the
agreement between annotators and their accuracy on control items), invites.

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

import asyncio
import base64
import hmac
import io
import json
import queue
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
from apprentice.evaluate.agreement import annotator_agreement
from apprentice.evaluate.controls import control_summary
from apprentice.evaluate.stats import is_control, summarize

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


class GroupCommit:
    """All writes go through one thread that owns the write connection. Writes that arrive while a commit is being
    flushed to disk wait and then share the next transaction, so fifty annotators voting at once cost a few fsyncs
    instead of fifty; each waiter is answered only after the COMMIT that holds its write returned.

    (SQLite allows one writer at a time anyway; a queue is also fairer than its busy handler, which lets a waiting
    writer sleep past its timeout while others keep winning the lock.)"""

    def __init__(self, path: Path, max_batch: int):
        self.path = path
        self.max_batch = max_batch
        self.queue: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._run, name="votes-writer", daemon=True).start()

    async def __call__(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.queue.put((fn, args, loop, future))
        return await future

    def _run(self) -> None:
        db = store.connect(self.path)
        while True:
            batch = [self.queue.get()]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self.queue.get_nowait())
                except queue.Empty:
                    break
            outcomes: list[tuple[bool, Any]] = []
            try:
                db.execute("BEGIN IMMEDIATE")
                for fn, args, _, _ in batch:
                    try:  # each store function undoes its own savepoint when it fails
                        outcomes.append((True, fn(db, *args)))
                    except Exception as exc:  # handed to the request that asked for this write
                        outcomes.append((False, exc))
                db.execute("COMMIT")
            except Exception as exc:  # the transaction failed as a whole: nobody's write is in
                if db.in_transaction:
                    db.execute("ROLLBACK")
                outcomes = [(False, exc)] * len(batch)
            for (ok, value), (_, _, loop, future) in zip(outcomes, batch, strict=True):
                loop.call_soon_threadsafe(_settle, future, ok, value)


def _settle(future: asyncio.Future, ok: bool, value: Any) -> None:
    if future.cancelled():  # the client went away
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


class AnnotateApp:
    """Routes and their handlers over one votes database."""

    def __init__(self, db_path: str | Path, votes_per_item: int, max_batch: int):
        self.db_path = Path(db_path)
        self.votes_per_item = votes_per_item
        # Reads are short indexed queries that never wait for the writer (WAL), so they run on the event loop's
        # own connection: a hop to a worker thread would cost more than the query.
        self.reader = store.connect(self.db_path)
        self.write = GroupCommit(self.db_path, max_batch)
        self.secret = store.secret(self.reader).encode()
        self.md = _markdown()
        self.templates = Environment(loader=FileSystemLoader(HERE / "templates"),
                                     autoescape=select_autoescape(default=True), auto_reload=False)
        self.annotator_ids: dict[str, int] = {}  # token hash -> id; annotators are never deleted

    def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a store function that only reads (writes go through `self.write`)."""
        return fn(self.reader, *args)

    # ------------------------------------------------------------------------------------------------ sessions

    def form_token(self, role: str, token: str) -> str:
        return hmac.new(self.secret, f"{role}:{store.hash_token(token)}".encode(), "sha256").hexdigest()

    def annotator(self, request: Request) -> tuple[int, str]:
        """(annotator id, form token) of the request's session; 401 without a session, 403 with a bad one."""
        token = request.cookies.get(ANNOTATOR_COOKIE)
        if not token:
            raise HTTPException(401, "Unauthorized")
        key = store.hash_token(token)
        annotator_id = self.annotator_ids.get(key)
        if annotator_id is None:
            annotator_id = self.read(store.find_annotator, token)
            if annotator_id is None:
                raise HTTPException(403, "Forbidden")
            self.annotator_ids[key] = annotator_id
        return annotator_id, self.form_token("annotator", token)

    def admin(self, request: Request) -> str:
        token = request.cookies.get(ADMIN_COOKIE)
        if not token:
            raise HTTPException(401, "Unauthorized")
        if not self.read(store.is_admin, token):
            raise HTTPException(403, "Forbidden")
        return self.form_token("admin", token)

    @staticmethod
    async def checked_form(request: Request, form_token: str) -> dict[str, str]:
        form = await request.form()
        sent = form.get("csrf")
        if not isinstance(sent, str) or not hmac.compare_digest(sent.encode(), form_token.encode()):
            raise HTTPException(403, "Forbidden")
        return {k: v for k, v in form.items() if isinstance(v, str)}

    def page(self, request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = self.templates.get_template(template).render(nonce=request.state.csp_nonce, **context)
        return HTMLResponse(html, status_code=status)

    # -------------------------------------------------------------------------------------------------- routes

    async def enter(self, request: Request) -> Response:
        """An invite link: remember the token in a cookie, then leave the URL that carries it."""
        token = request.path_params["token"]
        if self.read(store.find_annotator, token) is not None:
            cookie, target = ANNOTATOR_COOKIE, "/vote"
        elif self.read(store.is_admin, token):
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
            self.admin(request)
            return RedirectResponse("/admin", status_code=303)
        self.annotator(request)
        return RedirectResponse("/vote", status_code=303)

    async def vote_page(self, request: Request) -> Response:
        annotator_id, form_token = self.annotator(request)
        # a reload needs no write, so it does not queue behind other people's commits
        shown = self.read(store.current_item, annotator_id) or await self.write(
            store.next_item, annotator_id, self.votes_per_item)
        progress = self.read(store.progress, annotator_id, self.votes_per_item)
        if shown is None:
            return self.page(request, "done.html", progress=progress)
        return self.page(request, "vote.html", shown=shown, progress=progress, csrf=form_token,
                         instruction=render_markdown(self.md, shown.instruction),
                         left=render_markdown(self.md, shown.left), right=render_markdown(self.md, shown.right),
                         max_comment=MAX_COMMENT_CHARS)

    async def vote(self, request: Request) -> Response:
        annotator_id, form_token = self.annotator(request)
        form = await self.checked_form(request, form_token)
        side, comment = form.get("choice", ""), form.get("comment", "")
        if side not in store.SIDES:
            raise HTTPException(400, "choice must be left, right or tie")
        if len(comment) > MAX_COMMENT_CHARS:
            raise HTTPException(400, f"comment longer than {MAX_COMMENT_CHARS} characters")
        try:
            await self.write(store.record_vote, annotator_id, form.get("item", ""), side, comment, self.votes_per_item)
        except store.VoteRejected as exc:
            return self.page(request, "message.html", status=409, message=str(exc))
        return RedirectResponse("/vote", status_code=303)

    async def next(self, request: Request) -> Response:
        annotator_id, form_token = self.annotator(request)
        form = await self.checked_form(request, form_token)
        await self.write(store.advance, annotator_id, form.get("item", ""))
        return RedirectResponse("/vote", status_code=303)

    async def admin_page(self, request: Request) -> Response:
        form_token = self.admin(request)
        return await self.render_admin(request, form_token)

    async def render_admin(self, request: Request, form_token: str, **extra: Any) -> Response:
        overview = self.read(store.overview, self.votes_per_item)
        annotations = self.read(store.annotations)
        summary, agreement, controls, plot = await run_in_threadpool(admin_tallies, annotations)
        people = {row.name: {"agreement": (agreement or {}).get("by_annotator", {}).get(row.name),
                             "controls": (controls or {}).get("by_annotator", {}).get(row.name)}
                  for row in overview.annotators}
        return self.page(request, "admin.html", overview=overview, summary=summary, plot=plot, csrf=form_token,
                         agreement=agreement, controls=controls, people=people,
                         votes_per_item=self.votes_per_item, db_name=self.db_path.name, **extra)

    async def invite(self, request: Request) -> Response:
        form_token = self.admin(request)
        form = await self.checked_form(request, form_token)
        try:
            token = await self.write(store.add_annotator, form.get("name", ""))
        except UserError as exc:
            return await self.render_admin(request, form_token, invite_error=str(exc))
        link = f"{str(request.base_url).rstrip('/')}/a/{token}"
        return await self.render_admin(request, form_token, invited=form.get("name", "").strip(), link=link)

    async def export(self, request: Request) -> Response:
        self.admin(request)
        annotations = self.read(store.annotations)
        return Response(json.dumps(annotations, ensure_ascii=False, indent=1), media_type="application/json",
                        headers={"content-disposition": 'attachment; filename="annotations.json"'})


def admin_tallies(annotations: list[dict]) -> tuple[dict | None, dict | None, dict | None, str | None]:
    """(win-rate summary of the real pairs, agreement between annotators, control accuracy, bar chart); each None
    when there is nothing to show yet."""
    real = [a for a in annotations if not is_control(a)]
    summary = summarize(real) if real else None
    return (summary, annotator_agreement(annotations), control_summary(annotations),
            tally_plot(summary) if summary else None)


def tally_plot(summary: dict) -> str:
    """A small bar chart of a `stats.summarize` result as a base64 PNG (embedded in the admin page; no pyplot)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 2.2), dpi=100)
    ax = fig.add_subplot()
    labels = [f"{summary['opponent']} better", "tie", f"{summary['model']} better"]
    values = [summary["losses"], summary["ties"], summary["wins"]]
    ax.barh(labels, values, color=["#4c72b0", "#999999", "#dd8452"])
    ax.invert_yaxis()
    ax.set_xlim(0, max(values) * 1.15 + 1)  # room for the count printed after each bar
    ax.set_xlabel("votes")
    for y, value in enumerate(values):
        ax.text(value, y, f" {value}", va="center")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode()


def create_app(db_path: str | Path, votes_per_item: int = 1, max_batch: int = 64) -> ASGIApp:
    """The ASGI app over an existing votes database (create it and import pairs with `store` first).

    `max_batch` caps the writes committed together; 1 commits every write alone (the benchmark's baseline)."""
    handlers = AnnotateApp(db_path, votes_per_item, max_batch)
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
