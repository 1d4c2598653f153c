"""The latency algebra: known values, identities under property tests, PyTensor parity."""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bayes_sd import latency as L

pos = st.floats(1e-4, 10.0, allow_nan=False)
small = st.floats(1e-6, 0.05, allow_nan=False)
alphas = st.floats(0.0, 1.0, allow_nan=False)
ks = st.integers(0, 10)


PAPER_ORDER = ("c1p", "c2p", "c1v", "c2v", "c1d", "c2d", "c1s", "c2s")


def paper(values):
    """Coefficients from values in the paper's order: the published six, then the premium."""
    return L.Coefficients(**dict(zip(PAPER_ORDER, values, strict=False)))


def six(c1p, c2p, c1v, c2v, c1d, c2d, **premium):
    """The published six coefficients in the paper's order (and the premium by keyword)."""
    return L.Coefficients(c1p=c1p, c2p=c2p, c1v=c1v, c2v=c2v, c1d=c1d, c2d=c2d, **premium)


def coefs_strategy():
    return st.builds(six, small, small, small, small, small, small, c1s=small, c2s=small)


# ---------------------------------------------------------------- acceptance


def test_tokens_per_cycle_known_values():
    np.testing.assert_allclose(L.tokens_per_cycle([0.0, 0.5, 1.0], 3), [1.0, 1.875, 4.0])
    assert L.tokens_per_cycle(0.7, 0) == pytest.approx(1.0)


@given(alphas, ks)
def test_tokens_per_cycle_matches_sum_of_powers(alpha, k):
    # E = Σ_{i=0..k} α^i, the direct definition, including near α = 1
    direct = sum(alpha**i for i in range(k + 1))
    assert L.tokens_per_cycle(alpha, k) == pytest.approx(direct, rel=1e-9, abs=1e-9)


@given(alphas, st.integers(1, 10))
def test_positional_reduces_to_iid(alpha, k):
    rates = np.full(k, alpha)
    assert L.tokens_per_cycle_positional(rates) == pytest.approx(
        float(L.tokens_per_cycle(alpha, k)), rel=1e-9
    )
    # vLLM's unconditional per-position rates of an i.i.d. process are α^(i+1)
    uncond = alpha ** np.arange(1, k + 1)
    assert L.tokens_per_cycle_positional(uncond, conditional=False) == pytest.approx(
        float(L.tokens_per_cycle(alpha, k)), rel=1e-9
    )


@given(st.floats(0.01, 0.99), st.integers(1, 8))
def test_alpha_inverse_and_acceptance_rate(alpha, k):
    tokens = L.tokens_per_cycle(alpha, k)
    assert L.alpha_from_tokens_per_cycle(tokens, k) == pytest.approx(alpha, abs=1e-9)
    rate = L.acceptance_rate(tokens, k)
    assert L.tokens_per_cycle_from_rate(rate, k) == pytest.approx(float(tokens))


def test_domain_errors():
    with pytest.raises(ValueError, match="alpha"):
        L.tokens_per_cycle(1.2, 3)
    with pytest.raises(ValueError, match="rate"):
        L.open_loop_latency(1.0, 0.1, -1.0)
    with pytest.raises(ValueError, match="<= k"):
        L.alpha_from_tokens_per_cycle(5.0, 3)
    assert np.isnan(L.alpha_from_tokens_per_cycle(1.0, 0))


# ---------------------------------------------------------------- latency and speedup


def test_open_loop_saturation_is_infinite_never_negative():
    lat = L.open_loop_latency(2.0, 0.1, np.array([0.0, 5.0, 9.99, 10.0, 50.0]))
    assert lat[0] == 2.0 and lat[1] == pytest.approx(4.0)
    assert np.all(np.isinf(lat[3:])) and np.all(lat > 0)


@given(coefs_strategy(), st.integers(1, 8), st.floats(0.0, 1.0), st.floats(16, 2048),
       st.floats(0.0, 0.999))  # fmt: skip
