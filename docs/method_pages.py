"""Write each recipe table (configs/recipes/<method>.yaml) into docs/methods/<method>.md.

    python docs/recipe_tables.py          # rewrite the tables in place
    python docs/recipe_tables.py --check  # exit 1 when a page's table is out of date

The table sits between zsbench.recipes' markers; a page without them gets it appended under
a "## Paper recipe" heading. The page is docs/methods/<method>.md, or the recipe's `docs`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from zsbench.recipes import TABLE_END, docs_page, recipe_files, render_table

DOCS = Path(__file__).resolve().parent / "methods"


def updated_page(text: str, table: str) -> str:
    begin = table.splitlines()[0]
    if begin in text and TABLE_END in text:
        head, rest = text.split(begin, 1)
        return head + table + rest.split(TABLE_END, 1)[1]
    return text.rstrip("\n") + "\n\n## Paper recipe\n\n" + table + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="report stale tables, write nothing")
    args = p.parse_args(argv)
    stale = []
    for path in recipe_files().values():
        page = DOCS / docs_page(path)
        text = page.read_text()
        new = updated_page(text, render_table(path))
        if new != text:
            stale.append(page.name)
            if not args.check:
                page.write_text(new)
    if args.check and stale:
        print(f"out of date: {', '.join(stale)}; run python docs/recipe_tables.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
