"""A real-sampler parameter-recovery test small enough for CI (nutpie, about a minute).

A closed-form sweep is drawn from a known population (`simulate_from_model`, with its default
per-coefficient configuration residuals, spread 0.1); the fit must put every
population intercept and size slope inside its 94% posterior interval and recover the noise
scale. Larger recovery runs are in test_model_sampling.py (marked slow).
"""

import numpy as np
import pytest

from bayes_sd.coefs import COEFS, REF_DRAFTER_PARAMS, REF_TARGET_PARAMS, SLOPE_COEFS

# the tests that share the session fit run in one pytest-xdist worker (one fit, not two)
pytestmark = pytest.mark.xdist_group("small_fit")


@pytest.fixture(scope="module")
def recovered(small_fit):
    return small_fit


def _interval(draws):
    return np.quantile(draws, [0.03, 0.97])


def test_population_parameters_inside_their_94_percent_intervals(recovered):
    truth, model, post = recovered
    import arviz as az

    rhat = az.rhat(post[["intercept", "size_slope", "sigma"]]).to_array()
    assert float(rhat.max()) < 1.05
    assert model.diagnostics["divergences"] <= 5
    for c in COEFS:  # intercepts are at the reference sizes
        ref = REF_DRAFTER_PARAMS if c.endswith("d") else REF_TARGET_PARAMS
        true = truth.intercept[c] + truth.slope[c] * np.log(ref / 1e9)
        lo, hi = _interval(post["intercept"].sel(coef=c).values.ravel())
        assert lo <= true <= hi, (c, lo, true, hi)
    for c in SLOPE_COEFS:
        lo, hi = _interval(post["size_slope"].sel(slope_coef=c).values.ravel())
        assert lo <= truth.slope[c] <= hi, (c, lo, truth.slope[c], hi)
    # the target's cost per verified draft token, against the drafter's per draft position
    lo, hi = _interval(post["verify_share"].values.ravel())
    assert lo <= truth.verify_share <= hi, ("verify_share", lo, truth.verify_share, hi)
    # the noise is learnt, not left at its prior (HalfNormal(0.1) has median 0.067)
    lo, hi = _interval(post["sigma"].values.ravel())
    assert lo < truth.noise_sd < hi and hi < 0.05


def test_verification_cost_is_pinned_by_the_data(recovered):
    # not just "inside a wide interval": the best-identified coefficients are tight
    _, _, post = recovered
    for c in ("c1v", "c2v"):
        width = np.diff(_interval(post["intercept"].sel(coef=c).values.ravel()))[0]
        assert width < 0.5, (c, width)  # a factor of 1.65 end to end, against 9.8 a priori


def test_log_likelihood_and_predictive_groups_for_arviz(recovered, tmp_path):
    """az.loo and ArviZ's predictive checks work on a real fit, and the groups are saved."""
    import warnings

    import arviz as az

    from bayes_sd.model import LatencyModel

    _, model, _ = recovered
    model = LatencyModel.load(model.save(tmp_path / "m.nc"))  # the session fit stays as it is
    model.add_log_likelihood()
    model.add_posterior_predictive(random_seed=1)
    ll = model.idata["log_likelihood"].dataset["log_latency"]
    assert ll.shape[-1] == len(model.design.rows)
    pp = model.idata["posterior_predictive"].dataset["log_latency"]
    observed = model.idata["observed_data"].dataset["log_latency"]
    # the observed log latencies sit inside their predictive spread (2% noise)
    inside = (pp.quantile(0.01, ("chain", "draw")) <= observed) & (
        observed <= pp.quantile(0.99, ("chain", "draw"))
    )
    assert float(inside.mean()) > 0.9
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a few high Pareto k are allowed here
        loo = az.loo(model.idata)
    assert np.isfinite(loo.elpd) and loo.elpd > 0  # log densities of 2%-noise log latencies
    back = LatencyModel.load(model.save(tmp_path / "m2.nc"))
    np.testing.assert_array_equal(back.idata["log_likelihood"].dataset["log_latency"], ll)
