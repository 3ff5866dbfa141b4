"""Rewrite a reid checkpoint you trust, written before checkpoints held tensors and plain types
only, into the current safe form (read with torch.load(weights_only=True), which cannot run
code). Only run this on a file whose origin you trust: reading the old form runs its pickle."""

import argparse

from reid.logging_utils import tool_main
from reid.models.checkpoint import convert_checkpoint


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__,
        epilog="example: reid convert-checkpoint old_runs/x/last.pt --out runs/x/last.pt",
    )
    parser.add_argument("checkpoint", help="the trusted checkpoint (a .pt file or a run folder)")
    parser.add_argument("--out", required=True, help="the converted checkpoint (a new file)")
    return parser


def main(args: argparse.Namespace) -> None:
    result = convert_checkpoint(args.checkpoint, args.out)
    print(
        f"{result['out']}: converted ({', '.join(result['keys'])}); it loads without running code"
    )


if __name__ == "__main__":
    tool_main(main, get_args_parser())  # python -m reid.cli.convert_checkpoint
