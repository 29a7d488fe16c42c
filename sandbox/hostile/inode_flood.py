# category: disk
# expect: passed
# limits: timeout_s=20 cpu_s=10
# A flood of empty files: no size limit counts them, each costs kernel memory (an inode).

made = 0
try:
    for made in range(1_000_000):
        open(f"/tmp/f{made}", "w").close()
except OSError as exc:
    print("stopped after", made, "files:", exc.strerror)
if made >= 100_000:
    print(f"ESCAPED: made {made} files")
