# category: secrets
# expect: passed
# Looks for secrets: a host file, ssh keys, /etc/shadow, every environ it can see. It prints
# whatever it finds; the test checks the host's secrets are not in its output.
import glob
import os

paths = ["@CANARY_FILE@", "/etc/shadow", "/root/.ssh/id_rsa", "/root/.bash_history",
         "@PROJECT_DIR@/pyproject.toml", *glob.glob("/proc/*/environ"),
         *glob.glob("/root/.ssh/*"), *glob.glob("/home/*/.ssh/*")]
for path in paths:
    try:
        with open(path, "rb") as f:
            print("read", path, f.read(4096))
    except OSError as exc:
        print("blocked", path, type(exc).__name__)
print("environ", dict(os.environ))
