"""Serve a gallery index: an HTTP search API and a page for people (see reid/service/app.py)."""

import argparse
import ipaddress
import os

from reid.arguments import Float, Int, add_device, add_runtime
from reid.errors import ReidError
from reid.logging_utils import tool_main
from reid.service.client import TOKEN_ENV


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__,
        epilog="example: reid serve --index runs/demo/index --checkpoint runs/demo/best.pt\n"
        "then open http://127.0.0.1:8000/ (API schema: /docs)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--index", required=True, help="an index folder (reid export-index)")
    parser.add_argument("--checkpoint", "--model", required=True,
                        help="the model the index was built with (a checkpoint, or an export of "
                        "it: the fastest verified one, e.g. an int8 .onnx)")  # fmt: skip
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    parser.add_argument("--port", type=Int(0, 65535), default=8000)
    parser.add_argument(
        "--token-file",
        help=f"file holding the access token (or set {TOKEN_ENV}); needed for writes, for reads "
        "too once set, and for binding beyond loopback",
    )
    parser.add_argument(
        "--max-batch", type=Int(1, 1024), default=16, help="images per forward pass"
    )
    parser.add_argument(
        "--max-wait-ms", type=Float(0, 1000), default=5.0, help="how long a batch waits for company"
    )
    parser.add_argument(
        "--enrol-dir", help="where enrolled images are written (default INDEX/enrolled)"
    )
    add_device(parser)
    add_runtime(parser)
    return parser


def read_token(path: str | None) -> str | None:
    if path:
        try:
            token = open(path, encoding="utf-8").read().strip()
        except OSError as exc:
            raise ReidError(f"--token-file {path}: cannot read ({exc.strerror})") from None
        if len(token) < 16:
            raise ReidError(f"--token-file {path}: the token must be at least 16 characters")
        return token
    token = os.environ.get(TOKEN_ENV, "").strip()
    if token and len(token) < 16:
        raise ReidError(f"{TOKEN_ENV}: the token must be at least 16 characters")
    return token or None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(args: argparse.Namespace) -> None:
    token = read_token(args.token_file)
    if not is_loopback(args.host) and token is None:
        raise ReidError(
            f"--host {args.host}: binding beyond loopback needs a token (--token-file or {TOKEN_ENV}); "
            "gallery images are pictures of people"
        )
    from reid.optional import require

    require("uvicorn", "reid serve")
    require("fastapi", "reid serve")
    import uvicorn

    from reid.service.app import ServiceSettings, create_app
    from reid.workflows.index import compare_embedding

    app = create_app(ServiceSettings(args.index, args.checkpoint, token, args.device,
                                     args.max_batch, args.max_wait_ms, args.enrol_dir,
                                     args.runtime))  # fmt: skip
    service = app.state.service
    found = compare_embedding(service.served.snapshot().manifest, service.embedder)
    print(f"queries embedded on {found['queries']['runtime']} {found['queries']['precision']}"
          + (f"; note: {found['note']}" if "note" in found else ""), flush=True)  # fmt: skip
    print(
        f"serving {args.index} at http://{args.host}:{args.port}/ (writes {'on' if token else 'off: no token'})",
        flush=True,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    tool_main(main, get_args_parser())  # python -m reid.cli.serve
