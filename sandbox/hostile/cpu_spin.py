# category: cpu
# expect: timeout
# A busy loop: the CPU-time limit (SIGXCPU) must end it.
while True:
    pass
