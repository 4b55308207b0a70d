"""The options reference, generated from the declared options so that it cannot drift from the code.

An MkDocs hook (mkdocs.yml `hooks:`): `on_page_markdown` replaces the marker line `<!-- options-reference -->`
of a page with one table per owner (the run, each backend, the task, each steering method), read from
`pytest_steer.spec.declared_options()`, the list the plugin adds to `pytest --help`, the ini file and the
marker. `tests/test_docs.py` checks that every flag of the help's steer group is in it.
`python docs/gen_options.py` prints it.
"""

from __future__ import annotations

from typing import Any

MARKER = "<!-- options-reference -->"


def _default(option: Any) -> str:
    """The default as the help text shows it; None (unset: the model's or the environment's) as a dash."""
    if option.flag:
        return "off"
    value = option.default
    if value is None or value == ():
        return "–"
    if isinstance(value, tuple):
        value = ",".join(map(str, value))
    return f"`{value}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(options: list[Any]) -> list[str]:
    rows = ["| option | ini key | marker keyword | default | what it sets |", "|---|---|---|---|---|"]
    for o in options:
        cli = f"`{o.cli}`" if o.flag else f"`{o.cli} {o.name.upper()}`"
        marker = f"`{o.name}=`" if o.marker else "–"
        rows.append(f"| {cli} | `{o.ini}` | {marker} | {_default(o)} | {_cell(o.help)} |")
    return rows


def options_markdown() -> str:
    """Every declared option, grouped by who declares it: the run, each backend, the task(s), each method."""
    from pytest_steer.backends import backend_entry, backend_names
    from pytest_steer.methods import method_entry, method_names
    from pytest_steer.spec import MARKER_ONLY, declared_options
    from pytest_steer.tasks import task_options

    declared = declared_options()
    by_method = {name: {o.name for o in (method_entry(name).grid, *method_entry(name).options)}
                 for name in method_names()}
    by_backend = {name: {o.name for o in backend_entry(name).options} for name in backend_names()}
    tasks = {o.name for o in task_options()}
    owned = set(tasks).union(*by_method.values(), *by_backend.values())
    groups: list[tuple[str, str, list[Any]]] = [
        ("The run's options", "model, generation, scoring, report, cache, baselines, which backend generates",
         [o for o in declared if o.name not in owned]),
    ]
    for name, names in by_backend.items():
        groups.append((f"Backend `{name}`", "its own settings, read when it generates the rows",
                       [o for o in declared if o.name in names]))
    groups += [
        ("The task's options", "declared by the built-in IFEval task; a task of your own adds its own",
         [o for o in declared if o.name in tasks]),
    ]
    for name, names in by_method.items():
        groups.append((f"Method `{name}`", "its grid option first, then its settings",
                       [o for o in declared if o.name in names]))
    out = [f"{len(declared)} options, generated from `pytest_steer.spec.declared_options()` when the docs are "
           "built. A `--steer-*` flag without a value is a switch; `marker keyword` says whether "
           "`@pytest.mark.steer(...)` takes it.", ""]
    for title, why, options in groups:
        if options:
            out += [f"### {title}", "", f"{why[0].upper()}{why[1:]}.", "", *_table(options), ""]
    out += ["### Marker-only keywords", "", "Keywords of `@pytest.mark.steer(...)` with no command-line or ini form: "
            + ", ".join(f"`{name}=`" for name in MARKER_ONLY) + ".", ""]
    return "\n".join(out) + "\n"


def on_page_markdown(markdown: str, **_: Any) -> str:
    """MkDocs hook: fill the marker line of the page that has one."""
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, options_markdown())


if __name__ == "__main__":
    print(options_markdown())