def test_speedup_formula_equals_ratio_of_latencies(coefs, k, alpha, decode, frac):
    c1b, c2b = L.demand(coefs, 0, 1.0, decode)
    c1s, c2s = L.demand(coefs, k, L.tokens_per_cycle(alpha, k), decode)
    rate = frac / max(c2b, c2s)  # both systems stable
    ratio = L.open_loop_latency(c1b, c2b, rate) / L.open_loop_latency(c1s, c2s, rate)
    formula = L.speedup_from_ratios(c1s / c1b, c2s / c2b, rate * c2b)
    assert formula == pytest.approx(float(ratio), rel=1e-9)
    assert L.speedup(c1b, c2b, c1s, c2s, rate) == pytest.approx(float(ratio), rel=1e-12)


@given(coefs_strategy(), st.floats(0.0, 1.0), st.floats(16, 2048), st.floats(0.0, 0.99))
def test_k0_reduces_to_baseline(coefs, alpha, decode, frac):
    # k = 0 pays neither drafting nor the multi-token verification premium
    c1, c2 = L.demand(coefs, 0, L.tokens_per_cycle(alpha, 0), decode)
    assert c1 == pytest.approx(coefs.c1p + decode * coefs.c1v)
    assert c2 == pytest.approx(coefs.c2p + decode * coefs.c2v)
    rate = frac / c2
    assert L.speedup(c1, c2, c1, c2, rate) == pytest.approx(1.0)
    assert L.speedup_from_ratios(1.0, 1.0, rate * c2) == pytest.approx(1.0)


@given(st.floats(0.05, 0.95), st.floats(1.05, 5.0), st.floats(0.1, 10), st.floats(1e-3, 1.0))
def test_break_even_speedup_is_one(c1r, c2r, c1b, c2b):
    lam = L.break_even_rate(c1b, c2b, c1r * c1b, c2r * c2b)
    assert 0 < lam < 1 / c2b
    assert L.speedup(c1b, c2b, c1r * c1b, c2r * c2b, lam) == pytest.approx(1.0, rel=1e-8)
    # SD wins below the break-even load and loses above it
    assert L.speedup(c1b, c2b, c1r * c1b, c2r * c2b, 0.5 * lam) > 1
    assert L.speedup(c1b, c2b, c1r * c1b, c2r * c2b, lam + 0.5 * (1 / (c2r * c2b) - lam)) < 1


def test_break_even_without_crossing():
    assert L.break_even_rate(1.0, 0.1, 0.5, 0.08) == np.inf  # SD wins everywhere
    assert L.break_even_rate(1.0, 0.1, 1.2, 0.15) == 0.0  # SD never wins


def test_saturation_and_slo_inverse():
    assert L.saturation_rate(0.25) == 4.0
    assert L.sustainable_rate_ratio(0.1, 0.2) == pytest.approx(0.5)
    rate = L.max_rate_under_slo(1.0, 0.1, 2.0)
    assert L.open_loop_latency(1.0, 0.1, rate) == pytest.approx(2.0)
    assert L.max_rate_under_slo(3.0, 0.1, 2.0) == 0.0


@given(small, small, st.floats(1, 512))
def test_closed_loop(c1, c2, n):
    assert L.closed_loop_latency(c1, c2, n) == pytest.approx(c1 + n * c2)
    assert L.closed_loop_throughput(c1, c2, n) * L.closed_loop_latency(c1, c2, n) == (
        pytest.approx(n)
    )


def test_closed_loop_speedup_tends_to_inverse_c2r():
    s = L.closed_loop_speedup(2.0, 0.01, 1.0, 0.02, 1e9)
    assert s == pytest.approx(0.5, rel=1e-6)


