"""Export the embedding model of a checkpoint to a torch.export program (.pt2), ONNX (.onnx, the
torch.export-based exporter) or legacy TorchScript (.ts), checked against PyTorch on the same
inputs (max abs difference < 1e-4) with a dynamic batch axis; or, as ONNX, at a reduced
precision (bf16, int8 calibrated on your images), verified on a labelled split when it is made."""

import argparse

from reid.arguments import Float, Int
from reid.logging_utils import tool_main
from reid.models.runtime import PRECISIONS
from reid.workflows.export import Foreign, Reduction, export_models


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__,
        epilog="examples:\n  reid export-model --checkpoint runs/demo/best.pt "
        "--out runs/demo/model.pt2 --out runs/demo/model.onnx\n"
        "  reid export-model --checkpoint runs/demo/best.pt --out runs/demo/model.int8.onnx "
        "--precision int8 --calibrate datasets/synthetic",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--checkpoint", required=True,
                        help="a reid checkpoint, or torchreid:NAME for a model torchreid saved "
                        "(with --weights)")  # fmt: skip
    parser.add_argument(
        "--weights",
        metavar="FILE",
        help="torchreid:NAME's weights (a torchreid checkpoint or state dict)",
    )
    parser.add_argument(
        "--image-size",
        type=Int(16, 4096),
        nargs=2,
        metavar=("H", "W"),
        help="torchreid:NAME's input size (default 256 128, torchreid's)",
    )
    parser.add_argument(
        "--out", required=True, action="append", help="target file; repeat for several formats"
    )
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="fp32 (default); bf16 (OpenVINO, CPUs with bf16); int8 (static, "
                        "per channel, calibrated on --calibrate)")  # fmt: skip
    parser.add_argument("--calibrate", metavar="FOLDER",
                        help="int8: your images to calibrate on (a Market-format root: its "
                        "bounding_box_train/)")  # fmt: skip
    parser.add_argument("--calibration-crops", type=Int(16, 100000), default=256, metavar="N",
                        help="int8: how many crops of --calibrate (drawn with seed 0)")  # fmt: skip
    parser.add_argument("--verify", metavar="SPLIT",
                        help="labelled query/ + bounding_box_test/ (or CSV) the reduced model is "
                        "measured on (default: --calibrate when it has them)")  # fmt: skip
    parser.add_argument("--max-map-loss", type=Float(0, 100), default=1.0, metavar="POINTS",
                        help="refuse the export when it loses more mAP points than this")  # fmt: skip
    parser.add_argument("--runtime", choices=("onnxruntime", "openvino"),
                        help="the runtime the reduced model is verified with and runs on "
                        "(default: onnxruntime for int8, openvino for bf16)")  # fmt: skip
    return parser


def main(args: argparse.Namespace) -> None:
    reduction = Reduction(args.precision, args.calibrate, args.calibration_crops, args.verify,
                          args.max_map_loss, args.runtime)  # fmt: skip
    foreign = Foreign(args.weights, tuple(args.image_size) if args.image_size else None)
    for done in export_models(args.checkpoint, args.out, reduction, foreign):
        target = done["out"]
        print(
            f"{target}: max |export - pytorch| = {done['difference']:.2e} (sidecar {target}.json)"
        )
        v = done.get("verification")
        if v:
            kept = done.get("calibration", {}).get("fp32_nodes", [])
            print(
                f"{target}: {done['precision']} on {v['runtime']}, verified on {v['split']} "
                f"({v['queries']} queries / {v['gallery']} gallery): R1 {v['reduced']['rank1']:.2f} "
                f"/ mAP {v['reduced']['mAP']:.2f} vs fp32 {v['fp32']['rank1']:.2f} / "
                f"{v['fp32']['mAP']:.2f} (mAP {-v['map_loss']:+.2f}, bound −{v['max_map_loss']:g}); "
                f"top-10 overlap {v['top10_overlap']:.3f}, worst cosine gap {v['worst_cosine_gap']:.2e}"
                + (f"; {len(kept)} sensitive nodes kept in fp32" if kept else "")
            )


if __name__ == "__main__":
    tool_main(main, get_args_parser())  # python -m reid.cli.export_model
