"""Two-dimensional test functions with known global minima.

Every function takes a tensor ``x`` of shape ``(..., 2)`` (any leading batch shape) and returns
the values, of shape ``(...)``; it is built from torch operations, so autograd differentiates it.
Because each value depends only on its own row, ``f(x).sum()`` has the per-row gradients of ``f``:
many starting points can be optimised as one ``(n, 2)`` parameter by an element-wise optimizer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

Box = tuple[tuple[float, float], tuple[float, float]]


@dataclass(frozen=True)
class Function2D:
    """A 2D test function with its global minima.

    ``minima`` lists every global minimiser, ``f_min`` the minimum value, ``plot_box`` the
    ``((x_lo, x_hi), (y_lo, y_hi))`` window of the contour plots and ``start_box`` the window
    random starting points are drawn from. ``formula`` is the LaTeX of the definition.
    """

    name: str
    title: str
    formula: str
    convex: bool
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    minima: tuple[tuple[float, float], ...]
    f_min: float
    plot_box: Box
    start_box: Box

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor of shape (..., 2), got {type(x).__name__}")
        if x.ndim == 0 or x.shape[-1] != 2:
            raise ValueError(f"x must have shape (..., 2), got {tuple(x.shape)}")
        return self.fn(x[..., 0], x[..., 1])

    def minima_tensor(self, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """The global minimisers as a ``(k, 2)`` tensor."""
        return torch.tensor(self.minima, dtype=dtype)

    def sample_starts(self, n: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """``n`` starting points drawn uniformly from ``start_box`` with a private generator."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        gen = torch.Generator().manual_seed(seed)
        lo = torch.tensor([b[0] for b in self.start_box], dtype=dtype)
        hi = torch.tensor([b[1] for b in self.start_box], dtype=dtype)
        return lo + (hi - lo) * torch.rand(n, 2, generator=gen, dtype=dtype)


def _sphere(x, y):
    return x**2 + y**2


def _ill_conditioned(x, y):
    return ((x + y - 2) ** 2 + 100 * (x - y) ** 2) / 4


def _shifted(x, y):
    return (x + 1) ** 2 + 2 * (y - 1) ** 2


def _rosenbrock(x, y):
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


def _beale(x, y):
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2


def _himmelblau(x, y):
    return (x**2 + y - 11) ** 2 + (x + y**2 - 7) ** 2


def _rastrigin(x, y):
    two_pi = 2 * math.pi
    return 20 + x**2 - 10 * torch.cos(two_pi * x) + y**2 - 10 * torch.cos(two_pi * y)


def _styblinski_tang(x, y):
    return 0.5 * (x**4 - 16 * x**2 + 5 * x + y**4 - 16 * y**2 + 5 * y)


# Root of 4 t^3 - 32 t + 5 = 0 (the derivative of t^4 - 16 t^2 + 5 t) near -2.9.
_ST = -2.9035340277711770951

SPHERE = Function2D(
    "sphere", "Isotropic quadratic", r"f(x, y) = x^2 + y^2", True, _sphere,
    ((0.0, 0.0),), 0.0, ((-3, 3), (-3, 3)), ((-3, 3), (-3, 3)),
)
"""Isotropic quadratic :math:`x^2 + y^2`; minimum 0 at (0, 0)."""

ILL_CONDITIONED = Function2D(
    "ill_conditioned", "Ill-conditioned quadratic (rotated, condition number 100)",
    r"f(x, y) = \tfrac14\left[(x + y - 2)^2 + 100\,(x - y)^2\right]", True, _ill_conditioned,
    ((1.0, 1.0),), 0.0, ((-3, 3), (-3, 3)), ((-3, 3), (-3, 3)),
)
"""Quadratic with Hessian eigenvalues 1 and 100 along the diagonals (not axis-aligned);
minimum 0 at (1, 1)."""

SHIFTED = Function2D(
    "shifted", "Shifted quadratic (minimum at negative x)",
    r"f(x, y) = (x + 1)^2 + 2\,(y - 1)^2", True, _shifted,
    ((-1.0, 1.0),), 0.0, ((-2, 3), (-1, 3)), ((0.5, 2.5), (0.5, 2.5)),
)
"""Convex quadratic with minimum 0 at (-1, 1). Starts are drawn with x > 0, so x must change sign."""

ROSENBROCK = Function2D(
    "rosenbrock", "Rosenbrock", r"f(x, y) = (1 - x)^2 + 100\,(y - x^2)^2", False, _rosenbrock,
    ((1.0, 1.0),), 0.0, ((-2, 2), (-1, 3)), ((-2, 2), (-1, 3)),
)
"""Rosenbrock's banana valley; minimum 0 at (1, 1)."""

BEALE = Function2D(
    "beale", "Beale",
    r"f(x, y) = (1.5 - x + xy)^2 + (2.25 - x + xy^2)^2 + (2.625 - x + xy^3)^2", False, _beale,
    ((3.0, 0.5),), 0.0, ((-4.5, 4.5), (-4.5, 4.5)), ((-2, 2), (-2, 2)),
)
"""Beale's function; minimum 0 at (3, 0.5), where all three residuals vanish."""

