# category: filesystem
# expect: passed
# Tries to create or change files outside its scratch space: /etc, /usr, the interpreter, the
# project folder and a canary file of the host.
import sys

targets = ["/etc/evalkit-pwned", "/usr/evalkit-pwned", "/usr/bin/evalkit-pwned", "/bin/sh",
           "/usr/bin/python3", sys.executable, "/root/evalkit-pwned", "/evalkit-pwned",
           "/proc/sys/kernel/hostname", "@PROJECT_DIR@/evalkit-pwned",
           "@PROJECT_DIR@/pyproject.toml", "@CANARY_FILE@"]
escaped = []
for path in targets:
    try:
        with open(path, "a") as f:
            f.write("pwned\n")
        escaped.append(path)
    except OSError as exc:
        print("blocked", path, type(exc).__name__)
for path in escaped:
    print("ESCAPED: wrote", path)
assert not escaped
