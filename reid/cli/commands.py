"""The subcommands of ``reid``: name → module of ``reid.cli`` (each has ``get_args_parser`` and
``main``, the same parsers the generated flag tests walk)."""

COMMANDS = {
    "train": "train",
    "evaluate": "evaluate",
    "export-index": "export_index",
    "search": "search",
    "serve": "serve",
    "export-model": "export_model",
    "make-split": "make_split",
    "make-synthetic": "make_synthetic",
    "stats": "dataset_stats",
    "study": "study",
    "demo": "demo",
    "diagnose": "diagnose_weights",
    "convert-checkpoint": "convert_checkpoint",
}
