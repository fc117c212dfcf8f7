"""The shape of the source, checked by reading it (ast and text; nothing is imported or run), so that a
reader can repeat the check: `pytest tests/test_structure.py`.

1. No import goes from a lower layer to a higher one (LAYERS below; function-level imports count too).
2. No function in src/ is longer than MAX_FUNCTION_LINES.
3. No block of MIN_REPEAT or more identical lines (white space folded, trivial lines skipped) stands in two
   places in src/.

Each check lists today's known exceptions by name, each with why it stands; an exception that no longer
occurs fails the test too, so the lists only shrink.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = SRC / "mtbert"

# Lowest first; a module may import from its own layer and the ones before it. A module belongs to the
# layer of the longest prefix of its dotted name listed here.
LAYERS = [
    # the base: errors, atomic writes, and the package (its __init__ names __version__ and loads the Python
    # API only on first use)
    ["errors", "io", "mtbert"],
    # torch modules: the encoder and its loading, heads, the multi-task model, precision. Knows no config
    # file and no data format (heads take a task's settings as given)
    ["modeling"],
    # what an input is (Example, with the checks on its fields), the torch-free tokenisation both engines
    # share, long texts' windows and multiple-choice rephrasing: the pieces the task types build on
    ["data.example", "data.encoding", "data.multiple_choice", "data.windows"],
    # the config schema and what a saved run's files say; config reads the backbone's own config through
    # modeling.encoder to check it
    ["config", "runfiles", "tasks"],
    # reading files into Examples, tokenising, batches and task schedules
    ["data"],
    # decoding a head's outputs, metrics, scoring
    ["evaluation"],
    # the run directory: saving and loading a trained model, its card
    ["rundir", "modelcard"],
    # the training recipe, checkpoints, loggers
    ["training"],
    # predictors (torch and ONNX), export, the HTTP server
    ["inference"],
    # DeepPavlov configs and outputs
    ["compat"],
    # the entry points: the Python API, the command line, and `mtbert compare`, an application of training,
    # inference (its speed column) and evaluation
    ["api", "cli", "__main__", "training.compare"],
]

# (importer, imported) pairs that go upward today, each with why: the model card asks hf_export (at call
# time) which transformers class loads a task type, to name it in the card's usage snippet.
KNOWN_UPWARD_IMPORTS = {
    ("modelcard", "inference.hf_export"),
}

MAX_FUNCTION_LINES = 80
# functions over the limit today, in files another change of issue 16 rewrites (the inference road)
KNOWN_LONG_FUNCTIONS: set[str] = set()

MIN_REPEAT = 6
KNOWN_REPEATS: set[tuple[str, str]] = set()  # (module, module) pairs


def _modules(package: Path = PACKAGE) -> dict[str, Path]:
    out = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name or "mtbert"] = path
    return out


def _layer(module: str) -> int:
    best, rank = -1, None
    for i, names in enumerate(LAYERS):
        for prefix in names:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), i
    assert rank is not None, f"{module}: in no layer; add it to LAYERS in {__file__}"
    return rank


def _imports(path: Path) -> set[str]:
    """The mtbert modules `path` imports, relative to the package ("data.features"; "mtbert" itself)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else \
            [a.name for a in node.names] if isinstance(node, ast.Import) else []
        for name in names:
            if name == "mtbert":
                found.add("mtbert")
            elif name.startswith("mtbert."):
                found.add(name.removeprefix("mtbert."))
    return found


def test_layers_are_the_documented_order():
    """The names in LAYERS exist, so the order cannot silently describe modules that are gone."""
    modules = _modules()
    for names in LAYERS:
        for prefix in names:
            assert any(m == prefix or m.startswith(prefix + ".") for m in modules), prefix