def test_vectorised_over_draws():
    draws = np.random.default_rng(0).uniform(0.001, 0.01, size=(4, 100, 1))
    rates = np.linspace(0, 20, 7)
    out = L.open_loop_latency(draws * 100, draws, rates)
    assert out.shape == (4, 100, 7)


# ---------------------------------------------------------------- MoE


@given(st.floats(0, 1e4), st.integers(2, 256), st.integers(1, 8))
def test_coverage_limits(tokens, experts, m):
    m = min(m, experts - 1)
    phi = L.expert_coverage(tokens, experts, m)
    assert 0.0 <= phi <= 1.0
    assert L.expert_coverage(0.0, experts, m) == 0.0
    assert L.expert_coverage(1.0, experts, m) == pytest.approx(m / experts)
    assert L.expert_coverage(tokens + 1.0, experts, m) >= phi
    assert L.expert_coverage(1e7, experts, m) == pytest.approx(1.0)


def moe_coefs():
    unsat = six(0.02, 0.001, 0.004, 0.0001, 0.0004, 0.00005)
    incr = six(0.0, 0.0, 0.012, 0.0002, 0.0, 0.0)
    return unsat, incr


def test_moe_latency_solves_the_fixed_point():
    unsat, incr = moe_coefs()
    k, tokens, decode, prefill = 2, 2.4, 256, 512
    rates = np.array([0.0, 0.5, 2.0, 5.0, 8.0])
    lat = L.moe_open_loop_latency(unsat, incr, k, tokens, decode, rates, 64, 8, prefill)
    c1, c2 = L.moe_demand(unsat, incr, k, tokens, decode, rates * lat, 64, 8, prefill)
    np.testing.assert_allclose(c1 + rates * lat * c2, lat, rtol=1e-9)
    assert np.all(np.diff(lat) > 0)
    beyond = L.moe_saturation_rate(unsat, incr, k, tokens, decode) * 1.01
    assert np.isinf(L.moe_open_loop_latency(unsat, incr, k, tokens, decode, beyond, 64, 8, 512))


def test_moe_latency_solves_each_element_whatever_the_others_scale():
    """Regression: the bisection stopped when the widest bracket was small *relative to the
    largest latency of the array*, leaving short latencies up to 20% off their fixed point
    when solved together with long ones (as posterior draws of many systems are)."""
    rng = np.random.default_rng(0)
    n = 400
    unsat = paper(rng.lognormal(-5, 1, size=(8, n)))
    scale = rng.uniform(0, 5, size=(8, n))
    scale[4:6] = 0.0  # c1d, c2d: a dense drafter
    incr = paper(
        c * f for c, f in zip((getattr(unsat, c) for c in PAPER_ORDER), scale, strict=True)
    )
    k = rng.integers(0, 5, n).astype(float)
    tokens, rates = 1 + 0.7 * k, rng.uniform(0, 1, n)
    lat = L.moe_open_loop_latency(unsat, incr, k, tokens, 256, rates, 64, 8, 512)
    ok = np.isfinite(lat)
    assert 50 < ok.sum() < n and lat[ok].max() / lat[ok].min() > 1e3
    c1, c2 = L.moe_demand(unsat, incr, k, tokens, 256, rates * lat, 64, 8, 512)
    np.testing.assert_allclose((c1 + rates * lat * c2)[ok], lat[ok], rtol=1e-11)
    one = [i for i in np.flatnonzero(ok)[:20]]
    alone = [
        L.moe_open_loop_latency(
            L.Coefficients.from_values(c[i] for c in unsat),
            L.Coefficients.from_values(c[i] for c in incr),
            k[i], tokens[i], 256, rates[i], 64, 8, 512,
        )
        for i in one
    ]  # fmt: skip
    np.testing.assert_allclose(lat[one], alone, rtol=1e-11)


