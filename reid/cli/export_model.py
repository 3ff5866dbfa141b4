"""Export the embedding model of a checkpoint to a torch.export program (.pt2), ONNX (.onnx, the
torch.export-based exporter) or legacy TorchScript (.ts), checked against PyTorch on the same
inputs (max abs difference < 1e-4; onnxruntime for ONNX) with a dynamic batch axis."""

import argparse

from reid.loading import load_model
from reid.logging_utils import tool_main
from reid.models.export import check_export_targets, export_model
from reid.outputs import sha256


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__,
        epilog="example: reid export-model --checkpoint runs/demo/best.pt "
        "--out runs/demo/model.pt2 --out runs/demo/model.onnx",
    )
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument(
        "--out", required=True, action="append", help="target file; repeat for several formats"
    )
    return parser


def main(args: argparse.Namespace) -> None:
    check_export_targets(args.out)  # every target before the first (slow) conversion
    model, cfg = load_model(args.checkpoint)
    digest = sha256(args.checkpoint)
    for target in args.out:
        difference = export_model(model, target, tuple(cfg.data.image_size), digest)
        print(f"{target}: max |export - pytorch| = {difference:.2e} (sidecar {target}.json)")


if __name__ == "__main__":
    tool_main(main, get_args_parser())  # python -m reid.cli.export_model
