"""Code blocks of the docs, so tests run the documented examples exactly as written."""
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def customize_blocks(title):
    """The ```python blocks of the '## <title>' section of docs/customize.md, in order."""
    with open(os.path.join(ROOT, 'docs', 'customize.md'), encoding='utf-8') as f:
        text = f.read()
    sections = {m.group(1): m.group(2) for m in re.finditer(r'^## (.+?)\n(.*?)(?=^## |\Z)', text, re.S | re.M)}
    if title not in sections:
        raise KeyError(f'docs/customize.md has no section "## {title}"; sections: {sorted(sections)}')
    return re.findall(r'```python\n(.*?)```', sections[title], re.S)
