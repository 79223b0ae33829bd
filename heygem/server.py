"""One ASGI app: the HeyGem-compatible API, our JSON API, and the Gradio studio at "/", on one supervisor."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import gradio as gr
import gradio.utils
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import State
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from heygem import __version__
from heygem.api import auth, easy, events, live, rest, submit
from heygem.api.auth import AuthMiddleware, Credentials, check_exposure
from heygem.api.gradio_files import GradioFileCheck, LocalFilesOnly
from heygem.api.gradio_sessions import PageSessions, SessionStreams
from heygem.api.limits import BodyLimitMiddleware, PlainFailures, UploadSlots
from heygem.api.served_files import OPEN_FILE_HOOK
from heygem.api.shared_result import share_results
from heygem.api.slow_clients import H11_HOOKS
from heygem.api.storage import FreeSpaceGate
from heygem.config import Config
from heygem.errors import HeyGemError, InputError, QueueFullError, StorageFullError, TaskNotFoundError
from heygem.hooks import require_hooks
from heygem.supervisor import TaskSupervisor
from heygem.ui.studio import CSS_PATH, build_studio

# HTTP status of each expected failure in /api/v1/*; /easy/* always answers 200 with its own codes.
ERROR_STATUS: dict[type[HeyGemError], int] = {InputError: 400, TaskNotFoundError: 404, StorageFullError: 507,
                                              QueueFullError: 503}


def create_app(config: Config) -> FastAPI:
    require_hooks(OPEN_FILE_HOOK, *H11_HOOKS)
    check_exposure(config.server)
    supervisor = TaskSupervisor(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The server accepts connections only after this: no request meets a supervisor that is not ready.
        try:
            await run_in_threadpool(supervisor.start)
        except HeyGemError as exc:
            app.state.startup_error = exc  # for StartupFailureReport
            raise
        await run_in_threadpool(submit.clear_incoming, config)
        sweeper = asyncio.create_task(app.state.page_sessions.run())
        try:
            yield
        finally:
            sweeper.cancel()
            await run_in_threadpool(supervisor.shutdown)

    app = FastAPI(title="HeyGem", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.config = config
    app.state.supervisor = supervisor
    app.state.credentials = Credentials(config.server, config.paths.data_dir / "signed_out.json")
    app.state.event_streams = events.EventStreams()
    app.add_exception_handler(HeyGemError, answer_error)
    # Before the studio's mount: these /login and /logout take precedence over Gradio's.
    app.include_router(auth.router)
    app.include_router(easy.router)
    share_results(supervisor)  # the copy of each /easy result that HeyGem's desktop client opens
    app.include_router(rest.router)
    app.include_router(submit.router)
    app.include_router(events.router)
    app.include_router(live.router)
    app.state.page_sessions = PageSessions(mount_studio(app, supervisor, config), config.server.page_session_idle_s)
    app.add_middleware(StartupFailureReport, state=app.state)
    # The middleware added last runs first: out of descriptors, the credential, local files only for Gradio's file
    # route, free disk space, an upload slot, then the body's size, time and Gradio's file paths, and the open streams
    # of the page's sessions.
    app.add_middleware(SessionStreams, sessions=app.state.page_sessions)
    app.add_middleware(BodyLimitMiddleware, max_bytes=config.server.max_request_kb * 1024,
                       call_max_bytes=config.server.max_call_kb * 1024, timeout_s=config.server.request_timeout_s,
                       check=GradioFileCheck(Path(gradio.utils.get_upload_folder())))
    app.add_middleware(UploadSlots, slots=config.server.max_concurrent_uploads)
    app.add_middleware(FreeSpaceGate, config=config)
    app.add_middleware(LocalFilesOnly)
    app.add_middleware(AuthMiddleware, credentials=app.state.credentials)
    app.add_middleware(PlainFailures)
    return app


def mount_studio(app: FastAPI, supervisor: TaskSupervisor, config: Config) -> gr.Blocks:
    server = config.server
    page = build_studio(supervisor, config)
    page.state_session_capacity = server.page_sessions_max  # read by mount_gradio_app
    # No Gradio `auth`: heygem.api.auth signs people in, for the page and every other route alike.
    gr.mount_gradio_app(
        app, page, path="/",
        server_name=server.host, server_port=server.port,
        # Results are the only files of ours the page may serve; uploads stay in Gradio's own cache.
        allowed_paths=[str(config.paths.results_dir.resolve())],
        max_file_size=int(server.max_upload_mb * 1e6),
        theme=gr.themes.Soft(primary_hue="indigo"), css_paths=[CSS_PATH],
        app_kwargs={"docs_url": None, "redoc_url": None, "openapi_url": None},
        footer_links=[], run_history=False, ssr_mode=False, mcp_server=False, pwa=False, show_error=True,
    )
    # Gradio checks the files a call names (only its upload folder) once `has_launched` is set, which launch()
    # does and mount_gradio_app does not. heygem.api.gradio_files checks first; this is the second line.
    page.has_launched = True
    # Gradio's app answers its own errors (a 500) before ours sees them: it gets the descriptor rule too.
    studio = next(route.app for route in app.routes if isinstance(route, Mount) and isinstance(route.app, FastAPI))
    studio.add_middleware(PlainFailures)
    return page


class StartupFailureReport:
    """Hands uvicorn the sentence of a HeyGemError that stopped the app's start (a wrong ray.address, say) to print,
    instead of the traceback Starlette sends, forty lines of frames above the one line a person has to act on."""

    def __init__(self, app: ASGIApp, state: State) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def report(message: Message) -> None:
            error = getattr(self.state, "startup_error", None)
            if message["type"] == "lifespan.startup.failed" and error is not None:
                message = {**message, "message": f"error: {error}"}
            await send(message)

        await self.app(scope, receive, report if scope["type"] == "lifespan" else send)


async def answer_error(_: Request, exc: Exception) -> JSONResponse:
    status = next((code for kind, code in ERROR_STATUS.items() if isinstance(exc, kind)), 500)
    return JSONResponse({"error": str(exc)}, status_code=status)

