"""evalkit: what did this fine-tune change?"""

__version__ = "0.1.0"
