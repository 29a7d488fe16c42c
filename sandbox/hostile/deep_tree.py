# category: disk
# expect: passed
# Leaves a directory tree deeper than PATH_MAX (4096) in /tmp and /dev/shm: the cleanup must
# still remove it, and the next program must not notice.
import os

for top in ("/tmp", "/dev/shm"):
    os.chdir(top)
    for _ in range(40):
        os.mkdir("d" * 200)
        os.chdir("d" * 200)
    open("leaf", "w").close()
    os.chmod(".", 0o500)  # a read-only leaf directory, to make the cleanup work for it
print("left a tree", 40 * 201, "characters deep")
