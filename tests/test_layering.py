"""Three layers that only depend downward (issue 37), read from the source (ast; nothing is
imported): a core of pure functions a researcher composes, a run layer that plans and drives a
stylization, and an app layer of files, locks, signals, progress, reports, the command line and
the studio. Every module is placed by hand in `LAYERS`; a new module fails until it is placed,
and the module map in docs/development.md says the same. Only the app layer knows that flags
exist."""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "jaxstyle"
DEVELOPMENT = ROOT / "docs" / "development.md"

CORE, RUN, APP = "core", "run", "app"
ORDER = {CORE: 0, RUN: 1, APP: 2}

LAYERS = {
    # core: pure functions of arrays and configs; no files, no flags.
    "jaxstyle": CORE,  # the version, and the public names loaded from their modules on first use
    "jaxstyle.choices": CORE,
    "jaxstyle.errors": CORE,
    "jaxstyle.cpu_pool": CORE,
    "jaxstyle.preprocessing": CORE,
    "jaxstyle.winograd": CORE,
    "jaxstyle.vgg_layers": CORE,
    "jaxstyle.vgg": CORE,
    "jaxstyle.resampling": CORE,
    "jaxstyle.style_losses": CORE,
    "jaxstyle.losses": CORE,
    "jaxstyle.targets": CORE,
    "jaxstyle.terms": CORE,
    "jaxstyle.neighbours": CORE,
    "jaxstyle.neighbour_layers": CORE,
    "jaxstyle.tiling": CORE,
    "jaxstyle.color": CORE,
    "jaxstyle.pyramid": CORE,
    "jaxstyle.temporal": CORE,
    "jaxstyle.linesearch": CORE,
    "jaxstyle.lbfgs": CORE,
    "jaxstyle.steps": CORE,
    "jaxstyle.compiled": CORE,
    "jaxstyle.optimize": CORE,
    # run: a stylization planned and driven, from arrays to arrays.
    "jaxstyle.presets": RUN,
    "jaxstyle.option_fields": RUN,
    "jaxstyle.option_groups": RUN,
    "jaxstyle.options": RUN,
    "jaxstyle.stages": RUN,
    "jaxstyle.checks": RUN,
    "jaxstyle.problem": RUN,
    "jaxstyle.plan_memory": RUN,
    "jaxstyle.run_state": RUN,
    "jaxstyle.layouts": RUN,
    "jaxstyle.stage_run": RUN,
    "jaxstyle.ahead": RUN,
    "jaxstyle.driver": RUN,
    "jaxstyle.quality": RUN,
    # app: files, locks, signals, progress, reports, the command line and the studio.
    "jaxstyle.files": APP,
    "jaxstyle.images": APP,
    "jaxstyle.unpickler": APP,
    "jaxstyle.pickled_arrays": APP,
    "jaxstyle.pth": APP,
    "jaxstyle.vgg_formats": APP,
    "jaxstyle.sources": APP,
    "jaxstyle.onnx_vgg": APP,
    "jaxstyle.weights": APP,
    "jaxstyle.download": APP,
    "jaxstyle.compilation_cache": APP,
    "jaxstyle.checkpoint": APP,
    "jaxstyle.inputs": APP,
    "jaxstyle.outputs": APP,
    "jaxstyle.locks": APP,
    "jaxstyle.reports": APP,
    "jaxstyle.pipeline": APP,
    "jaxstyle.terminal": APP,
    "jaxstyle.stylize_command": APP,
    "jaxstyle.batch": APP,
    "jaxstyle.sweeps": APP,
    "jaxstyle.frames": APP,
    "jaxstyle.video": APP,
    "jaxstyle.info": APP,
    "jaxstyle.flags": APP,
    "jaxstyle.cli": APP,
    "jaxstyle.__main__": APP,
    "jaxstyle.studio": APP,
    "jaxstyle.studio.form": APP,
    "jaxstyle.studio.guard": APP,
    "jaxstyle.studio.limits": APP,
    "jaxstyle.studio.store": APP,
    "jaxstyle.studio.jobs": APP,
    "jaxstyle.studio.allocator": APP,
    "jaxstyle.studio.requests": APP,
    "jaxstyle.studio.transport": APP,
    "jaxstyle.studio.commands": APP,
    "jaxstyle.studio.worker": APP,
    "jaxstyle.studio.server": APP,
    "jaxstyle.studio.handlers": APP,
}
"""Each module of the package and its layer: a module may import its own layer's modules and
those below it, never one above."""

FLAGS_NOT_YET_OUT: set[str] = set()
"""Core and run modules still allowed to mention a flag in a string."""

FLAG = re.compile(r"(?<![\w-])--[a-z]")


def module_files() -> dict[str, Path]:
    """Every module of the package by its dotted name."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def imported(name: str, path: Path, modules: set[str]) -> set[str]:
    """The package's modules that `name` imports, at the top or inside a function (a lazy
    import is a dependency too); ``from jaxstyle import x`` is module ``jaxstyle.x`` when that
    is one, else the package itself."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module
            for alias in node.names:
                found.add(f"{source}.{alias.name}" if f"{source}.{alias.name}" in modules
                          else source)
    return {m for m in found if m in modules and m != name}


def dependencies() -> dict[str, set[str]]:
    files = module_files()
    return {name: imported(name, path, set(files)) for name, path in files.items()}


def test_every_module_is_placed_in_a_layer():
    """A new module (the optimizer's parts, a split module's pieces) must be placed here and in
    the module map before anything else can be said about it."""
    files = set(module_files())
    assert files - set(LAYERS) == set(), "place these modules in LAYERS and the module map"
    assert set(LAYERS) - files == set(), "these modules no longer exist"


