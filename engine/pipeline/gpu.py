"""The GPU side of the pipeline: network -> decode on the runner's stream, copy back overlapped.

    runner stream:  [H2D crops i][network i][decode i] [H2D i+1][network i+1][decode i+1] ...
    copy stream:                                 [D2H coeffs + records i]        [D2H i+1] ...
    caller thread:                                          wait for copy i -> results i

Coefficients go from the runner's output straight into the decode kernel, on the same
stream, without a host round trip. Only what is written comes back: the coefficients and
the PLY vertex records (15 bytes per vertex; vertices and colours are views into them).
The copy back runs on a stream of its own into pinned memory, so it overlaps the network
of the next batch instead of sitting in the runner's stream, and the network thread never
waits for it: the caller's thread waits for the copy's event.

Non-finite coefficients: the decode kernel's finiteness check would synchronise the stream
every batch and raise for the whole batch, so it is off here; instead a per-row flag
(torch.isfinite(coeffs).all(dim=1)) is computed on the stream and copied back with the
coefficients (no extra synchronisation), and a flagged row becomes that face's error
result, as on the CPU (its NaN vertices are never exposed).
"""
from __future__ import annotations

from engine.mesh_io import VERTEX_DTYPE
from engine.pipeline.results import HostDecoded, record_views


class GpuStage:
    def __init__(self, runner, decoder):
        import torch

        self.runner = runner
        self.decoder = decoder
        self.copy_stream = torch.cuda.Stream(device=runner.stream.device)

    def run(self, batch, decode: bool, crops=None):
        """Network thread: queue network, decode and the copy back; do not wait for them.
        crops: the network input when not batch.crops (a device buffer of the device input)."""
        import torch

        n = batch.n
        stream = self.runner.stream
        with torch.cuda.stream(stream):
            coeffs = self.runner.run_device(batch.crops[:n] if crops is None else crops)
            records = None
            if decode:
                records = self.decoder.decode(coeffs, outputs=("records",), stream=stream,
                                              check_finite=False).records
            finite = torch.isfinite(coeffs).all(dim=1)
            computed = torch.cuda.Event()
            computed.record(stream)
        self.copy_stream.wait_event(computed)
        with torch.cuda.stream(self.copy_stream):
            c_host = torch.empty(tuple(coeffs.shape), dtype=coeffs.dtype, pin_memory=True)
            c_host.copy_(coeffs, non_blocking=True)
            f_host = torch.empty(tuple(finite.shape), dtype=finite.dtype, pin_memory=True)
            f_host.copy_(finite, non_blocking=True)
            finite.record_stream(self.copy_stream)
            # the caching allocator must not hand these buffers out again before the copy ends
            coeffs.record_stream(self.copy_stream)
            r_host = None
            if records is not None:
                r_host = torch.empty(tuple(records.shape), dtype=records.dtype, pin_memory=True)
                r_host.copy_(records, non_blocking=True)
                records.record_stream(self.copy_stream)
            copied = torch.cuda.Event()
            copied.record(self.copy_stream)
        batch.pending = (copied, c_host, f_host, r_host)
        return batch

    def finish(self, batch):
        """Caller's thread: wait for the copy back, expose the host arrays (no copy)."""
        pending = getattr(batch, "pending", None)
        if pending is None:
            return batch
        copied, c_host, f_host, r_host = pending
        copied.synchronize()
        batch.coeffs = c_host.numpy()
        batch.finite = f_host.numpy()
        if r_host is not None:
            rec = r_host.numpy().view(VERTEX_DTYPE).reshape(batch.n, self.decoder.num_vertices)
            v, c = record_views(rec)
            batch.decoded = HostDecoded(v, c, rec, self.decoder.faces)
        batch.pending = None
        return batch