def test_no_import_goes_to_a_higher_layer():
    upward = set()
    for module, path in _modules().items():
        for imported in _imports(path):
            if _layer(imported) > _layer(module):
                upward.add((module, imported))
    new = sorted(upward - KNOWN_UPWARD_IMPORTS)
    assert not new, "imports from a lower layer to a higher one (see LAYERS): " + \
        ", ".join(f"{a} -> {b}" for a, b in new)
    assert not KNOWN_UPWARD_IMPORTS - upward, f"no longer upward, drop from the known list: " \
                                              f"{sorted(KNOWN_UPWARD_IMPORTS - upward)}"


def _functions(tree: ast.AST, prefix: str = ""):
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield f"{prefix}{node.name}", node
            yield from _functions(node, f"{prefix}{node.name}.")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, f"{prefix}{node.name}.")


def test_no_function_is_longer_than_the_limit():
    long = {}
    for module, path in _modules().items():
        for name, node in _functions(ast.parse(path.read_text(encoding="utf-8"))):
            lines = node.end_lineno - node.lineno + 1
            if lines > MAX_FUNCTION_LINES:
                long[f"{module}.{name}"] = lines
    new = {k: v for k, v in long.items() if k not in KNOWN_LONG_FUNCTIONS}
    assert not new, f"functions over {MAX_FUNCTION_LINES} lines: " + \
        ", ".join(f"{k} ({v})" for k, v in sorted(new.items()))
    assert not KNOWN_LONG_FUNCTIONS - set(long), f"no longer long, drop from the known list: " \
                                                 f"{sorted(KNOWN_LONG_FUNCTIONS - set(long))}"


_TRIVIAL = re.compile(r"[\W_]*(\w+[\W_]*)?")  # at most one word: `else:`, `)`, `return`, `"""`, `],`


def _kept_lines(path: Path) -> list[tuple[int, str]]:
    """(line number, text with white space folded) of the lines that say something: not blank, not a
    comment, not an import, not a lone word or bracket."""
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        text = " ".join(line.split())
        if not text or text.startswith("#") or text.startswith(("import ", "from ")) or _TRIVIAL.fullmatch(text):
            continue
        out.append((number, text))
    return out


def repeated_blocks(package: Path = PACKAGE, min_lines: int = MIN_REPEAT) -> dict[tuple[str, str], tuple[int, int]]:
    """{(module, module): (first line in one, first line in the other)} for every pair of places that
    share `min_lines` consecutive kept lines."""
    seen: dict[tuple[str, ...], tuple[str, int]] = {}
    pairs = {}
    for module, path in _modules(package).items():
        lines = _kept_lines(path)
        for i in range(len(lines) - min_lines + 1):
            window = tuple(text for _, text in lines[i:i + min_lines])
            here = (module, lines[i][0])
            if window in seen:
                there = seen[window]
                # overlapping windows inside one file are one run seen twice, not a repeat
                if there[0] != module or here[1] - there[1] >= min_lines:
                    pairs.setdefault(tuple(sorted((there[0], module))), (there[1], here[1]))
            else:
                seen[window] = here
    return pairs


def test_no_block_of_lines_is_repeated():
    pairs = repeated_blocks()
    new = {k: v for k, v in pairs.items() if k not in KNOWN_REPEATS}
    assert not new, f"blocks of {MIN_REPEAT}+ identical lines in two places (module:line): " + \
        ", ".join(f"{a}:{la} ~ {b}:{lb}" for (a, b), (la, lb) in sorted(new.items()))
    assert not KNOWN_REPEATS - set(pairs), f"no longer repeated: {sorted(KNOWN_REPEATS - set(pairs))}"


def test_the_repeat_check_finds_a_planted_repeat(tmp_path):
    """The check itself can fail: a block copied into a second module is found (and one copy is not)."""
    block = "\n".join(f"    value_{i} = compute(value_{i - 1}, {i})" for i in range(1, 8))
    (tmp_path / "a.py").write_text(f"def f():\n{block}\n")
    assert repeated_blocks(tmp_path) == {}
    (tmp_path / "b.py").write_text(f"x = 1\n\n\ndef g():\n{block}\n")
    assert repeated_blocks(tmp_path) == {("a", "b"): (2, 5)}