HIMMELBLAU = Function2D(
    "himmelblau", "Himmelblau", r"f(x, y) = (x^2 + y - 11)^2 + (x + y^2 - 7)^2", False, _himmelblau,
    (
        (3.0, 2.0),
        (-2.8051180869527449, 3.1313125182505730),
        (-3.7793102533777469, -3.2831859912861694),
        (3.5844283403304917, -1.8481265269644036),
    ),
    0.0, ((-5, 5), (-5, 5)), ((-5, 5), (-5, 5)),
)
"""Himmelblau's function; four global minima of value 0, one in each quadrant."""

RASTRIGIN = Function2D(
    "rastrigin", "Rastrigin",
    r"f(x, y) = 20 + x^2 - 10\cos(2\pi x) + y^2 - 10\cos(2\pi y)", False, _rastrigin,
    ((0.0, 0.0),), 0.0, ((-5.12, 5.12), (-5.12, 5.12)), ((-5.12, 5.12), (-5.12, 5.12)),
)
"""Rastrigin's function: a bowl covered in local minima; global minimum 0 at (0, 0)."""

STYBLINSKI_TANG = Function2D(
    "styblinski_tang", "Styblinski-Tang",
    r"f(x, y) = \tfrac12\left(x^4 - 16x^2 + 5x + y^4 - 16y^2 + 5y\right)", False, _styblinski_tang,
    ((_ST, _ST),), _ST**4 - 16 * _ST**2 + 5 * _ST, ((-5, 5), (-5, 5)), ((-5, 5), (-5, 5)),
)
"""Styblinski-Tang; global minimum about -78.332 at (t, t), t = -2.90353 the negative root of
4t^3 - 32t + 5 = 0 (local minima near t = 2.7468)."""

CONVEX = (SPHERE, ILL_CONDITIONED, SHIFTED)
NONCONVEX = (ROSENBROCK, BEALE, HIMMELBLAU, RASTRIGIN, STYBLINSKI_TANG)
FUNCTIONS = {f.name: f for f in CONVEX + NONCONVEX}


@dataclass(frozen=True)
class Instances:
    """A seeded family of instances of ``function``: instance k is f(x* + R_k^T (x - c_k)), the function
    with its minimiser x* (the first of ``minima``) moved to c_k and its coordinates rotated by the
    angle a_k (R_k the rotation matrix). Every global minimiser m moves to c_k + R_k (m - x*), and the
    minimum value is unchanged. Instance 0 is the original (c_0 = x*, a_0 = 0): see :func:`instances`.
    """

    function: Function2D
    centres: torch.Tensor  # (k, 2)
    angles: torch.Tensor  # (k,)

    def __len__(self) -> int:
        return len(self.angles)

    def rotations(self) -> torch.Tensor:
        """The (k, 2, 2) rotation matrices R_k."""
        c, s = torch.cos(self.angles), torch.sin(self.angles)
        return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)

    def _check(self, index: torch.Tensor) -> None:
        if index.dtype != torch.int64 or index.ndim != 1 or (index < 0).any() or (index >= len(self)).any():
            raise ValueError(f"index must be a 1D int64 tensor of instance numbers in [0, {len(self)})")

    def __call__(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """f of instance ``index[i]`` at row i of ``x`` (..., n, 2): each row depends on itself only."""
        self._check(index)
        if x.ndim < 2 or x.shape[-2:] != (len(index), 2):
            raise ValueError(f"x must have shape (..., {len(index)}, 2), got {tuple(x.shape)}")
        xstar = self.function.minima_tensor(x.dtype)[0]
        rot = self.rotations().to(x.dtype)[index]
        z = xstar + torch.einsum("nji,...nj->...ni", rot, x - self.centres.to(x.dtype)[index])
        return self.function(z)

    def minima(self, k: int) -> torch.Tensor:
        """The global minimisers of instance ``k``, (j, 2)."""
        m = self.function.minima_tensor(self.centres.dtype)
        return self.centres[k] + (m - m[0]) @ self.rotations()[k].T

    def starts(self, index: torch.Tensor, seed: int) -> torch.Tensor:
        """One start per entry of ``index``: a point of the function's start box, drawn with a private
        generator seeded by ``seed``, carried along with its instance (c_k + R_k (s - x*))."""
        self._check(index)
        s = self.function.sample_starts(len(index), seed, self.centres.dtype)
        xstar = self.function.minima_tensor(self.centres.dtype)[0]
        return self.centres[index] + torch.einsum("nij,nj->ni", self.rotations()[index], s - xstar)


def instances(function: Function2D, n: int, seed: int, shift: float = 2.0) -> Instances:
    """``n`` instances of ``function``: instance 0 the original, instances 1..n-1 with the minimiser moved
    to a point drawn uniformly from [-shift, shift]^2 and the coordinates rotated by an angle drawn
    uniformly from [0, 2 pi), with a generator seeded by ``seed``."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if not (isinstance(shift, (int, float)) and math.isfinite(shift) and shift > 0):
        raise ValueError(f"shift must be a finite number > 0, got {shift!r}")
    gen = torch.Generator().manual_seed(seed)
    centres = (torch.rand(n, 2, generator=gen, dtype=torch.float64) * 2 - 1) * shift
    angles = torch.rand(n, generator=gen, dtype=torch.float64) * 2 * math.pi
    centres[0] = function.minima_tensor()[0]
    angles[0] = 0.0
    return Instances(function, centres, angles)
