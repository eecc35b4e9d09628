"""The batched, pipelined path from photos to coefficients and meshes.

- `Reconstructor` (engine.pipeline.reconstructor): the high-level API.
- `FaceResult` (engine.pipeline.results): one face, or one failed input.
- engine.pipeline.inputs: inputs to work items, work items to crops.
- engine.pipeline.stages: the threads and bounded queues.
"""
from engine.pipeline.reconstructor import Reconstructor
from engine.pipeline.results import FaceResult

__all__ = ["FaceResult", "Reconstructor"]
