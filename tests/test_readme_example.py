"""The README's "Add a baseline" example really works and passes the conformance check."""

import re
from pathlib import Path

from gapbench.testing import check_method

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_method_conforms():
    text = README.read_text()
    section = text.split("## Add a baseline", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(code.strip().splitlines()) <= 30
    namespace: dict = {}
    exec(compile(code, "README example", "exec"), namespace)
    report = check_method("late_snip", {"at": 0.5})
    assert report.final_counts == report.target_counts
