"""``orgdir new-consumer NAME``: a vendor's consumer project rendered from ``templates/consumer/``.

The template is plain files with three placeholders, ``{{name}}`` (the
service and queue name, e.g. ``vendor-ad``), ``{{package}}`` (its Python
package, ``vendor_ad``) and ``{{title}}``; a directory called ``__package__``
is renamed to the package. No template engine: nothing in the files is
logic, so a vendor reads them exactly as they will be.
"""

from __future__ import annotations

import re
from pathlib import Path

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
RESERVED = {"orgunits", "registry", "access-rights", "notifier", "orgdir", "importer", "portal"}


class TemplateError(ValueError):
    """The name or target cannot be used."""


def placeholders(name: str) -> dict[str, str]:
    if not NAME.match(name) or len(name) > 40:
        raise TemplateError(f"{name!r}: use lower-case letters, digits and single hyphens (e.g. vendor-ad)")
    if name in RESERVED:
        raise TemplateError(f"{name!r} is the name of an Orgdir service")
    return {
        "{{name}}": name,
        "{{package}}": name.replace("-", "_"),
        "{{title}}": " ".join(part.capitalize() for part in name.split("-")),
    }


def render(template: str, name: str, target: Path) -> list[Path]:
    """Write ``templates/<template>`` into ``target`` (which must not exist or be empty); the files written."""
    source = TEMPLATES / template
    if not source.is_dir():
        raise TemplateError(f"no template {template!r} under {TEMPLATES}")
    values = placeholders(name)
    if target.exists() and any(target.iterdir()):
        raise TemplateError(f"{target} exists and is not empty")
    written = []
    for path in sorted(source.rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts or path.suffix == ".pyc":
            continue
        relative = path.relative_to(source).as_posix().replace("__package__", values["{{package}}"])
        out = target / relative
        out.parent.mkdir(parents=True, exist_ok=True)
        text = path.read_text(encoding="utf-8")
        for key, value in values.items():
            text = text.replace(key, value)
        out.write_text(text, encoding="utf-8")
        written.append(out)
    return written


def new_consumer(name: str, directory: str | None) -> int:
    target = Path(directory) if directory else Path.cwd() / name
    files = render("consumer", name, target)
    print(f"wrote {len(files)} files to {target}")
    print(f"next: cd {target} && pytest   (then see README.md)")
    return 0
