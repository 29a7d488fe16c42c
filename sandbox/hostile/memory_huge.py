# category: memory
# expect: oom
# One 16 GiB allocation.
block = bytearray(16 * 1024**3)
print(len(block))
