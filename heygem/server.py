"""One ASGI app: the HeyGem-compatible API, our JSON API, and the Gradio studio at "/", on one supervisor."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import gradio as gr
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from heygem import __version__
from heygem.api import easy, rest
from heygem.api.context import Unauthorized
from heygem.api.limits import BodyLimitMiddleware
from heygem.config import Config
from heygem.errors import HeyGemError, InputError, QueueFullError, TaskNotFoundError
from heygem.supervisor import TaskSupervisor
from heygem.ui.studio import CSS_PATH, build_studio

# HTTP status of each expected failure in /api/v1/*; /easy/* always answers 200 with its own codes.
ERROR_STATUS: dict[type[HeyGemError], int] = {InputError: 400, TaskNotFoundError: 404, QueueFullError: 503}


def create_app(config: Config) -> FastAPI:
    supervisor = TaskSupervisor(config)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # The server accepts connections only after this: no request meets a supervisor that is not ready.
        await run_in_threadpool(supervisor.start)
        try:
            yield
        finally:
            await run_in_threadpool(supervisor.shutdown)

    app = FastAPI(title="HeyGem", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.config = config
    app.state.supervisor = supervisor
    app.add_middleware(BodyLimitMiddleware, max_bytes=config.server.max_request_kb * 1024)
    app.add_exception_handler(HeyGemError, answer_error)
    app.add_exception_handler(Unauthorized, answer_unauthorized)
    app.include_router(easy.router)
    app.include_router(rest.router)
    mount_studio(app, supervisor, config)
    return app


def mount_studio(app: FastAPI, supervisor: TaskSupervisor, config: Config) -> None:
    server = config.server
    gr.mount_gradio_app(
        app, build_studio(supervisor, config), path="/",
        server_name=server.host, server_port=server.port,
        auth=(server.username, server.password) if server.password else None,
        auth_message="HeyGem Studio: sign in with the user name and password from the server's configuration.",
        # Results are the only files of ours the page may serve; uploads stay in Gradio's own cache.
        allowed_paths=[str(config.paths.results_dir.resolve())],
        max_file_size=int(server.max_upload_mb * 1e6),
        theme=gr.themes.Soft(primary_hue="indigo"), css_paths=[CSS_PATH],
        app_kwargs={"docs_url": None, "redoc_url": None, "openapi_url": None},
        footer_links=[], run_history=False, ssr_mode=False, mcp_server=False, pwa=False, show_error=True,
    )


async def answer_error(_: Request, exc: Exception) -> JSONResponse:
    status = next((code for kind, code in ERROR_STATUS.items() if isinstance(exc, kind)), 500)
    return JSONResponse({"error": str(exc)}, status_code=status)


async def answer_unauthorized(request: Request, exc: Exception) -> JSONResponse:
    if request.url.path.startswith(easy.router.prefix):
        return easy.envelope(easy.SYSTEM_ERROR, msg=str(exc), status_code=401)
    return JSONResponse({"error": str(exc)}, status_code=401)
