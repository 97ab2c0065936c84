"""Print the shell block that follows `<!-- ci:NAME -->` in README.md, so CI runs exactly what the README says"""
import re, sys
from pathlib import Path

name = sys.argv[1]
text = Path(__file__).resolve().parent.parent.joinpath('README.md').read_text()
m = re.search(rf'<!-- ci:{re.escape(name)} -->\s*```(?:sh|bash)\n(.*?)```', text, re.S)
if not m: sys.exit(f"README.md has no `<!-- ci:{name} -->` shell block")
print(m.group(1).strip())
