# category: forgery
# expect: tampered
# Raises the audit event the runner's pass signal goes through, from its own frame and from
# the runner's, then leaves before its tests.
import os
import sys

sys.audit("evalkit.finish", sys._getframe())
frame = sys._getframe(0).f_back
sys.audit("evalkit.finish", frame)
os._exit(0)
