"""Averaging rigid poses and fitting one rigid transform, written to run inside an ONNX graph.

The DMA refiner predicts one object pose per graph node and reports their mean; it
also needs the rigid pose that best explains a coarse object mesh. Both reduce to the
dominant eigenvector of a symmetric 4x4 matrix over quaternions:

* **Rotation mean** (:func:`rotation_mean`): the weighted chordal L2 mean, i.e. the
  rotation R minimising ``sum_i w_i ||R - R_i||_F^2``. With unit quaternions,
  ``||R - R_i||_F^2 = 8 (1 - (q . q_i)^2)``, so the minimiser is the top eigenvector of
  ``M = sum_i w_i q_i q_i^T`` (Markley et al., 2007). This is exactly the SVD projection
  of the weighted mean matrix onto SO(3) (with the determinant fixed to +1), it is
  blind to the sign ambiguity q ~ -q, and it always returns a proper rotation.
* **Rigid fit** (:func:`fit_rigid_transform`): Horn's (1987) closed-form absolute
  orientation; the rotation is the top eigenvector of a 4x4 matrix built from the
  cross-covariance of the centred point sets.

ONNX has no eigen-decomposition or SVD operator, so the eigenvector is computed by
repeated squaring of the (positive semi-definite) matrix: after k squarings the matrix
is ``~ lambda_1^(2^k) v v^T`` and its column with the largest diagonal entry is
parallel to ``v``. Only matmuls, a trace normalisation and an argmax are involved,
with a fixed iteration count (no data-dependent control flow). Translations are
averaged with the same weights (the translation part of the SE(3) chordal mean, which
decouples from the rotation).
"""

from __future__ import annotations

import torch

from hoi_perception.geometry.rotations import matrix_to_quaternion, quaternion_to_matrix

# 2^20-th power: an eigenvalue ratio of 0.9999 is suppressed to ~1e-46.
DEFAULT_SQUARINGS = 20


def _check(x: torch.Tensor, name: str, tail: tuple[int, ...], per_pose: bool = True) -> None:
    """Check that ``x`` ends in ``tail``; ``per_pose``: with a pose/point axis N before it."""
    if torch.jit.is_tracing():  # shapes are symbolic while exporting; checked in eager runs
        return
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    lead = 1 if per_pose else 0
    if x.dim() < len(tail) + lead or tuple(x.shape[x.dim() - len(tail):]) != tail:
        want = ("..., N, " if per_pose else "..., ") + ", ".join(map(str, tail))
        raise ValueError(f"{name}: expected shape ({want}), got {tuple(x.shape)}")


def _normalized_weights(weights: torch.Tensor | None, like: torch.Tensor, name: str) -> torch.Tensor:
    """Weights (..., N) scaled to sum to one; uniform when None. ``like`` is (..., N, ...)."""
    if weights is None:
        return torch.full(like.shape[:-1], 1.0 / like.shape[-2], dtype=like.dtype, device=like.device)
    if not torch.jit.is_tracing():
        if tuple(weights.shape) != tuple(like.shape[:weights.dim()]) or weights.dim() != like.dim() - 1:
            raise ValueError(f"{name}: expected weights of shape {tuple(like.shape[:-1])}, got {tuple(weights.shape)}")
        if bool((weights < 0).any()):
            raise ValueError(f"{name}: weights must be >= 0")
    weights = weights.to(like.dtype)
    return weights / weights.sum(-1, keepdim=True).clamp_min(torch.finfo(like.dtype).tiny)


def dominant_eigenvector(matrix: torch.Tensor, squarings: int = DEFAULT_SQUARINGS) -> torch.Tensor:
    """Unit eigenvector (..., D) of the largest eigenvalue of symmetric PSD ``matrix`` (..., D, D).

    Repeated squaring with trace normalisation (see the module docstring). The sign of
    the result is arbitrary. When the top eigenvalue is repeated the answer is some
    vector of its eigenspace, as with any eigensolver.
    """
    _check(matrix, "matrix", (matrix.shape[-1], matrix.shape[-1]), per_pose=False)
    m = matrix
    for _ in range(squarings):
        m = m @ m
        trace = torch.diagonal(m, dim1=-2, dim2=-1).sum(-1)
        m = m / trace.clamp_min(torch.finfo(m.dtype).tiny)[..., None, None]
    diagonal = torch.diagonal(m, dim1=-2, dim2=-1)
    best = torch.argmax(diagonal, dim=-1, keepdim=True)
    one_hot = (torch.arange(m.shape[-1], device=m.device).expand(diagonal.shape) == best).to(m.dtype)
    column = (m * one_hot.unsqueeze(-2)).sum(-1)
    return column / torch.sqrt((column * column).sum(-1, keepdim=True)).clamp_min(torch.finfo(m.dtype).tiny)


