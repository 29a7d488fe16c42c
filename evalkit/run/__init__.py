"""A run: one checkpoint x one task x one generation config, written to a run folder.

``format`` holds the pydantic models of the run-folder files (the only code that reads or writes
them), ``store`` resume and the generation cache, ``plans`` one plan per request kind,
``runner`` the loop that executes a task, ``judge`` the second-model grading pass.
"""
