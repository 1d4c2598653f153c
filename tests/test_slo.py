"""The SLO language: every form users write parses to the same terms; a bad term is an error
that names it."""

import numpy as np
import pytest

from bayes_sd.slo import Term, parse_slo, statistic_draws

P99_TTFT_2S = Term("ttft", "p99", 2.0)
P90_TPOT_40MS = Term("tpot", "p90", 0.04)


@pytest.mark.parametrize(
    "spec",
    [
        "p99_ttft_ms<=2000,p90_tpot_ms<=40",
        "p99_ttft_s<=2, p90_tpot_ms<40",
        '{"p99_ttft_ms": "<=2000", "p90_tpot_ms": "<=40"}',
        '[{"p99_ttft_ms": "<=2000", "p90_tpot_ms": "<=40"}]',
        "{ttft: {p99: 2s}, tpot: {p90: 40ms}}",
        "ttft:\n  p99: 2000\ntpot:\n  p90: 40\n",
        "sla: {ttft: {p99: {le: 2000}}, tpot: {p90: {le: 40}}}",
        {"ttft": {"p99": "2s"}, "tpot": {"p90": 40}},
    ],
)
def test_every_form_gives_the_same_terms(spec):
    assert parse_slo(spec) == [P99_TTFT_2S, P90_TPOT_40MS]


def test_goodput_form_is_milliseconds_planned_at_the_attainment_percentile():
    assert parse_slo("ttft:300 tpot:50") == [Term("ttft", "p90", 0.3), Term("tpot", "p90", 0.05)]
    assert parse_slo("e2el:2000", attainment=0.99) == [Term("latency", "p99", 2.0)]


def test_a_bare_duration_is_mean_e2e_and_median_is_p50():
    assert parse_slo("3s") == parse_slo("3") == parse_slo(3.0) == [Term("latency", "mean", 3.0)]
    assert parse_slo("1500ms") == [Term("latency", "mean", 1.5)]
    assert parse_slo("median_ttft_ms<=100") == [Term("ttft", "p50", 0.1)]
    # the same objective twice: the stricter holds
    assert parse_slo("p99_ttft_ms<=2000,p99_ttft_ms<=1000") == [Term("ttft", "p99", 1.0)]


@pytest.mark.parametrize(
    ("spec", "named"),
    [
        ("p99_itl_ms<=5", "p99_itl_ms<=5"),
        ("p99.9_ttft_ms<=5", "p99.9_ttft_ms<=5"),
        ("p99_ttft_ms<=-1", "p99_ttft_ms<=-1"),
        ("p99_ttft_ms<=nan", "p99_ttft_ms<=nan"),
        ("p99_ttft_ms<=1e400", "p99_ttft_ms<=1e400"),
        ("p99_ttft_ms>=5", "p99_ttft_ms>=5"),
        ("p99_foo_ms<=3", "p99_foo_ms<=3"),
        ("ttft:abc", "ttft:abc"),
        ("{ttft: 3}", "'ttft'"),
        ("{ttft: {p99: true}}", "ttft.p99"),
        ("{ttft: {p99: {ge: 3}}}", "ttft.p99"),
        ("p99_ttft_ms<=5,,p90_tpot_ms<=4", "empty term"),
        ("hello", "hello"),
        ("", "empty"),
    ],
)
def test_a_bad_term_is_an_error_naming_it(spec, named):
    with pytest.raises(ValueError, match=None) as err:
        parse_slo(spec)
    assert named in str(err.value)


def test_a_percentile_between_the_modelled_ones_is_interpolated():
    rng = np.random.default_rng(0)
    p50 = rng.uniform(1, 2, 100)
    draws = {"ttft_p50": p50, "ttft_p90": 2 * p50, "ttft_p99": 4 * p50, "ttft": 1.2 * p50}
    assert np.allclose(statistic_draws(draws, Term("ttft", "p90", 1.0)), 2 * p50)
    p95 = statistic_draws(draws, Term("ttft", "p95", 1.0))
    assert np.all((p95 > 2 * p50) & (p95 < 4 * p50))
    p75 = statistic_draws(draws, Term("ttft", "p75", 1.0))
    assert np.all((p75 > p50) & (p75 < 2 * p50))
    assert np.allclose(statistic_draws(draws, Term("ttft", "mean", 1.0)), 1.2 * p50)


def test_fraction_within_inverts_the_percentiles():
    from bayes_sd.slo import fraction_within

    rng = np.random.default_rng(1)
    p50 = rng.uniform(0.1, 1.0, 50)
    draws = {"ttft_p50": p50, "ttft_p90": 3 * p50, "ttft_p99": 10 * p50}
    for level, factor in ((0.5, 1), (0.9, 3), (0.99, 10)):
        got = np.array([fraction_within({k: v[[i]] for k, v in draws.items()}, "ttft",
                                        factor * p50[i]) for i in range(50)]).ravel()  # fmt: skip
        np.testing.assert_allclose(got, level, atol=1e-9)
    # monotone in the threshold, in [0, 1], beyond p99 towards 1 and below p50 towards 0
    t = np.geomspace(1e-4, 1e4, 200)
    one = {k: np.full(200, v[0]) for k, v in draws.items()}
    f = fraction_within(one, "ttft", t)
    assert np.all(np.diff(f) >= 0) and f[0] < 1e-3 and f[-1] > 1 - 1e-6
    # the interpolated p95 lies where the fraction is 0.95
    p95 = statistic_draws(draws, Term("ttft", "p95", 1.0))
    np.testing.assert_allclose(fraction_within(draws, "ttft", p95), 0.95, atol=1e-9)
