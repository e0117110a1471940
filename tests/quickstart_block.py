"""Run the README's quickstart block as a user would (used by .ci/package_checks.sh on
the installed wheel): `python tests/quickstart_block.py README.md`."""

import os
import re
import sys
import tempfile

if __name__ == "__main__":
    text = open(sys.argv[1], encoding="utf-8").read()
    section = text.split("## Quickstart", 1)[1]
    block = re.search(r"```python[^\n]*\n(.*?)```", section, re.S).group(1)
    os.chdir(tempfile.mkdtemp())
    exec(compile(block, "README quickstart", "exec"), {"__name__": "__main__"})
    print("quickstart ran")
