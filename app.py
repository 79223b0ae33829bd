"""`python app.py`: the HeyGem studio (browser) and HTTP API on one port (default 127.0.0.1:8383)."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Sequence

from heygem.config import Config, load_config
from heygem.errors import HeyGemError
from heygem.logs import setup_app_logging


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="HeyGem studio and HeyGem-compatible HTTP API")
    parser.add_argument("--host", help="address to bind (default: server.host, 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port to listen on (default: server.port, 8383)")
    parser.add_argument("--config", help="YAML file with settings that override configs/default.yaml")
    return parser.parse_args(argv)


def load(args: argparse.Namespace) -> Config:
    flags = {"host": args.host, "port": args.port}
    overrides = {"server": {key: value for key, value in flags.items() if value is not None}}
    return load_config(args.config, overrides=overrides)


def keep_gradio_inside(config: Config) -> None:
    """Gradio reads these when it is imported: keep its cache in data_dir and its telemetry off."""
    os.environ.setdefault("GRADIO_TEMP_DIR", str(config.paths.data_dir / "gradio"))
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = load(parse_args(argv))
    except HeyGemError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    setup_app_logging(config)
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
                                              http=timed_protocol(server.request_timeout_s),
                                              timeout_graceful_shutdown=server.shutdown_grace_s, access_log=False),
                               app.state.event_streams)
    with contextlib.suppress(KeyboardInterrupt):
        runner.run()
    return 0 if runner.started else STARTUP_FAILURE


if __name__ == "__main__":
    sys.exit(main())
