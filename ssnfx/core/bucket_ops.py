"""The autograd function that makes a parameter group's SuperWeight instances, bucket by bucket.

:class:`GenerateBuckets` makes every bucket of instances of one shape from the group's store and
mixing matrix (SSN Eq. 1, SWN Eq. 1), as one matrix product over the window of store blocks the
bucket reads, by gathering its candidates, by upsampling the store's start (SSN Sec. 3.1) or by
resizing its P equal candidates (SSN Sec. 3.2), and its backward fills a single store-sized
gradient in place. The kernels here (block views, the bilinear resize and its separable
backward) serve :class:`~ssnfx.core.generator.GroupGenerator` too, which makes one slot at a time
for the just-in-time mode.
"""
from __future__ import annotations

import contextlib

import torch

__all__ = ["GenerateBuckets", "GATHER", "WINDOW", "UPSAMPLE", "RESIZE", "block_view",
           "lerp_weights", "upsample", "upsample_backward", "resized", "resized_backward",
           "without_autocast"]


def block_view(store: torch.Tensor, m: int) -> torch.Tensor:
    """``store`` viewed as whole blocks of ``m`` parameters (a view, no copy)."""
    n = (store.numel() // m) * m
    # A slice's backward is another store-sized fill and copy: slice only when it must.
    return (store if n == store.numel() else store[:n]).view(-1, m)


def lerp_weights(n_in: int, n_out: int, dtype: torch.dtype = torch.float32
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Linear interpolation from ``n_in`` to ``n_out`` points (align_corners=False): the two
    sources of each output point, ``(2, n_out)``, and their weights, ``(2, n_out, 1)``.

    The weights are PyTorch's own, read off its 1-D kernel with two probes (ones on the even
    sources, then on the odd ones), so that interpolating with them repeats its arithmetic
    (which computes them in float64 for float64 tensors, else in float32).

    Example:
        >>> idx, w = lerp_weights(2, 4)
        >>> idx.tolist(), w.view(2, 4).tolist()
        ([[0, 0, 0, 1], [1, 1, 1, 1]], [[1.0, 0.75, 0.25, 1.0], [0.0, 0.25, 0.75, 0.0]])
    """
    out = torch.arange(n_out, dtype=torch.float32, device="cpu")
    src = ((out + 0.5) * (n_in / n_out) - 0.5).clamp_min(0)
    i0 = src.floor().long().clamp_max(n_in - 1)
    i1 = i0 + (i0 < n_in - 1).long()
    parity = torch.arange(n_in, device="cpu") % 2
    probe = torch.float64 if dtype == torch.float64 else torch.float32
    even, odd = (torch.ops.aten.upsample_linear1d((parity == k).to(probe).view(1, 1, -1),
                                                  [n_out], False).view(-1) for k in (0, 1))
    w0 = torch.where(i0 % 2 == 0, even, odd)
    w1 = torch.where(i0 == i1, 0.0, torch.where(i1 % 2 == 0, even, odd))
    return torch.stack([i0, i1]), torch.stack([w0, w1]).unsqueeze(2)


def upsample(src: torch.Tensor, rows: int, cols: int) -> torch.Tensor:
    """``src`` (r, c) bilinearly upsampled to ``(rows, cols)`` (SSN Sec. 3.1)."""
    r, c = src.shape
    return torch.ops.aten.upsample_bilinear2d(src.reshape(1, 1, r, c), [rows, cols],
                                              False).view(rows, cols)


def upsample_backward(grad: torch.Tensor, idx: torch.Tensor, lam: torch.Tensor, r: int, c: int
                      ) -> torch.Tensor:
    """The gradient of :func:`upsample` with respect to its ``(r, c)`` source, bilinear
    interpolation being separable: two scatters of the rows by the weights of
    :func:`lerp_weights` (``idx``, ``lam``), then PyTorch's 1-D kernel's backward along the
    columns, over ``r`` channels. 2-4 ms for a 1280 x 960 weight on one core, where the bilinear
    kernel's own backward, which runs on one thread for a single channel, took 11 ms."""
    cols = grad.shape[1]
    tmp = grad * lam[0]  # in the weights' precision (float32 for a bfloat16 store)
    rows = tmp.new_zeros(r, cols).index_add_(0, idx[0], tmp)
    rows.index_add_(0, idx[1], torch.mul(grad, lam[1], out=tmp))
    return torch.ops.aten.upsample_linear1d_backward(rows.unsqueeze(0), [cols], [1, r, c],
                                                     False).view(r, c).to(grad.dtype)


def without_autocast(device_type: str) -> contextlib.AbstractContextManager:
    """Autocast switched off where it is on (the meta device has no autocast)."""
    if device_type != "meta" and torch.is_autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


#: How :class:`GenerateBuckets` makes a bucket: by a gather per candidate, by one matrix product
#: over the window of store blocks its instances read, by upsampling the store's start, or by
#: resizing the store's P equal candidates (a group's ``selection="resized"``).
GATHER, WINDOW, UPSAMPLE, RESIZE = 0, 1, 2, 3


def resized(store: torch.Tensor, p: int, r: int, c: int, h: int, w: int) -> torch.Tensor:
    """The store's ``p`` equal, non-overlapping candidates, each viewed as its leading
    ``r x c`` block and bilinearly resized to ``h x w`` (SSN Sec. 3.2): ``(p, h * w)``."""
    chunk = store.numel() // p
    src = store[:p * chunk].view(p, chunk)[:, :r * c].reshape(p, 1, r, c)
    return torch.ops.aten.upsample_bilinear2d(src, [h, w], False).view(p, h * w)


def resized_backward(grad: torch.Tensor, grad_store: torch.Tensor, r: int, c: int, h: int,
                     w: int) -> None:
    """Add the gradient ``grad`` (``(p, h * w)``) of :func:`resized`'s candidates into the
    store's gradient ``grad_store``, in place."""
    p = grad.shape[0]
    chunk = grad_store.numel() // p
    back = torch.ops.aten.upsample_bilinear2d_backward(grad.reshape(p, 1, h, w), [h, w],
                                                       [p, 1, r, c], False)
    grad_store[:p * chunk].view(p, chunk)[:, :r * c].add_(back.reshape(p, r * c))


class GenerateBuckets(torch.autograd.Function):
    """Every bucket of SuperWeight instances of a group, from the store and the mixing matrix.

    ``mix`` holds one row per instance, the buckets' instances one after another, over the P
    candidates (gain folded in, zeros past a row's candidates). Bucket ``k`` is described by
    ``specs[k] = (kind, first_row, instances, candidates, rows, cols, a, b)`` and its tensors:

    * gather (``idx``, ``instances x candidates`` block indices, a block being ``rows * cols``
      parameters of the flat store): ``out[i] = sum_j mix[i, j] * block(idx[i, j])``, one
      ``index_select`` and one multiply-add per candidate into one buffer;
    * window (``idx`` relative to block ``a``; the window is ``b`` blocks wide):
      ``out = D @ store_blocks[a:a+b]``, with ``D`` the mixing rows scattered over the window,
      one matrix product that reads each block of the window once;
    * upsample (the source block is ``a x b``; its tensors, the row interpolation of
      :func:`lerp_weights`, serve the backward): ``out = mix[:, :1] * upsample(store[:a*b])``
      (SSN Sec. 3.1);
    * resize (``used`` equal candidates, each viewed as an ``a x b`` block): ``out = mix @
      resized``, the candidates of :func:`resized`, one product for the bucket (SSN Sec. 3.2).

    Autograd would give every bucket its own store-sized gradient (a zero-fill, then an add per
    bucket: at 100% on vit_b_16, 4.8 s of zero-filling in a 9.0 s generation backward; on
    mobilenet_v3_large at 10%, 16 ms of fills in a 27 ms one), and save every gathered candidate.
    This backward fills one store-sized gradient and adds into it in place: a window by one
    ``addmm_`` into its blocks, a gather by one ``index_add_`` per candidate (re-reading the
    candidates rather than keeping them), an upsampled bucket through
    :func:`upsample_backward` into its source block.
    """

    @staticmethod
    def forward(ctx, store: torch.Tensor, mix: torch.Tensor,  # type: ignore[override]
                specs: tuple[tuple[int, ...], ...], *tensors: torch.Tensor
                ) -> tuple[torch.Tensor, ...]:
        ctx.specs = specs
        ctx.save_for_backward(store, mix, *tensors)
        # In the store's dtype whatever autocast says (its matmuls would otherwise mix dtypes):
        # the layers cast the weights they receive.
        with without_autocast(store.device.type):
            return GenerateBuckets._forward(store, mix, specs, tensors)

    @staticmethod
    def _forward(store: torch.Tensor, mix: torch.Tensor, specs: tuple[tuple[int, ...], ...],
                 tensors: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        outs = []
        it = iter(tensors)
        for kind, row, n, used, h, w, a, b in specs:
            rows, m = mix[row:row + n], h * w
            if kind == RESIZE:
                outs.append(torch.mm(rows[:, :used], resized(store, used, a, b, h, w)))
                continue
            if kind == UPSAMPLE:
                next(it), next(it)  # (the backward's interpolation weights)
                src = store[:a * b].view(a, b)
                if n == 1:  # the coefficient scales the source, not the weight: a smaller pass
                    outs.append(upsample(src * rows[:, :1], h, w).view(1, m))
                else:
                    outs.append(rows[:, :1] * upsample(src, h, w).view(1, m))
                continue
            idx = next(it)
            view = block_view(store, m)
            if kind == WINDOW:
                dense = rows.new_zeros(n, b).scatter_add_(1, idx, rows[:, :used])
                outs.append(torch.mm(dense, view[a:a + b]))
                continue
            out = view.index_select(0, idx[:, 0]).mul_(rows[:, :1])
            block = torch.empty_like(out) if used > 1 else out
            for j in range(1, used):
                # into one reused buffer: a fresh tensor of this size costs its page faults
                torch.index_select(view, 0, idx[:, j], out=block)
                out.addcmul_(block, rows[:, j:j + 1])
            outs.append(out)
        return tuple(outs)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor | None  # type: ignore[override]
                 ) -> tuple[torch.Tensor | None, ...]:
        store, mix, *tensors = ctx.saved_tensors
        with without_autocast(store.device.type):
            return GenerateBuckets._backward(ctx, store, mix, tensors, grads)

    @staticmethod
    def _backward(ctx, store: torch.Tensor, mix: torch.Tensor, tensors: list[torch.Tensor],
                  grads: tuple[torch.Tensor | None, ...]) -> tuple[torch.Tensor | None, ...]:
        want_store, want_mix = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_store = store.new_zeros(store.shape) if want_store else None
        grad_mix = mix.new_zeros(mix.shape) if want_mix else None
        it = iter(tensors)
        for (kind, row, n, used, h, w, a, b), g in zip(ctx.specs, grads):
            if kind == RESIZE:
                if g is None:
                    continue
                rows, cands = mix[row:row + n, :used], resized(store, used, a, b, h, w)
                if grad_mix is not None:
                    grad_mix[row:row + n, :used] = torch.mm(g, cands.t())
                if grad_store is not None:
                    resized_backward(torch.mm(rows.t(), g), grad_store, a, b, h, w)
                continue
            if kind == UPSAMPLE:
                idx, lam = next(it), next(it)
                if g is None:
                    continue
                rows, src = mix[row:row + n], store[:a * b].view(a, b)
                if n == 1:
                    # <g, mix * up(src)>: d/dmix = <up^T(g), src>, d/dsrc = mix * up^T(g)
                    back = upsample_backward(g.view(h, w), idx, lam, a, b)
                    if grad_mix is not None:
                        grad_mix[row, 0] = torch.dot(back.view(-1), src.reshape(-1))
                    if grad_store is not None:
                        grad_store[:a * b].view(a, b).addcmul_(back, rows[:, :1])
                    continue
                if grad_mix is not None:
                    up = upsample(src, h, w).view(h * w, 1)
                    grad_mix[row:row + n, :1] = torch.mm(g, up)
                if grad_store is not None:
                    summed = torch.mm(rows[:, :1].t(), g).view(h, w)
                    grad_store[:a * b].view(a, b).add_(upsample_backward(summed, idx, lam, a, b))
                continue
            idx = next(it)
            if g is None:
                continue
            rows, m = mix[row:row + n], h * w
            view = block_view(store, m)
            grad_view = None if grad_store is None else block_view(grad_store, m)
            if kind == WINDOW:
                if grad_mix is not None:
                    grad_mix[row:row + n, :used] = torch.mm(g, view[a:a + b].t()).gather(1, idx)
                if grad_view is not None:
                    dense = rows.new_zeros(n, b).scatter_add_(1, idx, rows[:, :used])
                    grad_view[a:a + b].addmm_(dense.t(), g)
                continue
            block = torch.empty_like(g)  # one buffer for every candidate, as in the forward
            for j in range(used):
                if grad_mix is not None:
                    torch.index_select(view, 0, idx[:, j], out=block)
                    grad_mix[row:row + n, j] = block.mul_(g).sum(1)
                if grad_view is not None:
                    torch.mul(g, rows[:, j:j + 1], out=block)
                    grad_view.index_add_(0, idx[:, j], block)
        return (grad_store, grad_mix, None, *(None for _ in tensors))