def test_imports_only_run_downward():
    upward = [f"{name} ({LAYERS[name]}) imports {dep} ({LAYERS[dep]})"
              for name, deps in dependencies().items() if name in LAYERS
              for dep in sorted(deps) if dep in LAYERS and ORDER[LAYERS[dep]] > ORDER[LAYERS[name]]]
    assert not upward, "\n".join(upward)


def test_the_import_graph_has_no_cycle():
    graph = dependencies()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> list[str] | None:
        state[name] = 1
        for dep in sorted(graph[name]):
            if state.get(dep) == 1:
                return [*path, name, dep]
            if dep not in state and (cycle := visit(dep, [*path, name])):
                return cycle
        state[name] = 2
        return None

    for name in sorted(graph):
        if name not in state:
            cycle = visit(name, [])
            assert cycle is None, " -> ".join(cycle)


def flag_mentions(path: Path) -> list[tuple[int, str]]:
    """(line, text) of each line of a string (docstrings included) that names a ``--flag``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found += [(node.lineno, line.strip()[:100])
                      for line in node.value.splitlines() if FLAG.search(line)]
    return found


def test_only_the_app_layer_mentions_flags():
    """Library messages name an option by its field (``tile_size``) and carry it
    (`JaxstyleError.options`); the command line words it as a flag (`jaxstyle.messages`)."""
    files = module_files()
    found = [f"{files[name].relative_to(ROOT)}:{line}: {text}"
             for name, layer in LAYERS.items()
             if layer != APP and name in files and name not in FLAGS_NOT_YET_OUT
             for line, text in flag_mentions(files[name])]
    assert not found, "\n".join(found)


def test_the_flag_check_sees_a_flag(tmp_path):
    """The check above, shown to fail: a docstring and a message that name a flag (a comment
    is not a string)."""
    module = tmp_path / "m.py"
    module.write_text('"""Set by --size."""\nraise ValueError("use --tile-size 48")\n'
                      'x = "a well-known term"  # --not-a-string\n')
    assert flag_mentions(module) == [(1, "Set by --size."), (2, "use --tile-size 48")]


def module_map() -> dict[str, str]:
    """The module map of docs/development.md: each ``- `jaxstyle.x`: ...`` line under the
    headings "Core", "Run" and "App" of its section "Module map"."""
    text = DEVELOPMENT.read_text()
    section = re.search(r"^## Module map\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert section, "docs/development.md has no section '## Module map'"
    found, layer = {}, None
    for line in section.group(1).splitlines():
        heading = re.match(r"^### (Core|Run|App)\b", line)
        if heading:
            layer = heading.group(1).lower()
        elif entry := re.match(r"^- `(jaxstyle[\w.]*)`", line):
            assert layer, f"{entry.group(1)} is listed before the first layer's heading"
            assert entry.group(1) not in found, f"{entry.group(1)} is listed twice"
            found[entry.group(1)] = layer
    return found


def test_the_development_docs_module_map_matches_the_layers():
    documented = module_map()
    wrong = {name: (documented.get(name), layer) for name, layer in LAYERS.items()
             if documented.get(name) != layer}
    extra = set(documented) - set(LAYERS)
    assert not wrong and not extra, (
        f"docs/development.md (documented, here): {wrong}; documented but not here: {extra}")


@pytest.mark.parametrize("message, options, typed", [
    ("size: the output of 8x6 px is too small; use size=21 or more", ("size",),
     "--size: the output of 8x6 px is too small; use --size 21 or more"),
    ("tile_size: tile 1 of 20x20 px; use tile_size=48 or more", ("tile_size",),
     "--tile-size: tile 1 of 20x20 px; use --tile-size 48 or more"),
    ("style_scale: style image 2 of 9x9 px; use a larger style_scale", ("style_scale",),
     "--style-scale: style image 2 of 9x9 px; use a larger --style-scale"),
    ("style_weight: must be in [0, 1e+12] (got -1.0)", (),
     "--style-weight: must be in [0, 1e+12] (got -1.0)"),
    ("scales: at scales=32768, the largest, a style_scales entry", ("scales",),
     "--scales: at --scales 32768, the largest, a style_scales entry"),
    ("needs 2 GiB (optimizer state 1 GiB): a shorter lbfgs_history, or optimizer=adam",
     ("lbfgs_history", "optimizer"),
     "needs 2 GiB (optimizer state 1 GiB): a shorter --lbfgs-history, or --optimizer adam"),
])
def test_the_command_line_words_the_options_an_error_names_as_flags(message, options, typed):
    from jaxstyle.errors import JaxstyleError
    from jaxstyle.flags import error_line

    error = JaxstyleError(message, options=options)
    assert error_line(error) == typed
    assert str(error) == message  # the library's own message names no flag


def test_a_library_error_names_the_option_and_the_command_line_its_flag():
    """What `jaxstyle stylize --size 8` prints (tests/test_cli.py), from an error whose own
    message names the Python option."""
    from jaxstyle import StyleOptions
    from jaxstyle.checks import check_inputs
    from jaxstyle.errors import JaxstyleError
    from jaxstyle.flags import error_line

    with pytest.raises(JaxstyleError) as caught:
        check_inputs((300, 400, 3), [(300, 400, 3)], StyleOptions(size=8))
    assert caught.value.options == ("size",)
    assert str(caught.value).startswith("size: the output of 8x6 px is too small")
    assert str(caught.value).endswith("; use size=21 or more")
    assert error_line(caught.value).startswith("--size: the output of 8x6 px is too small")
    assert error_line(caught.value).endswith("; use --size 21 or more")
