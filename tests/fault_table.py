"""Build docs/FAULTS.md from tests/test_faults.py: one row per test, from its docstring's first
line ``case → what the user sees``. ``python -m tests.fault_table`` rewrites the file;
``test_fault_table_is_current`` fails when it is out of date."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TABLE = REPO / "docs" / "FAULTS.md"


#: the mechanisms behind the rows: each lives in one place, and the generated tests cover
#: every flag, key and output name, so a new one is covered without a new row
MECHANISMS = [
    "## The mechanisms (one place each)",
    "",
    "| mechanism | where | generated test |",
    "|---|---|---|",
    "| **Ownership per file.** A tool writes a name that does not exist, or replaces a file its "
    "folder's ledger (`.reid-output.json`: tool, size, mtime, SHA-256 up to 8 MiB, link target) "
    "lists as written by reid and unchanged since; anything else under an output name is refused "
    "with one line, and every other file in the folder is never touched. A dataset's image "
    "folders (make_split, make_synthetic) must hold nothing foreign, which would become data. An "
    "index's `manifest.json` is its ledger. | `reid/outputs.py` (`OutputFolder`) | "
    "`tests/test_ownership.py`: a planted file under each output name of every tool, and an "
    "unrelated one beside them, survive every run and every replacement |",
    "| **Every check before the work.** Typed ranges for every numeric flag and config key, "
    "true or false for every boolean key (OmegaConf alone reads 2 as true), "
    "devices that exist, targets (free or ours, writable, tested by creating a probe, names that "
    "fit), inputs (nulls, fractions, split values), compatibility (model and dimension before "
    "embedding, FAISS factory and IVF lists against the gallery), and only then the work; an old "
    "output goes only once the new one is complete (`--overwrite` after every check; split and "
    "image folders built aside and swapped in). | `reid/arguments.py`, `reid/config.py` "
    "(`RANGES`), `OutputFolder.prepare` | `tests/test_arguments.py`: 0, −1, 1e12, a word and "
    "the values just outside each declared range, for every flag of every tool and every "
    "numeric key; numbers and words that are no boolean, for every boolean key |",
    "| **One atomic write.** Temp in the target's folder under a short name holding its owner's "
    "pid (`.~reid.PID.XXXXXX`), fsync, rename, folder fsync; removed on failure; stale temps "
    "removed at the next start only when their owner is gone; the target's mode kept; a symlink "
    "target refused. An index commits by replacing its manifest after writing a new generation "
    "of files beside the old (a crash leaves the old index or the new one); a killed save's "
    "journal names its orphans. The ownership ledger is replaced the same way (it was rewritten "
    "in place: a full disk left broken JSON, and every file of the folder then counted as not "
    "reid's). | `reid/atomic.py`; `GalleryIndex.save`; `OutputFolder._locked_ledger` | every "
    "tool writes through it; `test_the_ledger_is_replaced_atomically` |",
    "| **One parser per file kind, at the boundary.** Every file reid reads is parsed where it "
    "is read into a checked object (pydantic schemas, or the config schema): keys, types, "
    "ranges, lengths, cross-field consistency; names that become paths (manifest files and "
    "roles, journal entries, ledger entries, study arm names) are plain names inside their "
    "folder. Beyond it the code trusts the object; a file that fails is one line naming the "
    "file and the field. | `reid/boundary.py`; `index/manifest.py` (manifest, journal), "
    "`outputs.py` (ledger), `models/checkpoint.py`, `models/export.py` (sidecar), "
    "`evaluation/features_io.py`, `data/manifest.py` (CSV), `workflows/study/grid.py` (grid), "
    "`config.py` (config, interpolations) | `tests/test_file_boundaries.py`: every key of every "
    "kind deleted and retyped, an unknown key, `..`, a nested and an absolute path in every "
    "name, the file truncated, names duplicated: one line or a clean read, nothing written or "
    "deleted, a victim file beside the folder intact |",
    "| **A checkpoint cannot run code.** Written as tensors and plain types, read with "
    "`torch.load(weights_only=True)`; a file that needs any other object is refused before any "
    "of it runs, naming the objects; an older reid checkpoint converts by "
    "`reid convert-checkpoint`, run by the user on a file they trust. | "
    "`reid/models/checkpoint.py` (`read_checkpoint`, `convert_checkpoint`) | "
    "`test_a_checkpoint_carrying_a_pickled_callable_is_refused_without_running_it` (every "
    "reader) |",
    "| **The service serves what the disk holds.** Each request compares the manifest's identity "
    "(a commit replaces it: a new inode) with the one it loaded and swaps in the new index "
    "before answering; an index it cannot serve answers 503. Any removal, CLI or HTTP, deletes "
    "the enrolled images of the removed rows (listed in the enrolment folder's ledger). One "
    "pixel conversion for tools and service; pixel budgets per file, per request and per "
    "process, checked on the declared size; expected OS errors answer 507 (full) or 503. | "
    "`reid/service/gallery.py` (`snapshot`), `outputs.remove_owned`, `service/uploads.py` "
    "(`PixelBudget`), `data/images.to_rgb` | `tests/test_service.py`: a CLI removal seen by "
    "the next request, the request and process budgets, a 16-bit upload, a read-only folder, "
    "an index of another model |",
    "| **A collection belongs to one folder.** The export records the folder's identity (host, "
    "file system, inode, path) in the collection and the manifest; a write from another folder "
    "(a copy) is refused with what to do; every server call goes through one wrapper that "
    "bounds it (`REID_MILVUS_TIMEOUT`, 60 s) and makes its failure one line, keeping the "
    "journal for the next writer. | `reid/index/milvus_store.py` (`check_owner`, `_Timed`) | "
    "`tests/test_milvus.py`: a copied folder, a server killed mid-append |",
    "| **One error path.** Expected OS errors (a full disk also when torch or FAISS report it as "
    "`RuntimeError`, a name too long, no permission, a read-only file system) become one line "
    "naming the user's path; Ctrl-C names the last good checkpoint (exit 130); a reason that "
    "lists files prints whole; argparse's own errors are one line. | `reid/atomic.py` "
    "(`user_error`), `reid/logging_utils.py` (`tool_main`) | the rows below |",
    "",
    "Case counts of the probe that opened this work (89 cases, 58 defects): every case below "
    "that names it now ends as its row says. The second probe (168 cases, 60 defects: what reid "
    "reads) is answered by the four mechanisms above and their generated tests; its named cases "
    "are rows below or tests in `tests/test_file_boundaries.py`, `tests/test_service.py` and "
    "`tests/test_milvus.py`. Who is trusted with what: [security.md](security.md).",
    "",
]


def rows() -> list[tuple[str, str, str]]:
    tree = ast.parse((REPO / "tests" / "test_faults.py").read_text())
    out = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
            first = (ast.get_docstring(node) or "").splitlines()[0]
            case, _, seen = first.partition(" → ")
            out.append((case.strip(), seen.strip().rstrip("."), node.name))
    return out


def render() -> str:
    lines = [
        "# Faults: what a user sees after an everyday mistake",
        "",
        "Generated by `python -m tests.fault_table` from the first docstring line of each test in",
        "`tests/test_faults.py` (each row is checked by its test). Expected failures print one",
        "`error: …` line and exit with status 2; tracebacks are for bugs.",
        "",
        *MECHANISMS,
        "## The cases",
        "",
        "| case | what the user sees | test |",
        "|---|---|---|",
    ]
    lines += [f"| {case} | {seen} | `{name}` |" for case, seen, name in rows()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    TABLE.write_text(render())
    print(f"wrote {TABLE}")
