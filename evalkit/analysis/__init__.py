"""Weight-space analyzers: spectral summaries of ΔW, intruder dimensions, TuCo, and edits.

Formulas and their test oracles: ``shared/reference/analyzers.md``. Modules:

- ``weights``   stream tensors from safetensors, one at a time; merge LoRA per matrix on the fly
- ``spectral``  singular values, stable/effective/energy rank, principal angles (pure functions)
- ``intruders`` max-|cos| against the base's singular vectors, counts, the ε curve
- ``weightspace`` the per-matrix pass behind ``evalkit analyze`` (base SVD cache, progress)
- ``report``    the JSON summary schema, tables, files; ``plots`` the figures
- ``tuco``      tuning contribution per prompt (forward hooks on the decoder layers)
- ``edit``      intruder scaling, LiNeS, highest-movement graft → new checkpoints
"""
