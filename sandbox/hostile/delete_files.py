# category: filesystem
# expect: passed
# Tries to delete system files, the interpreter and a canary file of the host.
import os
import shutil
import sys

escaped = []
for path in ["/usr/bin/env", sys.executable, "/etc/passwd", "@CANARY_FILE@",
             "@PROJECT_DIR@/pyproject.toml"]:
    try:
        os.remove(path)
        escaped.append(path)
    except OSError as exc:
        print("blocked", path, type(exc).__name__)
for tree in ["/usr/lib", "@PROJECT_DIR@"]:
    try:
        shutil.rmtree(tree)
        escaped.append(tree)
    except OSError as exc:
        print("blocked", tree, type(exc).__name__)
for path in escaped:
    print("ESCAPED: deleted", path)
assert not escaped
