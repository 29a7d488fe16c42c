# category: disk
# expect: failed
# One 1 GiB file (sparse, then dense): the file-size limit must refuse it.
with open("huge.bin", "wb") as f:
    f.seek(1 << 30)
    f.write(b"x")
print("ESCAPED: wrote past 1 GiB")
