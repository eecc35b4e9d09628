"""Work spread over a Ray cluster (optional extra `serve`: Ray is imported lazily, inside functions).

- `embed` (engine.distributed.embed): `Reconstructor.embed` as a Ray Data job, an actor pool of
  Reconstructors; `engine3dmm embed --ray` writes its results into the same output folder as
  the single-process command.
"""
from engine.distributed.embed import embed

__all__ = ["embed"]