def rotation_mean(rotations: torch.Tensor, weights: torch.Tensor | None = None,
                  squarings: int = DEFAULT_SQUARINGS) -> torch.Tensor:
    """Weighted chordal L2 mean (..., 3, 3) of rotation matrices (..., N, 3, 3).

    ``weights`` (..., N) are non-negative (normalised here); None means uniform.
    """
    _check(rotations, "rotations", (3, 3))
    w = _normalized_weights(weights, rotations.flatten(-2), "rotation_mean")
    q = matrix_to_quaternion(rotations)  # (..., N, 4)
    scatter = (q.unsqueeze(-1) * q.unsqueeze(-2) * w[..., None, None]).sum(-3)  # (..., 4, 4)
    return quaternion_to_matrix(dominant_eigenvector(scatter, squarings))


def se3_mean(rotations: torch.Tensor, translations: torch.Tensor, weights: torch.Tensor | None = None,
             squarings: int = DEFAULT_SQUARINGS) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted mean pose of N poses: chordal L2 rotation mean and weighted mean translation.

    rotations (..., N, 3, 3), translations (..., N, 3), weights (..., N) or None.
    Returns (R (..., 3, 3), t (..., 3)).
    """
    _check(translations, "translations", (3,))
    if not torch.jit.is_tracing() and rotations.shape[:-2] != translations.shape[:-1]:
        raise ValueError(f"se3_mean: rotations {tuple(rotations.shape)} and translations "
                         f"{tuple(translations.shape)} must hold the same number of poses")
    w = _normalized_weights(weights, translations, "se3_mean")
    return rotation_mean(rotations, w, squarings), (translations * w.unsqueeze(-1)).sum(-2)


def fit_rigid_transform(source: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None,
                        squarings: int = DEFAULT_SQUARINGS) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares rigid transform with ``target ~ R @ source + t`` (Horn's quaternion method).

    source, target (..., N, 3) corresponding points; weights (..., N) or None (uniform).
    Returns (R (..., 3, 3), t (..., 3)); R is always a proper rotation.
    """
    _check(source, "source", (3,))
    _check(target, "target", (3,))
    if not torch.jit.is_tracing() and source.shape != target.shape:
        raise ValueError(f"fit_rigid_transform: source {tuple(source.shape)} and target {tuple(target.shape)} "
                         "must have the same shape")
    w = _normalized_weights(weights, source, "fit_rigid_transform").unsqueeze(-1)
    source_mean = (source * w).sum(-2)
    target_mean = (target * w).sum(-2)
    a = source - source_mean.unsqueeze(-2)
    b = target - target_mean.unsqueeze(-2)
    s = ((a * w).unsqueeze(-1) * b.unsqueeze(-2)).sum(-3)  # S[i, j] = sum w a_i b_j
    sxx, sxy, sxz = s[..., 0, 0], s[..., 0, 1], s[..., 0, 2]
    syx, syy, syz = s[..., 1, 0], s[..., 1, 1], s[..., 1, 2]
    szx, szy, szz = s[..., 2, 0], s[..., 2, 1], s[..., 2, 2]
    rows = [
        sxx + syy + szz, syz - szy, szx - sxz, sxy - syx,
        syz - szy, sxx - syy - szz, sxy + syx, szx + sxz,
        szx - sxz, sxy + syx, -sxx + syy - szz, syz + szy,
        sxy - syx, szx + sxz, syz + szy, -sxx - syy + szz,
    ]
    horn = torch.stack(rows, dim=-1).reshape(s.shape[:-2] + (4, 4))
    # Shift by the Frobenius norm (>= the spectral radius) so the matrix is PSD and its
    # top eigenvector, the optimal quaternion, is also the dominant one.
    shift = torch.sqrt((horn * horn).sum((-2, -1)))
    eye = torch.eye(4, dtype=horn.dtype, device=horn.device)
    q = dominant_eigenvector(horn + shift[..., None, None] * eye, squarings)
    rotation = quaternion_to_matrix(q)
    translation = target_mean - (rotation @ source_mean.unsqueeze(-1)).squeeze(-1)
    return rotation, translation