def test_moe_with_zero_increment_equals_dense():
    unsat, _ = moe_coefs()
    zero = L.Coefficients.from_values([0.0] * 8)
    rates = np.array([0.0, 1.0, 3.0])
    moe = L.moe_open_loop_latency(unsat, zero, 3, 2.5, 256, rates, 64, 8, 512)
    dense = L.open_loop_latency(*L.demand(unsat, 3, 2.5, 256), rates)
    np.testing.assert_allclose(moe, dense, rtol=1e-9)


def test_moe_coverage_raises_latency_at_load():
    unsat, incr = moe_coefs()
    low = L.moe_closed_loop_latency(unsat, incr, 0, 1.0, 256, 1, 128, 8, 512)
    high = L.moe_closed_loop_latency(unsat, incr, 0, 1.0, 256, 64, 128, 8, 512)
    c1_full, c2_full = L.demand(
        L.Coefficients.from_values(u + s for u, s in zip(unsat, incr, strict=True)), 0, 1, 256
    )
    # at one request most experts are idle; at 64 almost all are read
    assert low < c1_full + c2_full
    assert high == pytest.approx(c1_full + 64 * c2_full, rel=0.02)  # φ(64) = 0.984


# ---------------------------------------------------------------- PyTensor parity


def test_pytensor_matches_numpy_and_has_finite_gradient():
    a = pt.dvector("alpha")
    lam = pt.dscalar("rate")
    coefs = six(0.02, 0.001, 0.007, 0.0002, 0.0004, 0.0001)
    tokens = L.tokens_per_cycle(a, 3)
    c1, c2 = L.demand(coefs, 3, tokens, 256)
    lat = L.open_loop_latency(c1, c2, lam)
    brk = L.break_even_rate(*L.demand(coefs, 0, 1.0, 256), c1, c2)
    grad = pytensor.grad(lat.sum(), a)
    f = pytensor.function([a, lam], [lat, brk, grad])
    alpha = np.array([0.5, 0.8, 1.0])
    got_lat, got_brk, got_grad = f(alpha, 2.0)
    np_c1, np_c2 = L.demand(coefs, 3, L.tokens_per_cycle(alpha, 3), 256)
    np.testing.assert_allclose(got_lat, L.open_loop_latency(np_c1, np_c2, 2.0), rtol=1e-12)
    np.testing.assert_allclose(
        got_brk, L.break_even_rate(*L.demand(coefs, 0, 1.0, 256), np_c1, np_c2), rtol=1e-12
    )
    assert np.all(np.isfinite(got_grad)) and np.all(got_grad < 0)  # more acceptance, less latency
    sat_lat, _, _ = f(alpha, 1e4)
    assert np.all(np.isinf(sat_lat))


def test_pytensor_moe_demand_and_coverage():
    b = pt.dscalar("batch")
    unsat, incr = moe_coefs()
    c1, c2 = L.moe_demand(unsat, incr, 2, 2.4, 256, b, 64, 8, 512)
    f = pytensor.function([b], [c1, c2])
    for batch in (0.5, 4.0, 32.0):
        np.testing.assert_allclose(
            f(batch), L.moe_demand(unsat, incr, 2, 2.4, 256, batch, 64, 8, 512), rtol=1e-12
        )


@pytest.fixture(scope="module")
def tokens_fn():
    a = pt.dscalar("a")
    return pytensor.function([a], L.tokens_per_cycle(a, 4))


@settings(max_examples=25)
@given(alpha=st.floats(0.0, 1.0))
def test_pytensor_tokens_per_cycle_near_one(tokens_fn, alpha):
    f = tokens_fn
    assert float(f(alpha)) == pytest.approx(float(L.tokens_per_cycle(alpha, 4)), rel=1e-12)


