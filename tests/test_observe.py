"""Observation operators, masks and the paper's schedule."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scoreda import observe


def test_operators_by_name_and_callable():
    x = jnp.array([-2.0, 0.0, 3.0])
    np.testing.assert_allclose(observe.operator("arctan")(x), np.arctan([-2.0, 0.0, 3.0]), rtol=1e-6)
    np.testing.assert_array_equal(observe.operator("identity")(x), x)
    square = lambda v: v**2
    assert observe.operator(square) is square
    with pytest.raises(ValueError, match="obs must be one of"):
        observe.operator("cubic")


def test_paper_schedule_is_15_observed_then_5_free_from_step_20():
    s = np.asarray(observe.cycle_schedule(2500, 15, 5, start=20))
    assert not s[:20].any()
    assert s[20:35].all() and not s[35:40].any() and s[40:55].all()
    # over the DA window 20..2499 exactly 3/4 of the steps are observed
    assert s.sum() == 2480 * 15 // 20


def test_random_masks_have_k_components_each_step_and_are_uniform():
    m = np.asarray(observe.random_masks(jax.random.key(0), 20_000, 20, 5))
    assert m.shape == (20_000, 20) and (m.sum(1) == 5).all()
    # each component is observed with probability k/d = 1/4: binomial std 0.003
    np.testing.assert_allclose(m.mean(0), 0.25, atol=0.015)
    # a new subset each step: consecutive steps rarely coincide (prob 1/C(20,5))
    assert (m[1:] == m[:-1]).all(1).mean() < 0.01


def test_fixed_mask_and_its_errors():
    m = observe.fixed_mask(6, [0, 2, 4])
    np.testing.assert_array_equal(m, [True, False, True, False, True, False])
    with pytest.raises(ValueError, match="indices selects 7 components"):
        observe.fixed_mask(6, range(7))
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 6\)"):
        observe.fixed_mask(6, [6])
    with pytest.raises(ValueError, match="k .* must be <= d=20"):
        observe.random_masks(jax.random.key(0), 5, 20, 21)


def test_observe_noise_statistics_and_masking():
    # y - arctan(x) on observed entries is N(0, sigma^2): check mean and std on 160k samples.
    truth = jax.random.normal(jax.random.key(1), (8000, 20)) * 3
    sched = observe.cycle_schedule(8000, 15, 5)
    masks = observe.random_masks(jax.random.key(2), 8000, 20, 5)
    o = observe.observe(jax.random.key(3), truth, "arctan", 0.01, mask=masks, schedule=sched)
    m = np.asarray(o.mask)
    resid = np.asarray(o.values - jnp.arctan(truth))[m]
    assert m.sum() == 6000 * 5
    assert abs(resid.mean()) < 4 * 0.01 / np.sqrt(resid.size)
    assert abs(resid.std() / 0.01 - 1) < 0.02
    assert (np.asarray(o.values)[~m] == 0).all()
    np.testing.assert_array_equal(o.observed, sched)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(truth=jnp.ones(5)), "truth must have shape"),
        (dict(truth=jnp.ones((4, 5)), mask=jnp.ones(6, bool)), "mask must have shape"),
        (dict(truth=jnp.ones((4, 5)), schedule=jnp.ones(3, bool)), "schedule must have shape"),
        (dict(truth=jnp.ones((4, 5)), std=-1.0), "std must be"),
        (dict(truth=jnp.full((4, 5), jnp.nan)), "truth must be finite"),
    ],
)
def test_observe_refuses_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        observe.observe(jax.random.key(0), **kwargs)


@pytest.mark.parametrize("name", sorted(observe.ELEMENTWISE))
def test_each_named_operator_carries_its_true_slope_inverse_and_trust_length(name):
    """The table's derivative is h' by automatic differentiation, its inverse undoes h on
    the range, and its trust length is |h'/h''| (None only for a linear h)."""
    op = observe.ELEMENTWISE[name]
    with jax.enable_x64():
        x = jnp.asarray(np.linspace(-6.0, 6.0, 241) + 0.013)  # avoids x = 0 exactly
        slope = jax.vmap(jax.grad(op.h))(x)
        bend = jax.vmap(jax.grad(jax.grad(op.h)))(x)
        np.testing.assert_allclose(op.slope(x), slope, rtol=1e-12)
        np.testing.assert_allclose(op.inverse(op.h(x)), x, rtol=1e-9)
        assert np.all(np.abs(op.h(x)) < op.bound)
        if op.trust_length is None:
            np.testing.assert_array_equal(bend, 0.0)
        else:
            np.testing.assert_allclose(op.trust_length(x), np.abs(slope / bend), rtol=1e-9)
    assert observe.OPERATORS[name] is op.h


def test_invert_clips_to_the_range_and_refuses_what_it_cannot_invert():
    y = jnp.array([-2.0, -1.0, 0.5, 1.6, 3.0])
    edge = np.pi / 2 - 0.05
    np.testing.assert_allclose(observe.invert("arctan", y, margin=0.05),
                               np.tan(np.clip(np.asarray(y), -edge, edge)), rtol=1e-6)
    np.testing.assert_array_equal(observe.invert("identity", y, margin=0.05), y)
    with pytest.raises(ValueError, match="obs must be one of"):
        observe.invert(jnp.arctan, y)
    with pytest.raises(ValueError, match="obs must be one of"):
        observe.elementwise("cubic")
    with pytest.raises(ValueError, match="margin"):
        observe.invert("arctan", y, margin=-0.1)
    with pytest.raises(ValueError, match="margin must be below"):  # the clip would invert
        observe.invert("arctan", y, margin=2.0)


def test_a_named_operator_is_a_key_of_the_table_and_nothing_else():
    assert all(observe.is_named(name) for name in observe.ELEMENTWISE)
    for other in ("cubic", "callable", jnp.arctan, None, ["arctan"], b"arctan"):
        assert not observe.is_named(other)
