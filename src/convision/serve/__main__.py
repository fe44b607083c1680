"""``python -m convision.serve model.onnx [--host --port --max-upload-mb]``: the web service without
the rest of the command line (which imports PyTorch), for machines that only have the ``.onnx``."""

from __future__ import annotations

import argparse
import sys

from convision.errors import ConvisionError
from convision.serve.app import add_arguments, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m convision.serve",
        description="Serve a convision model over HTTP.",
    )
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except ConvisionError as e:
        print(f"convision serve: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