@settings(max_examples=30)
@given(st.floats(0.05, 0.9), st.integers(0, 5), st.floats(0.0, 0.05))
def test_moe_solver_finds_the_least_root(frac, k, s1v):
    unsat = six(0.02, 0.001, 0.004, 0.0001, 0.0004, 0.00005)
    incr = six(0.0, 0.0, s1v, 0.0002, 0.0, 0.0)
    tokens = float(L.tokens_per_cycle(0.7, k))
    rate = frac * L.moe_saturation_rate(unsat, incr, k, tokens, 256)
    solved = L.moe_open_loop_latency(unsat, incr, k, tokens, 256, rate, 64, 8, 512)
    # plain fixed-point iteration from zero rises monotonically to the least root
    lat = 0.0
    for _ in range(20_000):
        c1, c2 = L.moe_demand(unsat, incr, k, tokens, 256, rate * lat, 64, 8, 512)
        new = float(c1 + rate * lat * c2)
        if abs(new - lat) < 1e-13:
            break
        lat = new
    assert solved == pytest.approx(lat, rel=1e-7)


def test_verification_premium_is_paid_only_with_drafts():
    coefs = six(0.02, 0.001, 0.007, 0.0002, 0.0004, 0.0001, c1s=0.001, c2s=0.00005)
    plain = coefs._replace(c1s=0.0, c2s=0.0)
    assert L.demand(coefs, 0, 1.0, 256) == L.demand(plain, 0, 1.0, 256)
    c1, c2 = L.demand(coefs, 3, 2.5, 256)
    p1, p2 = L.demand(plain, 3, 2.5, 256)
    assert c1 - p1 == pytest.approx(256 / 2.5 * 0.001)
    assert c2 - p2 == pytest.approx(256 / 2.5 * 0.00005)


def test_each_verified_draft_token_costs_a_share_of_the_one_token_pass():
    """``verify_share`` η: the per-request cycle term is ``c2v (1 + η k) + [k>0] c2s + k c2d``
    — for a dense target the same as a drafter ``η c2v`` dearer per position; nothing at
    k = 0; the MoE verification increment takes it at the verification coverage; the step
    terms (the phases' law) and the mean law agree."""
    from bayes_sd import phases

    coefs = six(0.02, 0.001, 0.007, 0.0002, 0.0004, 0.00001, c1s=0.001, c2s=0.00005)
    eta = 0.4
    assert L.demand(coefs, 0, 1.0, 256, verify_share=eta) == L.demand(coefs, 0, 1.0, 256)
    dearer = coefs._replace(c2d=coefs.c2d + eta * coefs.c2v)
    for k in (1, 3, 7):
        np.testing.assert_allclose(L.demand(coefs, k, 2.5, 256, verify_share=eta),
                                   L.demand(dearer, k, 2.5, 256), rtol=1e-12)  # fmt: skip
        terms = phases.step_terms(coefs, None, k, verify_share=eta)
        assert terms.t2 == pytest.approx(0.0002 * (1 + eta * k) + 0.00005 + k * 0.00001)
        assert terms.t1 == phases.step_terms(coefs, None, k).t1  # level 1 untouched
    incr = six(0.01, 0.0005, 0.005, 0.0001, 0.0, 0.0)
    with_eta = phases.step_terms(coefs, incr, 3, verify_share=eta)
    assert with_eta.gv2 == pytest.approx(0.0001 * (1 + eta * 3))
    assert with_eta.gd2 == phases.step_terms(coefs, incr, 3).gd2
    # the MoE mean law: η on the verification increment too (at φ_v), checked by its demand
    _, c2 = L.moe_demand(coefs, incr, 3, 2.5, 256, 16.0, 64, 8, 512, verify_share=eta)
    phi_v = float(L.expert_coverage(16.0 * 4, 64, 8))
    _, plain = L.moe_demand(coefs, incr, 3, 2.5, 256, 16.0, 64, 8, 512)
    extra = 256 / 2.5 * eta * 3 * (0.0002 + phi_v * 0.0001)
    assert c2 - plain == pytest.approx(extra)
    with pytest.raises(ValueError, match="verify_share"):
        L.demand(coefs, 3, 2.5, 256, verify_share=-0.1)


