"""``convision serve --checkpoint X|model.onnx [--host 127.0.0.1 --port 8000 --max-upload-mb 10]``:
a web service (REST API and a page) over one model; see :mod:`convision.serve.app`."""

from __future__ import annotations

import argparse

from convision.cli import common
from convision.serve import app

HELP = "serve a checkpoint or an exported .onnx over HTTP: POST /predict, GET /health, GET /model, a page at /"


def add_parser(tasks: argparse._SubParsersAction) -> None:
    parser = tasks.add_parser(
        "serve", help=HELP, description=HELP, formatter_class=common.DEFAULTS
    )
    app.add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    return app.run(args)
