"""Build the API reference from the docstrings with pdoc (`make docs`), the examples linked from it.

    python docs/api.py [--out build/docs]

pdoc is the `docs` extra (`pip install -e '.[docs]'`), never a runtime dependency. Every module page
lists the runnable examples (examples/*.py) in its sidebar; each is rendered next to the reference as
a highlighted page under examples/.
"""

from __future__ import annotations

import argparse
import ast
import html
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = Path(__file__).resolve().parent / "pdoc"
EXAMPLES = ROOT / "examples"


def examples() -> list[tuple[str, str]]:
    """(file name, first docstring line) of each example, in name order."""
    out = []
    for path in sorted(EXAMPLES.glob("*.py")):
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        out.append((path.name, doc.splitlines()[0] if doc else ""))
    return out


def example_page(path: Path) -> str:
    """One example as a standalone HTML page: its source, as run by tests/test_examples.py."""
    name = html.escape(path.name)
    return (
        f"<!doctype html>\n<html><head><meta charset='utf-8'><title>vmmio example: {name}</title>"
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
        "pre{background:#f6f8fa;padding:1em;overflow-x:auto}</style></head>\n"
        f"<body><p><a href='../vmmio.html'>vmmio API reference</a></p><h1>{name}</h1>\n"
        f"<pre><code>{html.escape(path.read_text())}</code></pre></body></html>\n"
    )


def modules() -> list[str]:
    """vmmio and every submodule but the `__main__` ones (importing those would run them)."""
    import pkgutil

    import vmmio

    names = [m.name for m in pkgutil.walk_packages(vmmio.__path__, "vmmio.")]
    return ["vmmio", *sorted(n for n in names if not n.endswith("__main__"))]


def build(out: Path, names: list[str] | None = None) -> list[Path]:
    """Write the reference (of `names`, default all modules) and the example pages to `out`; the
    pages written. pdoc's warnings about annotations it cannot evaluate are left out."""
    import pdoc
    import pdoc.render

    warnings.filterwarnings("ignore", category=UserWarning, module=r"pdoc\.")
    pdoc.render.configure(template_directory=TEMPLATES, docformat="markdown", search=False)
    pdoc.render.env.globals["examples"] = examples()
    pdoc.pdoc(*(names or modules()), output_directory=out)
    (out / "examples").mkdir(parents=True, exist_ok=True)
    for name, _ in examples():
        (out / "examples" / f"{name}.html").write_text(example_page(EXAMPLES / name))
    return sorted(out.rglob("*.html"))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "docs")
    args = parser.parse_args()
    try:
        import pdoc  # noqa: F401
    except ImportError:
        print("api.py: the API reference needs pdoc: pip install -e '.[docs]'", file=sys.stderr)
        return 2
    pages = build(args.out)
    print(f"api.py: {len(pages)} pages in {args.out} (start at {args.out / 'index.html'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