def test_a_closed_loop_benchmarks_opening_wave_adds_to_ttft_and_e2e_not_tpot():
    """A client that starts N requests at once queues their prompts for prefill together:
    a share f = N / requests of the run waits κ B A2 longer for its first token (and so for its
    last); 0 in an open loop, at an unknown request count and in the steady state."""
    from bayes_sd import laws, phases
    from bayes_sd.coefs import Coefficients

    coefs = Coefficients(c1p=0.03, c2p=0.002, c1v=0.007, c2v=2e-4, c1s=1e-4, c2s=1e-5,
                         c1d=4e-4, c2d=3e-6)  # fmt: skip
    terms = phases.step_terms(coefs, None, 0.0)
    common = dict(k=0.0, tokens=1.0, decode_len=256.0, concurrency=64.0)
    steady = phases.closed_loop_phases(terms, **common)
    f = laws.opening_fraction(False, 64.0, 384.0)
    assert f == pytest.approx(1 / 6)
    burst = phases.closed_loop_phases(terms, opening=f * 0.7, **common)
    extra = f * 0.7 * 64.0 * 0.002  # f κ B A2 (A2 = c2p)
    assert burst["ttft"] - steady["ttft"] == pytest.approx(extra)
    assert burst["latency"] - steady["latency"] == pytest.approx(extra)
    assert burst["tpot"] == pytest.approx(steady["tpot"])
    assert laws.opening_fraction([True, False, False, False], 64.0,
                                 [384.0, np.nan, 0.0, 10.0]).tolist() == [0, 0, 0, 1]  # fmt: skip


def test_the_opening_wave_sets_the_top_percentiles_of_a_closed_loop_run():
    """The wave's requests (a share f of the run) wait a uniform share of its span W on top of
    the steady state: sampled requests of such a run have the p50, p90 and p99 the tail law
    with the wave gives (within sampling and the additive approximation), the wave's mean part
    f W / 2 in the mean; NumPy and PyTensor alike; no wave, no change."""
    from bayes_sd import laws

    rng = np.random.default_rng(3)
    n, f, width = 400_000, 0.1, 6.0  # e.g. 64 prompts in flight at 0.09 s each
    steady = rng.lognormal(np.log(0.2), 0.4, size=n)
    in_wave = rng.random(n) < f
    ttft = steady + in_wave * rng.uniform(0.0, width, size=n)
    mean = ttft.mean()
    share = f * width / 2 / mean  # the wave's part of the mean
    # the steady state's log ratios to its own mean
    steady_ratios = [np.log(np.quantile(steady, q) / steady.mean()) for q in laws.TAIL_LEVELS]
    ratios = laws.wave_log_ratios(steady_ratios, share, f)
    measured = np.quantile(ttft, laws.TAIL_LEVELS)
    law = mean * np.exp(ratios)
    np.testing.assert_allclose(law[[0, 2]], measured[[0, 2]], rtol=0.08)  # p50 and p99
    # at q = 1 − f (p90 here) the law gives the steady state's, the mixture's is higher (the
    # wave's shortest waits): a fitted steady tail absorbs it (laws: "The opening wave")
    assert np.quantile(steady, 0.9) * 0.95 < law[1] < measured[1]
    assert measured[2] > 20 * measured[0]  # the wave owns the p99
    tensor = laws.wave_log_ratios([pt.as_tensor_variable(r) for r in steady_ratios],
                                  pt.as_tensor_variable(share), f)  # fmt: skip
    np.testing.assert_allclose([t.eval() for t in tensor], ratios)
    unchanged = laws.wave_log_ratios(steady_ratios, 0.0, np.array([0.0, 0.1]))
    np.testing.assert_allclose(np.stack(unchanged), np.stack([steady_ratios] * 2).T)
    assert laws.wave_position(0.99, [0.1, 0.0, 1.0]).tolist() == pytest.approx([18.0, 0.0, 1.98])
