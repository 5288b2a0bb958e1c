r"""The transformed-observation LETKF: invert a saturating operator, then assimilate linearly.

An observation :math:`y = \arctan(x) + \varepsilon`, :math:`\varepsilon \sim N(0, \sigma^2)`,
is one of :math:`z = \tan y`. To first order in :math:`\varepsilon` (the delta method),

.. math::

    z = \tan(\arctan x + \varepsilon) \approx x + (1 + x^2)\,\varepsilon,
    \qquad \operatorname{std}(z \mid x) \approx \sigma\,(1 + z^2),

so :math:`z` is a linear observation of :math:`x` whose noise grows where :math:`\arctan`
saturates. This filter gives the LETKF :math:`z` with the component-wise standard deviation
:math:`\sigma (1 + z^2)` and the identity operator: the classical remedy for a saturating
observation besides iterating (:mod:`scoreda.filters.iterative`). An observation is used only
where :math:`\tan` is defined and smooth over the noise, :math:`|y| < \pi/2 - 3\sigma`
(elsewhere it is masked out). The first-order noise is an approximation: it is accurate where
:math:`\sigma (1 + x^2)\,|x| \ll 1` (for :math:`\sigma = 0.01`, :math:`|x| \lesssim 3`), and
beyond it :math:`z` is skewed, so this baseline is biased where the state is large.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from scoreda import _checks, observe
from scoreda.device import full_precision
from scoreda.filters import kalman

#: an observation within this many noise standard deviations of arctan's limit pi/2 is dropped
MARGIN_STDS = 3.0


def tan_observations(y, obs_std, mask=None):
    r"""``(z, std, mask)``: :math:`z = \tan y` ``(d,)``, its delta-method standard deviation
    :math:`\sigma (1 + z^2)` ``(d,)`` and the components where it is used (observed and
    :math:`|y| < \pi/2 - 3\sigma`)."""
    arctan = observe.ELEMENTWISE["arctan"]
    y = jnp.asarray(y)
    usable = jnp.abs(y) < arctan.bound - MARGIN_STDS * obs_std
    if mask is not None:
        usable = usable & jnp.asarray(mask, bool)
    z = arctan.inverse(jnp.where(usable, y, 0.0))
    std = obs_std * (1.0 + z * z)
    return z, std, usable


@full_precision
def letkf_tan(key, ensemble, y, obs_std, *, obs="arctan", mask=None, inflation=1.0, radius=4.0,
              distances=None):
    r"""LETKF on :math:`z = \tan y` with the delta-method noise (module docstring).

    Args:
      obs: must be ``"arctan"`` (the transform inverts it).
      obs_std: :math:`\sigma` of :math:`y`, one number > 0.

    Other arguments and shapes as :func:`scoreda.filters.kalman.letkf`.
    """
    if not (isinstance(obs, str) and obs == "arctan"):
        raise ValueError(f"letkf_tan inverts obs='arctan', got obs={obs!r}")
    _checks.positive("obs_std", obs_std)
    _checks.observation_shapes(y, mask, np.shape(ensemble)[-1])
    z, std, usable = tan_observations(y, obs_std, mask)
    return kalman.letkf(key, ensemble, z, std, obs="identity", mask=usable, inflation=inflation,
                        radius=radius, distances=distances)
