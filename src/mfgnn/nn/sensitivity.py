r"""HIP-NN sensitivity functions s^ν(r_ij) (Eq. 6 of Messerly et al.).

The pair distance enters HIP-NN only through a finite basis of trainable sensitivity
functions: Gaussians in the inverse distance times a smooth cutoff,

.. math::

    s^\nu(r) = \exp\!\left(-\frac{(r^{-1} - \mu_\nu^{-1})^2}{2\,\sigma_\nu^{-2}}\right)
               \varphi(r), \qquad
    \varphi(r) = \begin{cases} \cos^2\!\left(\dfrac{\pi r}{2 r_c}\right) & r < r_c \\
                               0 & r \ge r_c \end{cases}

with trainable centres μ_ν (Å) and widths σ_ν (Å; σ_ν⁻¹ is the Gaussian's standard
deviation in 1/r). φ and its first derivative vanish at the hard cutoff r_c, so energies
and forces are continuous when a neighbour crosses it.

Evaluation: with u = 1/r, d_ν = (u − 1/μ_ν) σ_ν and g_ν = exp(−d_ν²/2), the derivatives
that force training needs are written out (:class:`SensitivityGrad`) instead of being
taped op by op:

.. math::  \partial s^\nu/\partial r = g_\nu\,(\varphi' + \varphi\,u^2 \sigma_\nu d_\nu), \quad
           \partial s^\nu/\partial \mu_\nu = -s^\nu d_\nu \sigma_\nu/\mu_\nu^2, \quad
           \partial s^\nu/\partial \sigma_\nu = -s^\nu d_\nu^2/\sigma_\nu .

The Gaussian is evaluated as 2^{−d²·log₂e/2} with the exponent clamped at −116, minus
2^{−116} (≈ 1.2·10⁻³⁵), so its far tails are exactly 0 (no float32 subnormals, which are
slow on CPUs) and every other value changes by less than 10⁻³⁴ absolute.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mfgnn.nn.env_sum import WORKSPACE, will_need

#: The Gaussian's exponent is clamped at −TAIL_LOG2 (base 2): 2^−116 ≈ 1.2e-35, an exact power of 2.
TAIL_LOG2 = 116.0
#: log₂ e, turning exp(x) into exp2(x·log₂e) (exp2 is about 3x faster on CPUs).
_LOG2E = 1.0 / math.log(2.0)


def cutoff_terms(r: Tensor, cutoff: float, order: int = 0) -> tuple[Tensor, ...]:
    """φ(r) and, for ``order`` ≥ 1, 2, its first and second derivatives (1/Å, 1/Å²); zero at r ≥ r_c."""
    k = 0.5 * math.pi / cutoff
    cos, inside = torch.cos(r * k), r < cutoff
    out = [torch.where(inside, cos.square(), 0.0)]
    if order >= 1:
        sin = torch.sin(r * k)
        out.append(torch.where(inside, (-2.0 * k) * cos * sin, 0.0))
        if order >= 2:
            out.append(torch.where(inside, (-2.0 * k * k) * (cos.square() - sin.square()), 0.0))
    return tuple(out)


def gaussian_terms(u: Tensor, mu: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
    """d = (u − 1/μ) σ and g = exp(−d²/2) (far tails exactly 0), shapes (P, ν); u = 1/r (P,)."""
    d = (u.unsqueeze(-1) - mu.reciprocal()).mul_(sigma)
    g = d.square().mul_(-0.5 * _LOG2E).clamp_(min=-TAIL_LOG2).exp2_().sub_(2.0**-TAIL_LOG2)
    return d, g


def reference_sensitivity(r: Tensor, mu: Tensor, sigma: Tensor, cutoff: float) -> Tensor:
    """s^ν(r) from plain differentiable torch operations, shape (*r.shape, ν).

    The definition the fused :func:`gaussian_sensitivity` is tested against, and what its
    third and higher derivatives are taken from.
    """
    arg = 0.5 * ((r.reciprocal().unsqueeze(-1) - mu.reciprocal()) * sigma).square()
    tail = 2.0**-TAIL_LOG2
    gauss = torch.exp2(-_LOG2E * arg.clamp(max=TAIL_LOG2 / _LOG2E)) - tail
    (phi,) = cutoff_terms(r, cutoff)
    return gauss * phi.unsqueeze(-1)


def envelope(r: Tensor, cutoff: float) -> "Envelope":
    """(φ, φ', φ'', u = 1/r, φ u²) of the flattened distances, without a graph (what the
    fused derivatives use; compute once per geometry and pass to :func:`gaussian_sensitivity`)."""
    return Envelope(r, cutoff)


class Envelope:
    """The sequence (φ, φ', φ'', u, φ u²) of :func:`envelope`; φ'' (only the double
    backward uses it) is computed on first use."""

    __slots__ = ("flat", "cutoff", "items")

    def __init__(self, r: Tensor, cutoff: float) -> None:
        with torch.no_grad():
            self.flat, self.cutoff = r.detach().reshape(-1), cutoff
            phi, dphi = cutoff_terms(self.flat, cutoff, 1)
            u = self.flat.reciprocal()
            self.items = [phi, dphi, None, u, phi * u.square()]

    def __getitem__(self, k: int) -> Tensor:
        if k == 2 and self.items[2] is None:
            with torch.no_grad():
                self.items[2] = cutoff_terms(self.flat, self.cutoff, 2)[2]
        return self.items[k]

    def __len__(self) -> int:
        return 5

    def __iter__(self):
        return (self[k] for k in range(5))


class _Sensitivity(torch.autograd.Function):
    """s = s^ν(r; μ, σ); its backward is :class:`SensitivityGrad`."""

    @staticmethod
    def forward(ctx, r: Tensor, mu: Tensor, sigma: Tensor, cutoff: float, env) -> Tensor:
        d, g = gaussian_terms(env[3], mu, sigma)
        ctx.save_for_backward(r, mu, sigma, d, g)
        ctx.cutoff, ctx.env = cutoff, env
        return (g * env[0].unsqueeze(-1)).view(*r.shape, mu.shape[0])

    @staticmethod
    def backward(ctx, grad_s: Tensor):
        r, mu, sigma, d, g = ctx.saved_tensors
        # one check for both parameters (each costs µs); r: whenever it needs a gradient
        need_r = ctx.needs_input_grad[0]
        need_mu = need_sigma = will_need(ctx, 1) or will_need(ctx, 2)
        args = (r.reshape(-1), mu, sigma, d, g, ctx.cutoff, need_mu or need_sigma, ctx.env)
        if torch.is_grad_enabled():
            grad_r, grad_mu, grad_sigma = SensitivityGrad.apply(grad_s.reshape(d.shape), *args)
        else:  # grad_s as it comes (often a transposed view): no copy to the (P, ν) layout
            grad_r, grad_mu, grad_sigma = _first_derivatives(grad_s, *args)
        return (grad_r.view(r.shape) if need_r else None,
                grad_mu if need_mu and ctx.needs_input_grad[1] else None,
                grad_sigma if need_sigma and ctx.needs_input_grad[2] else None, None, None)


def _first_derivatives(grad_s, r, mu, sigma, d, g, cutoff, params, env):
    """(y_r, y_μ, y_σ) of :class:`SensitivityGrad` (y_μ, y_σ None unless ``params``)."""
    phi, dphi, phi_u2 = env[0], env[1], env[4]
    # one (P, ν) buffer, multiplied by d in place between the reductions
    buf = torch.mul(grad_s, g.view(grad_s.shape), out=_scratch(g).view(grad_s.shape)).view(g.shape)
    total = buf.sum(-1)
    buf.mul_(d)
    grad_r = torch.addcmul(dphi * total, phi_u2, buf @ sigma)
    grad_mu = grad_sigma = None
    if params:
        grad_mu = (phi @ buf).mul_(-sigma / mu.square())
        grad_sigma = (phi @ buf.mul_(d)).div_(-sigma)
    return grad_r, grad_mu, grad_sigma


def _scratch(like: Tensor) -> Tensor:
    """A reused scratch buffer shaped like ``like`` (fresh off the CPU)."""
    return WORKSPACE.get("sensitivity", tuple(like.shape), like)


class SensitivityGrad(torch.autograd.Function):
    r"""First derivatives of the sensitivities contracted with G = ∂L/∂s (P, ν):

    .. math::  y_r = \sum_\nu G_\nu h_\nu, \quad h_\nu = g_\nu(\varphi' + \varphi u^2\sigma_\nu d_\nu),
               \quad y_{\mu_\nu} = -\frac{\sigma_\nu}{\mu_\nu^2}\sum_P G_\nu g_\nu \varphi d_\nu,
               \quad y_{\sigma_\nu} = -\frac{1}{\sigma_\nu}\sum_P G_\nu g_\nu \varphi d_\nu^2 .

    Its own backward (the double backward of force training) is written out for the
    common case, a cotangent of y_r only without a further graph; any other case (a
    cotangent of y_μ or y_σ, or a third derivative) differentiates
    :func:`reference_sensitivity` twice with autograd.
    """

    @staticmethod
    def forward(ctx, grad_s, r, mu, sigma, d, g, cutoff: float, params: bool, env):
        ctx.save_for_backward(grad_s, r, mu, sigma, d, g)
        ctx.cutoff, ctx.env = cutoff, env
        ctx.set_materialize_grads(False)
        return _first_derivatives(grad_s, r, mu, sigma, d, g, cutoff, params, env)

    @staticmethod
    def backward(ctx, w, w_mu, w_sigma):
        grad_s, r, mu, sigma, d, g = ctx.saved_tensors
        if w_mu is not None or w_sigma is not None or torch.is_grad_enabled():
            return _generic_double_backward(ctx, grad_s, r, mu, sigma, w, w_mu, w_sigma)
        if w is None:
            return (None,) * 9
        need_s, need_r, need_mu, need_sigma = ctx.needs_input_grad[:4]
        phi, dphi, ddphi, u, _ = ctx.env
        u2 = u.square()
        w1, w2 = w * dphi, w * phi * u2  # (P,)
        out_s = out_r = out_mu = out_sigma = None
        if need_s:  # w_P h_{P,ν}
            out_s = torch.outer(w2, sigma).mul_(d).add_(w1.unsqueeze(-1)).mul_(g)
        if need_r or need_mu or need_sigma:
            # reductions of G g d^k, k = 0..3, from one buffer multiplied by d in place
            sig2 = sigma.square()
            buf = torch.mul(grad_s, g, out=_scratch(grad_s))
            sum0, sum0_s2, w2_0 = buf.sum(-1), buf @ sig2, w2 @ buf
            buf.mul_(d)
            sum1_s, w1_1, w2_1 = buf @ sigma, w1 @ buf, w2 @ buf
            buf.mul_(d)
            sum2_s2, w1_2, w2_2 = buf @ sig2, w1 @ buf, w2 @ buf
            if need_r:  # w Σ_ν G ∂h/∂r
                out_r = (ddphi * sum0 + 2.0 * (dphi * u2 - phi * u2 * u) * sum1_s
                         + phi * u2.square() * (sum2_s2 - sum0_s2)) * w
            if need_mu:
                out_mu = (sigma * (w2_0 - w2_2) - w1_1) * sigma / mu.square()
            if need_sigma:
                out_sigma = 2.0 * w2_1 - w2 @ buf.mul_(d) - w1_2 / sigma
        return out_s, out_r, out_mu, out_sigma, None, None, None, None, None


def _generic_double_backward(ctx, grad_s, r, mu, sigma, w, w_mu, w_sigma):
    """Backward of :class:`SensitivityGrad` by differentiating :func:`reference_sensitivity`."""
    create = torch.is_grad_enabled()
    needs = ctx.needs_input_grad[:4]
    with torch.enable_grad():
        leaves = [t if create and t.requires_grad else t.detach().requires_grad_(True)
                  for t in (grad_s, r, mu, sigma)]
        s = reference_sensitivity(leaves[1], leaves[2], leaves[3], ctx.cutoff)
        first = torch.autograd.grad(s, leaves[1:], leaves[0], create_graph=True)
        pairs = [(y, c) for y, c in zip(first, (w, w_mu, w_sigma)) if c is not None]
        grads = torch.autograd.grad([y for y, _ in pairs], leaves, [c for _, c in pairs],
                                    create_graph=create, allow_unused=True)
    out = [(torch.zeros_like(t) if o is None else o) if need else None
           for o, t, need in zip(grads, (grad_s, r, mu, sigma), needs)]
    return (*out, None, None, None, None, None)

def gaussian_sensitivity(r: Tensor, mu: Tensor, sigma: Tensor, cutoff: float,
                         env: tuple[Tensor, Tensor, Tensor] | None = None) -> Tensor:
    """s^ν(r) for distances ``r`` (Å, any shape S), centres ``mu`` and widths ``sigma`` (Å, (ν,)).

    Returns shape (*S, ν). Differentiable to any order in r, μ and σ (first and second
    derivatives from written-out formulas). ``env``: :func:`envelope` of the same r and
    cutoff, when already computed.
    """
    if not torch.is_grad_enabled() or not (r.requires_grad or mu.requires_grad or sigma.requires_grad):
        flat = r.reshape(-1)
        _, g = gaussian_terms(env[3] if env is not None else flat.reciprocal(), mu, sigma)
        phi = env[0] if env is not None else cutoff_terms(flat, cutoff)[0]
        return g.mul_(phi.unsqueeze(-1)).view(*r.shape, mu.shape[0])
    return _Sensitivity.apply(r, mu, sigma, float(cutoff), env if env is not None else envelope(r, cutoff))


class CosineCutoff(nn.Module):
    r"""Cutoff envelope φ(r) = cos²(π r / (2 r_c)) for r < r_c, 0 beyond.

    Args:
        cutoff: hard cutoff r_c in Å.
    """

    def __init__(self, cutoff: float) -> None:
        super().__init__()
        self.cutoff = float(cutoff)

    def forward(self, r: Tensor) -> Tensor:
        """φ(r) for distances ``r`` (Å), any shape."""
        return cutoff_terms(r, self.cutoff)[0]

    def extra_repr(self) -> str:
        return f"cutoff={self.cutoff}"


class GaussianSensitivity(nn.Module):
    r"""Trainable inverse-distance Gaussian sensitivities s^ν(r), ν = 1..ν_max.

    Initialisation (HIP-NN): centres evenly spaced in 1/r between 1/soft_max and
    1/soft_min, μ_ν⁻¹ = 1/soft_max + (ν − 1) Δ with Δ = (1/soft_min − 1/soft_max)/(ν_max − 1),
    and widths σ_ν⁻¹ = Δ/2, so that neighbouring Gaussians cross at e^{-1/2} of their peak.

    Args:
        n_sensitivities: number of functions ν_max.
        soft_min: inner soft distance in Å (largest centre in 1/r).
        soft_max: outer soft distance in Å (smallest centre in 1/r).
        cutoff: hard cutoff r_c in Å of the cosine envelope φ(r).
    """

    def __init__(self, n_sensitivities: int, soft_min: float, soft_max: float, cutoff: float) -> None:
        super().__init__()
        self.n_sensitivities = int(n_sensitivities)
        self.soft_min = float(soft_min)
        self.soft_max = float(soft_max)
        #: μ_ν in Å.
        self.mu = nn.Parameter(torch.empty(self.n_sensitivities))
        #: σ_ν in Å (σ_ν⁻¹ is the width in 1/r).
        self.sigma = nn.Parameter(torch.empty(self.n_sensitivities))
        self.cutoff = CosineCutoff(cutoff)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Centres evenly spaced in 1/r, widths half the spacing."""
        lo, hi = 1.0 / self.soft_max, 1.0 / self.soft_min
        inv_mu = torch.linspace(lo, hi, self.n_sensitivities, dtype=torch.float64)
        spacing = (hi - lo) / max(self.n_sensitivities - 1, 1)
        with torch.no_grad():
            self.mu.copy_(1.0 / inv_mu)
            self.sigma.fill_(2.0 / spacing)

    def forward(self, r: Tensor, env: tuple[Tensor, Tensor, Tensor] | None = None) -> Tensor:
        """Sensitivities of distances ``r`` (Å, any shape S); returns shape (*S, ν_max).
        ``env``: :func:`envelope` of ``r`` at this cutoff, when already computed."""
        return gaussian_sensitivity(r, self.mu, self.sigma, self.cutoff.cutoff, env)

    def extra_repr(self) -> str:
        return f"n_sensitivities={self.n_sensitivities}, soft_min={self.soft_min}, soft_max={self.soft_max}"
