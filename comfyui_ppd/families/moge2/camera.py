"""MoGe-2's camera recovery: view-plane uv, the focal/shift solve, normalised intrinsics, unprojection.

The official code solves the shift with scipy's MINPACK Levenberg-Marquardt stopped early (ftol 1e-3),
so its answer is where that solver stops, not the optimum. `solve_lm_1d` re-implements that solver for
one parameter (MINPACK lmder with scipy >= 1.16 defaults) in plain float64, so the shifts match the
official ones to float rounding; no scipy at run time.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

SOLVER_GRID = 64            # recover_focal_shift samples the map on a fixed 64 x 64 nearest grid
EPS64 = 2.220446049250313e-16
DWARF = 2.2250738585072014e-308


def normalized_view_plane_uv(width: int, height: int, aspect_ratio: float | None = None,
                             dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> Tensor:
    """(H, W, 2) pixel-centre (u, v) on a view plane whose half-diagonal is 1; aspect defaults to W/H."""
    aspect = width / height if aspect_ratio is None else aspect_ratio
    span_x = aspect / (1 + aspect ** 2) ** 0.5
    span_y = 1 / (1 + aspect ** 2) ** 0.5
    u = torch.linspace(-span_x * (width - 1) / width, span_x * (width - 1) / width, width, dtype=dtype, device=device)
    v = torch.linspace(-span_y * (height - 1) / height, span_y * (height - 1) / height, height, dtype=dtype,
                       device=device)
    return torch.stack(torch.meshgrid(u, v, indexing="xy"), dim=-1)


def solve_lm_1d(residual: Callable[[float], Tensor], x0: float = 0.0, ftol: float = 1e-3, xtol: float = 1e-8,
                gtol: float = 1e-8, max_nfev: int = 100, factor: float = 100.0,
                trace: list | None = None) -> float:
    """Minimise |residual(x)|^2 over one scalar like scipy's least_squares(method='lm') (scipy >= 1.16).

    MINPACK lmder with a forward-difference Jacobian (step sqrt(eps)*max(1,|x|), sign of x), scaling by
    the Jacobian norm (mode 1), initial step bound `factor`; for n = 1 the QR and lmpar steps are scalar.
    `trace` receives every x at which the residual is evaluated (Jacobian steps included).
    """
    def f(x: float) -> Tensor:
        if trace is not None:
            trace.append(x)
        return residual(x)

    def norm(v: Tensor) -> float:
        return math.sqrt(float((v * v).sum()))

    x, fvec = x0, f(x0)
    nfev, fnorm, par, first = 1, norm(fvec), 0.0, True
    diag = delta = xnorm = 0.0
    while True:
        h = math.sqrt(EPS64) * (1.0 if x >= 0 else -1.0) * max(1.0, abs(x))
        h = (x + h) - x
        jac = (f(x + h) - fvec) / h                         # (m,) forward difference
        jnorm = norm(jac)
        jtf = float((jac * fvec).sum())
        if first:
            diag = jnorm if jnorm != 0 else 1.0
            xnorm = abs(diag * x)
            delta = factor * xnorm or factor
        gnorm = abs(jtf / fnorm / jnorm) if fnorm != 0 and jnorm != 0 else 0.0
        if gnorm <= gtol:
            return x
        diag = max(diag, jnorm)
        while True:
            par, step = _lmpar_1d(jnorm, jtf, diag, delta, par)
            pnorm = abs(diag * step)
            if first:
                delta = min(delta, pnorm)
            x_new = x + step
            f_new = f(x_new)
            nfev += 1
            fnorm1 = norm(f_new)
            actred = 1 - (fnorm1 / fnorm) ** 2 if 0.1 * fnorm1 < fnorm else -1.0
            t1 = jnorm * abs(step) / fnorm
            t2 = math.sqrt(par) * pnorm / fnorm
            prered = t1 * t1 + t2 * t2 / 0.5
            dirder = -(t1 * t1 + t2 * t2)
            ratio = actred / prered if prered != 0 else 0.0
            if ratio <= 0.25:
                t = 0.5 if actred >= 0 else 0.5 * dirder / (dirder + 0.5 * actred)
                if 0.1 * fnorm1 >= fnorm or t < 0.1:
                    t = 0.1
                delta, par = t * min(delta, pnorm / 0.1), par / t
            elif par == 0 or ratio >= 0.75:
                delta, par = pnorm / 0.5, 0.5 * par
            if ratio >= 1e-4:                                # successful step
                x, fvec, fnorm, first = x_new, f_new, fnorm1, False
                xnorm = abs(diag * x)
            if (abs(actred) <= ftol and prered <= ftol and 0.5 * ratio <= 1) or delta <= xtol * xnorm:
                return x
            if (nfev >= max_nfev or (abs(actred) <= EPS64 and prered <= EPS64 and 0.5 * ratio <= 1)
                    or delta <= EPS64 * xnorm or gnorm <= EPS64):
                return x
            if ratio >= 1e-4:
                break


def _lmpar_1d(jnorm: float, jtf: float, d: float, delta: float, par: float) -> tuple[float, float]:
    """MINPACK lmpar for one unknown: the LM parameter and step p with |d p| <= delta (about 10 %)."""
    gn = jtf / jnorm ** 2 if jnorm != 0 else 0.0           # Gauss-Newton step is -gn
    dxnorm = abs(d * gn)
    fp = dxnorm - delta
    if fp <= 0.1 * delta:
        return 0.0, -gn
    parl = (fp / delta) / (d / jnorm) ** 2 if jnorm != 0 else 0.0
    gnorm = abs(jtf) / d
    paru = gnorm / delta or DWARF / min(delta, 0.1)
    par = min(max(par, parl), paru)
    if par == 0:
        par = gnorm / dxnorm
    for it in range(1, 11):
        if par == 0:
            par = max(DWARF, 0.001 * paru)
        s2 = jnorm ** 2 + par * d * d                       # sdiag^2 of [R; sqrt(par) D]
        x = jtf / s2
        dxnorm, prev, fp = abs(d * x), fp, abs(d * x) - delta
        if abs(fp) <= 0.1 * delta or (parl == 0 and fp <= prev < 0) or it == 10:
            return par, -x
        parc = (fp / delta) / (d * d / s2)
        if fp > 0:
            parl = max(parl, par)
        elif fp < 0:
            paru = min(paru, par)
        par = max(parl, par + parc)
    return par, -x


def solver_samples(points: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """What the solver sees: nearest 64x64 samples of points (B,64,64,3), uv (64,64,2) and mask (B,64,64) bool."""
    b, h, w, _ = points.shape
    uv = normalized_view_plane_uv(w, h, dtype=points.dtype, device=points.device)
    size = (SOLVER_GRID, SOLVER_GRID)
    pts_lr = F.interpolate(points.permute(0, 3, 1, 2), size, mode="nearest").permute(0, 2, 3, 1)
    uv_lr = F.interpolate(uv.permute(2, 0, 1)[None], size, mode="nearest")[0].permute(1, 2, 0)
    if mask is None:
        return pts_lr, uv_lr, torch.ones(b, *size, dtype=torch.bool, device=points.device)
    return pts_lr, uv_lr, F.interpolate(mask.float()[:, None], size, mode="nearest")[:, 0] > 0


def recover_focal_shift(points: Tensor, mask: Tensor | None = None, focal: Tensor | None = None,
                        trace: list | None = None) -> tuple[Tensor, Tensor]:
    """Focal (relative to half the diagonal) and z shift of an affine point map (B,H,W,3) -> (B,), (B,).

    Samples a 64x64 nearest grid of the map (and mask), then per image minimises
    |f xy/(z+s) - uv|^2 over s with f in closed form (or given), as the official solver does.
    """
    pts_lr, uv_lr, mask_lr = solver_samples(points, mask)
    return focal_shift_from_samples(pts_lr, uv_lr, mask_lr, focal, trace)


def focal_shift_from_samples(pts_lr: Tensor, uv_lr: Tensor, mask_lr: Tensor, focal: Tensor | None = None,
                             trace: list | None = None) -> tuple[Tensor, Tensor]:
    """The per-image solve on the 64x64 samples of `solver_samples` -> focal (B,), shift (B,) float32."""
    b = pts_lr.shape[0]
    focals, shifts = [], []
    for i in range(b):
        sel = mask_lr[i].cpu()
        xyz, uvs = pts_lr[i].float().cpu()[sel], uv_lr.float().cpu()[sel]
        f_in = None if focal is None else float(focal[i])
        if xyz.shape[0] < 2:
            shifts.append(0.0)
            focals.append(1.0 if f_in is None else f_in)
            continue
        s, f = _solve_one(uvs, xyz[:, :2], xyz[:, 2], f_in, trace)
        shifts.append(s)
        focals.append(f if f_in is None else f_in)
    out_f = torch.tensor(focals, dtype=torch.float32) if focal is None else focal.float().cpu()
    return out_f.to(pts_lr.device), torch.tensor(shifts, dtype=torch.float32, device=pts_lr.device)


def _solve_one(uv: Tensor, xy: Tensor, z: Tensor, focal: float | None, trace: list | None) -> tuple[float, float]:
    """Shift by the early-stopping LM in float64; the focal recomputed at the float32 shift in float32."""
    uv64, xy64, z64 = uv.double(), xy.double(), z.double()

    def residual(s: float) -> Tensor:
        proj = xy64 / (z64 + s)[:, None]
        f = focal if focal is not None else float((proj * uv64).sum() / (proj * proj).sum())
        return (f * proj - uv64).reshape(-1)

    shift = float(torch.tensor(solve_lm_1d(residual, trace=trace), dtype=torch.float32))
    proj = xy / (z + torch.tensor(shift, dtype=torch.float32))[:, None]
    return shift, float((proj * uv).sum() / (proj * proj).sum())


def intrinsics_from_focal(focal: Tensor, aspect: float) -> Tensor:
    """(B,3,3) normalised intrinsics [[fx,0,.5],[0,fy,.5],[0,0,1]] from focal relative to half the diagonal."""
    fx = focal / 2 * (1 + aspect ** 2) ** 0.5 / aspect
    fy = focal / 2 * (1 + aspect ** 2) ** 0.5
    k = torch.zeros(*focal.shape, 3, 3, dtype=focal.dtype, device=focal.device)
    k[..., 0, 0], k[..., 1, 1] = fx, fy
    k[..., 0, 2] = k[..., 1, 2] = 0.5
    k[..., 2, 2] = 1.0
    return k


def focal_from_fov_x(fov_x: float, aspect: float, batch: int, device: torch.device | str) -> Tensor:
    """Focal relative to half the diagonal for a horizontal FOV in degrees, float32, (B,)."""
    half = torch.deg2rad(torch.as_tensor(fov_x, dtype=torch.float32, device=device) / 2)
    return (aspect / (1 + aspect ** 2) ** 0.5 / torch.tan(half)).expand(batch)


def unproject_centres(depth: Tensor, intrinsics: Tensor) -> Tensor:
    """(B,H,W,3) points of depth (B,H,W) with normalised K (B,3,3) at pixel CENTRES ((j+0.5)/W, (i+0.5)/H).

    This is MoGe's convention (force_projection); the official depth2pcd uses integer indices instead
    (see `metric.unproject_pixels`).
    """
    _, h, w = depth.shape
    u = torch.linspace(0.5 / w, 1 - 0.5 / w, w, dtype=depth.dtype, device=depth.device)
    v = torch.linspace(0.5 / h, 1 - 0.5 / h, h, dtype=depth.dtype, device=depth.device)
    uv1 = torch.stack([*torch.meshgrid(u, v, indexing="xy"), torch.ones(h, w, dtype=depth.dtype,
                                                                          device=depth.device)], dim=-1)
    rays = uv1 @ torch.linalg.inv(intrinsics).transpose(-1, -2)[:, None]      # (B,H,W,3)
    return rays * depth[..., None]
