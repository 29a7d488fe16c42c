"""Scale-out: sharded runs that merge (SLURM arrays, no Ray) and Ray data-parallel engines.

- ``shard``: which items belong to shard i of N (a stable hash of the doc id);
- ``merge``: N finished shard folders -> one run folder, the same as an unsharded run's;
- ``ray_backend``: N engine replicas as Ray actors behind the one ``Backend`` interface;
- ``ray_sandbox``: code execution as Ray tasks on every node's own warm sandbox pool.
"""
