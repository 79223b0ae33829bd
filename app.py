"""`python app.py`: the HeyGem studio (browser) and HTTP API on one port (default 127.0.0.1:8383)."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence

from loguru import logger

from heygem.config import Config, load_config
from heygem.desktop_client import ClientFolder, find_client_folder
from heygem.errors import HeyGemError
from heygem.logs import setup_app_logging


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="HeyGem studio and HeyGem-compatible HTTP API")
    parser.add_argument("--host", help="address to bind (default: server.host, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default: server.port, 8383)")
    parser.add_argument("--config", help="YAML file with settings that override configs/default.yaml")
    parser.add_argument("--heygem-client", action="store_true",
                        help="serve HeyGem.ai / Duix.Avatar's desktop client: share its folder "
                             "(~/duix_avatar_data/face2face/temp) as paths.input_dir")
    return parser.parse_args(argv)


def load(args: argparse.Namespace, client_folder: ClientFolder | None) -> Config:
    flags = {"host": args.host, "port": args.port}
    overrides: dict[str, dict[str, object]] = {
        "server": {key: value for key, value in flags.items() if value is not None}}
    if client_folder is not None:
        overrides["paths"] = {"input_dir": str(client_folder.path)}
    return load_config(args.config, overrides=overrides)


def keep_gradio_inside(config: Config) -> None:
    """Gradio reads these when it is imported: keep its cache in data_dir and its telemetry off."""
    os.environ.setdefault("GRADIO_TEMP_DIR", str(config.paths.data_dir / "gradio"))
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    # Gradio summarizes its queue's last 10,000 calls with pandas after every call, for a dashboard we do not serve:
    # a flood of calls cost a DataFrame each. Summarize never (every 10^9 calls).
    os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", "1000000000")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        client_folder = find_client_folder() if args.heygem_client else None
        config = load(args, client_folder)
    except HeyGemError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    setup_app_logging(config)
    if client_folder is not None:
        logger.info(client_folder.note)
    keep_gradio_inside(config)
    import uvicorn
    from uvicorn.main import STARTUP_FAILURE

    from heygem.api.events import EventStreamServer
    from heygem.api.slow_clients import timed_protocol
    from heygem.server import create_app

    try:
        app = create_app(config)
    except HeyGemError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    server = config.server
    print(f"HeyGem studio on http://{server.host}:{server.port}/ (HeyGem API at /easy/submit, /easy/query)",
          flush=True)
    # uvicorn turns SIGINT/SIGTERM into the app's shutdown, which stops the supervisor and its workers. What
    # uvicorn.run does, with a server that also ends the app's event streams when it is asked to stop.
    runner = EventStreamServer(uvicorn.Config(app, host=server.host, port=server.port,
                                              log_level=config.logging.level.lower(),
                                              http=timed_protocol(server.request_timeout_s, server.upload_timeout_s),
                                              timeout_graceful_shutdown=server.shutdown_grace_s, access_log=False),
                               app.state.event_streams)
    with contextlib.suppress(KeyboardInterrupt):
        runner.run()
    return 0 if runner.started else STARTUP_FAILURE


if __name__ == "__main__":
    sys.exit(main())
