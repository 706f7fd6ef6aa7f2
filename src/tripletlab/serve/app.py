"""The web layer of ``tripletlab serve``: :func:`create_app` builds the FastAPI application over
a :class:`~tripletlab.serve.gallery.Gallery` (testable in-process, no network), :func:`serve`
runs it with uvicorn.

FastAPI, python-multipart and uvicorn are the optional ``[serve]`` extra: this module imports
without them, and :func:`require_web` says in one line how to install them.

Routes (every error is ``{"error": "<one line>"}`` with its status, never a traceback):

- ``GET /`` the page, ``GET /static/...`` its script and style (no other origin is asked
  for anything: the Content-Security-Policy allows this server alone);
- ``GET /api/health``; ``POST /api/search`` (multipart ``image``, ``k``);
  ``GET /api/items/{id}/neighbors?k=``; ``GET /api/thumbnails/{row}.png`` (indexed items
  only, by row); ``GET /api/map``; ``GET /api/metrics`` (``status`` ``"computing"`` until
  the per-class panel, computed once in a background thread at start, is ``"ready"``: the
  page asks again); ``GET /api/classes/{label}/hardest`` (503 while the panel computes).

Guards, before any route runs (:class:`Guard`): with a token, every request carries
``Authorization: Bearer TOKEN`` or the cookie that ``GET /?token=TOKEN`` sets (else 401);
a body over the upload limit plus :data:`FORM_OVERHEAD` is refused with 413 before it is
read whole (by ``Content-Length`` or while it streams).
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from tripletlab.serve.gallery import MAX_K, Gallery, RequestError, ServeConfig, ServeError

try:  # the [serve] extra
    import anyio.to_thread
    import uvicorn
    from fastapi import FastAPI, File, Form, Query, Request, UploadFile
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse, Response
    from fastapi.staticfiles import StaticFiles
    from starlette.exceptions import HTTPException

    WEB_MISSING: str | None = None
except ImportError as _err:  # pragma: no cover - exercised without the extra
    WEB_MISSING = _err.name or "fastapi"

STATIC = Path(__file__).parent / "static"
#: Bytes a multipart body may hold beyond the image (boundaries, headers, the k field).
FORM_OVERHEAD = 64 * 1024
#: Threads that run the routes (anyio's default is 40). The model and the index answer one
#: request at a time anyway (the gallery's lock): more threads only queue there, each with
#: its own malloc arena and OpenMP team, and the server's memory grew with them under load.
WORKER_THREADS = 4
#: The cookie ``GET /?token=`` sets, so that the page and its images need no header.
TOKEN_COOKIE = "tripletlab_token"
#: Only this server: no script, style, image or connection to any other origin.
CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)

log = logging.getLogger("tripletlab.serve")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def require_web() -> None:
    """Raise a one-line :class:`ServeError` when the ``[serve]`` extra is missing."""
    if WEB_MISSING is not None:
        raise ServeError(
            f"tripletlab serve needs the [serve] extra ({WEB_MISSING} is not installed): "
            "pip install 'tripletlab[serve]'"
        )


async def _send_json(send: Send, status: int, body: dict[str, Any], **headers: str) -> None:
    data = json.dumps(body).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    raw += [(k.lower().replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": data})


class Guard:
    """ASGI middleware: the token check, the body limit and the security headers.

    Args:
        app: the application guarded.
        token: the bearer token every request needs; ``None``: none.
        max_body: bytes a request body may hold (413 beyond).
    """

    def __init__(self, app: ASGIApp, *, token: str | None, max_body: int) -> None:
        self.app = app
        self.token = token
        self.max_body = max_body

    def _authorised(self, scope: Scope) -> bool:
        if self.token is None:
            return True
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        given = headers.get("authorization", "")
        if given.startswith("Bearer ") and hmac.compare_digest(given[7:], self.token):
            return True
        cookie: SimpleCookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except CookieError:  # a malformed cookie header is no credential
            return False
        morsel = cookie.get(TOKEN_COOKIE)
        return morsel is not None and hmac.compare_digest(morsel.value, self.token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [
                    (b"content-security-policy", CSP.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                ]
                message["headers"] = headers
            await send(message)

        if self.token is not None and not self._authorised(scope):
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            given = query.get("token", [""])[0]
            if scope["path"] == "/" and given and hmac.compare_digest(given, self.token):
                cookie = f"{TOKEN_COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/"
                await send_secured(
                    {
                        "type": "http.response.start",
                        "status": 303,
                        "headers": [(b"location", b"/"), (b"set-cookie", cookie.encode())],
                    }
                )
                await send_secured({"type": "http.response.body", "body": b""})
                return
            await _send_json(
                send_secured,
                401,
                {"error": "a bearer token is required (Authorization: Bearer TOKEN)"},
                www_authenticate="Bearer",
            )
            return
        headers = dict(scope["headers"])
        try:
            declared = int(headers.get(b"content-length", b"0") or 0)
        except ValueError:
            await _send_json(send_secured, 400, {"error": "a malformed Content-Length header"})
            return
        if declared > self.max_body:
            await _send_json(send_secured, 413, {"error": self._too_large()})
            return
        body, more = [], True
        size = 0
        while more:  # the whole body, refused as soon as it passes the limit
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await _send_json(send_secured, 413, {"error": self._too_large()})
                return
            body.append(chunk)
            more = message.get("more_body", False)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(body), "more_body": False}

        await self.app(scope, replay, send_secured)

    def _too_large(self) -> str:
        limit = self.max_body - FORM_OVERHEAD
        return f"the request is larger than the upload limit of {limit:,} bytes"


def _one_line(err: RequestValidationError) -> str:
    """FastAPI's validation errors as one line: ``k: Input should be ... ; image: Field
    required``."""
    parts = []
    for e in err.errors():
        where = ".".join(str(p) for p in e.get("loc", ()) if p not in ("body", "query", "path"))
        parts.append(f"{where or 'request'}: {e.get('msg', 'invalid')}")
    return "; ".join(parts).replace("\n", " ") or "invalid request"


def create_app(gallery: Gallery, *, token: str | None = None, max_upload_bytes: int) -> Any:
    """The FastAPI application over ``gallery``, wrapped in :class:`Guard`.

    Args:
        gallery: what is searched (:func:`tripletlab.serve.load_gallery`).
        token: a bearer token every request must carry; ``None``: none.
        max_upload_bytes: uploads larger get 413.

    Starts the per-class panel's thread (:meth:`Gallery.start_panel`).

    Raises:
        ServeError: the ``[serve]`` extra is missing.
    """
    require_web()
    gallery.start_panel()  # in the background: no request waits for it

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = WORKER_THREADS
        yield

    app = FastAPI(
        title="tripletlab serve",
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/openapi.json",
        lifespan=lifespan,
    )

    @app.exception_handler(RequestError)
    async def request_error(request: Request, err: RequestError) -> JSONResponse:
        return JSONResponse({"error": str(err)}, status_code=err.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": _one_line(err)}, status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(err.detail)}, status_code=err.status_code)

    @app.exception_handler(Exception)
    async def crashed(request: Request, err: Exception) -> JSONResponse:
        log.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse({"error": "internal error (see the server's log)"}, status_code=500)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/api/health")
    def health() -> dict[str, Any]:
        return gallery.health()

    @app.post("/api/search")
    def search(
        image: UploadFile = File(...),  # noqa: B008 - FastAPI's declaration
        k: int = Form(gallery.default_k, ge=1, le=MAX_K),
    ) -> dict[str, Any]:
        data = image.file.read(max_upload_bytes + 1)
        return gallery.search_upload(data, k, max_upload_bytes)

    @app.get("/api/items/{item_id:path}/neighbors")
    def neighbors(
        item_id: str, k: int = Query(gallery.default_k, ge=1, le=MAX_K)
    ) -> dict[str, Any]:
        return gallery.search_item(item_id, k)

    @app.get("/api/thumbnails/{row}.png")
    def thumbnail(row: int) -> Response:
        headers = {"cache-control": "private, max-age=3600"}
        return Response(gallery.thumbnail(row), media_type="image/png", headers=headers)

    @app.get("/api/map")
    def map_points() -> dict[str, Any]:
        return gallery.map()

    @app.get("/api/metrics")
    def metrics() -> dict[str, Any]:
        return gallery.metrics_panel()

    @app.get("/api/classes/{label}/hardest")
    def hardest(label: int, n: int = Query(12, ge=1, le=MAX_K)) -> dict[str, Any]:
        return gallery.hardest(label, n)

    return Guard(app, token=token, max_body=max_upload_bytes + FORM_OVERHEAD)


def serve(gallery: Gallery, config: ServeConfig) -> None:
    """Run the application with uvicorn on ``config.host:config.port`` until Ctrl-C."""
    require_web()
    app = create_app(gallery, token=config.token, max_upload_bytes=config.max_upload_bytes)
    uvicorn.run(
        app,
        host=config.host,
        port=config.port,
        log_level="warning",
        access_log=False,
        server_header=False,
    )
