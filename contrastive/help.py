"""The `--help` pages' lists (conf/hydra/help/*.yaml): an entry point's config groups with their options and the
comment of its defaults line, and the ready sweeps. Read from the files, so the pages never go stale.

Registered as the OmegaConf resolver `contrastive_help` (contrastive/__init__.py): `${contrastive_help:groups,train}`,
`${contrastive_help:sweeps}`. Hydra fills the page with string.Template, so a `$` in a comment is doubled.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

from contrastive import CONF_DIR, PROJECT_ROOT

DEFAULTS_LINE = re.compile(r"^\s*-\s*(\w+):\s*(\w+)\s*(?:#\s*(.*))?$")  # `  - model: minilm   # which encoder`


def group_lines(config_name: str) -> list[str]:
    """`group  option, default*, ...  the defaults line's comment` for each group in conf/<config_name>.yaml."""
    rows = []
    for line in (CONF_DIR / f"{config_name}.yaml").read_text().splitlines():
        match = DEFAULTS_LINE.match(line)
        if match and (CONF_DIR / match[1]).is_dir():
            group, chosen, comment = match[1], match[2], match[3] or ""
            options = [p.stem + ("*" if p.stem == chosen else "") for p in sorted((CONF_DIR / group).glob("*.yaml"))]
            rows.append((group, ", ".join(options), comment))
    width = [max((len(r[i]) for r in rows), default=0) for i in range(2)]
    return [f"  {g:<{width[0]}}  {o:<{width[1]}}  {c}".rstrip() for g, o, c in rows]


def sweep_lines(sweeps_dir: Path = PROJECT_ROOT / "sweeps") -> list[str]:
    """`+sweeps=NAME  the first sentence of its comment` for each sweeps/NAME.yaml."""
    rows = []
    for path in sorted(sweeps_dir.glob("*.yaml")):
        rows.append((f"+sweeps={path.stem}", first_sentence(path.read_text())))
    width = max((len(r[0]) for r in rows), default=0)
    return [f"  {name:<{width}}  {about}".rstrip() for name, about in rows]


def first_sentence(text: str, width: int = 110) -> str:
    """The first sentence of a YAML file's leading comment (after `# @package`), at most `width` characters."""
    words = []
    for line in text.splitlines():
        comment = line[1:].strip() if line.startswith("#") else None
        if comment is None or comment.startswith("python") or (words and not comment):
            break
        if not comment.startswith("@package"):
            words.append(comment)
    sentence = re.split(r"(?<=\.)\s", " ".join(words), maxsplit=1)[0].rstrip(".:")
    return textwrap.shorten(sentence, width, placeholder=" ...")


def resolve(kind: str, config_name: str = "train") -> str:
    """The text of one list (`groups` of an entry point's config, or `sweeps`), `$` doubled for string.Template."""
    lines = group_lines(config_name) if kind == "groups" else sweep_lines()
    return "\n".join(lines).replace("$", "$$")
