"""Fault models: exact BER statistics, uniform positions, nesting, replay and common random numbers."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np
import pytest
from scipy import stats

from resbench import plugins
from resbench.engine.faults import (
    BernoulliFaults,
    CountFaults,
    FaultModel,
    FaultModelOptions,
    FaultSites,
    LegacyCountFaults,
    resolve_fault_model,
)
from resbench.engine.faultspace import FaultSpaceLayout
from resbench.engine.formats import Float32
from resbench.errors import UsageError

FP32_FIELDS = Float32().bit_fields()
ALPHA = 1e-3  # fixed seeds make every test deterministic; ALPHA only guards the choice of seeds


@pytest.fixture
def engine_registries(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Registries filled by the fault-engine plugins alone, through the real plugin manager."""
    monkeypatch.setattr(plugins, "BUILTIN_PLUGINS", ("resbench.engine.formats", "resbench.engine.faults"))
    plugins.reset_registries()
    yield
    plugins.reset_registries()


def layout(*numels: int, bits: int = 32) -> FaultSpaceLayout:
    fields = FP32_FIELDS if bits == 32 else {}
    return FaultSpaceLayout(tuple(f"t{i}" for i in range(len(numels))), numels, bits, fields)


def pairs(sites: FaultSites) -> set[tuple[int, int]]:
    return set(zip(sites.elements.tolist(), sites.bits.tolist(), strict=True))


def binomial_fit(counts: np.ndarray, n: int, p: float) -> float:
    """Chi-square p-value of ``counts`` against Binomial(n, p), on bins of about 10% probability each."""
    dist = stats.binom(n, p)
    cuts = np.unique(dist.ppf(np.linspace(0.1, 0.9, 9)))
    probabilities = np.diff(np.concatenate(([0.0], dist.cdf(cuts), [1.0])))
    observed = np.bincount(np.searchsorted(cuts, counts, side="left"), minlength=cuts.size + 1)
    return float(stats.chisquare(observed, probabilities * counts.size).pvalue)


def counts_over_seeds(model: FaultModel, space: FaultSpaceLayout, bers: list[float], trials: int) -> np.ndarray:
    return np.array([[s.num_flips for s in model.sample(space, bers, seed)] for seed in range(trials)])


@pytest.mark.parametrize(
    ("numels", "bers"),
    [
        ((1_000_000_000, 93_750_000), [2e-10, 1e-9]),  # 3.5e10 bits, about 35 flips at 1e-9
        ((300_000, 12_500), [1e-6, 1e-5]),  # 1e7 bits
        ((25, 6), [0.05, 0.3]),  # 992 bits: Binomial, visibly not Poisson (variance 208 vs 298)
    ],
)
def test_flip_counts_follow_the_binomial(numels: tuple[int, ...], bers: list[float]) -> None:
    space = layout(*numels)
    counts = counts_over_seeds(BernoulliFaults(), space, bers, trials=1500)
    for column, ber in enumerate(bers):
        assert binomial_fit(counts[:, column], space.total_bits, ber) > ALPHA, ber


def test_flip_counts_are_exact_at_ber_1e_minus_12() -> None:
    space = layout(125_000_000_000)  # 4e12 bits: 4 flips expected at 1e-12
    counts = counts_over_seeds(BernoulliFaults(), space, [1e-12], trials=1500)[:, 0]
    assert binomial_fit(counts, space.total_bits, 1e-12) > ALPHA
    assert abs(counts.mean() - 4.0) < 0.25


def test_poisson_counts_would_fail_the_binomial_fit() -> None:
    """The fit has the power to tell Binomial(992, 0.3) from Poisson(297.6): the test above means it."""
    poisson = np.random.default_rng(0).poisson(992 * 0.3, size=1500)
    assert binomial_fit(poisson, 992, 0.3) < ALPHA


def test_positions_are_uniform_over_bits_elements_and_tensors() -> None:
    space = layout(2_000, 6_000, 12_000)
    per_bit = np.zeros(32, dtype=np.int64)
    per_tensor = np.zeros(3, dtype=np.int64)
    per_element_bin = np.zeros(20, dtype=np.int64)
    for seed in range(60):
        sites = BernoulliFaults().sample(space, [1e-3], seed)[0]
        record = sites.record()
        per_bit += record.per_bit
        per_tensor += [record.per_tensor.get(name, 0) for name in space.names]
        per_element_bin += np.bincount(sites.elements * 20 // space.total_elements, minlength=20)
    assert stats.chisquare(per_bit).pvalue > ALPHA
    assert stats.chisquare(per_element_bin).pvalue > ALPHA
    expected = np.array(space.numels) / space.total_elements * per_tensor.sum()
    assert stats.chisquare(per_tensor, expected).pvalue > ALPHA


def test_sites_are_distinct_sorted_and_in_range() -> None:
    space = layout(50_000, 7)
    for model in (BernoulliFaults(), CountFaults()):
        sites = model.sample(space, [1e-2], 3)[0]
        assert len(pairs(sites)) == sites.num_flips
        assert np.all(np.diff(sites.elements) >= 0)
        assert sites.elements.min() >= 0 and sites.elements.max() < space.total_elements
        assert sites.bits.min() >= 0 and sites.bits.max() < 32


@pytest.mark.parametrize(
    "model",
    [BernoulliFaults(), BernoulliFaults(kind="stuck-at-1"), CountFaults(), LegacyCountFaults()],
    ids=lambda m: m.name,
)
def test_nested_sets_are_subsets(model: FaultModel) -> None:
    bers = [1e-6, 1e-5, 3e-5, 1e-4, 1e-3]
    sweep = model.sample(layout(100_000, 3_000), bers, seed=11)
    assert [s.ber for s in sweep] == bers
    for lower, higher in itertools.pairwise(sweep):
        assert pairs(lower) <= pairs(higher)
        assert lower.num_flips <= higher.num_flips
    assert sweep[0].num_flips > 0


def test_thinned_lower_ber_counts_are_binomial_too() -> None:
    space = layout(200_000)
    counts = counts_over_seeds(BernoulliFaults(), space, [2e-6, 5e-5], trials=1500)[:, 0]
    assert binomial_fit(counts, space.total_bits, 2e-6) > ALPHA


@pytest.mark.parametrize(
    "model",
    [BernoulliFaults(), BernoulliFaults(kind="stuck-at-0"), CountFaults(), LegacyCountFaults()],
    ids=lambda m: m.name,
)
def test_the_same_seed_replays_the_same_sites(model: FaultModel) -> None:
    space = layout(40_000, 500)
    first = model.sample(space, [1e-4, 1e-3], seed=7)
    again = model.sample(space, [1e-4, 1e-3], seed=7)
    other = model.sample(space, [1e-4, 1e-3], seed=8)
    for a, b in zip(first, again, strict=True):
        assert np.array_equal(a.elements, b.elements) and np.array_equal(a.bits, b.bits)
    assert pairs(first[1]) != pairs(other[1])


@pytest.mark.parametrize(
    "model",
    [
        BernoulliFaults(),
        BernoulliFaults(kind="stuck-at-1"),
        BernoulliFaults(FaultModelOptions(bits=("sign", "exponent"))),
        LegacyCountFaults(),
    ],
    ids=lambda m: f"{m.name}{m.options.bits}",
)
def test_methods_sharing_tensors_see_the_same_sites(model: FaultModel) -> None:
    """A method that adds stored bounds after the model tensors must not move the faults in them."""
    unprotected = layout(400_000, 20_000)
    protected = layout(400_000, 20_000, 64, 3_000)
    shared = unprotected.total_elements
    for seed in range(5):
        plain = model.sample(unprotected, [1e-5, 1e-4], seed)
        bounded = model.sample(protected, [1e-5, 1e-4], seed)
        for a, b in zip(plain, bounded, strict=True):
            in_prefix = b.elements < shared
            assert np.array_equal(a.elements, b.elements[in_prefix])
            assert np.array_equal(a.bits, b.bits[in_prefix])
            assert a.num_flips > 10


def test_bitflip_count_flips_exactly_round_ber_times_bits() -> None:
    space = layout(30_000, 1_250)
    bers = [1e-7, 1e-5, 3.3e-5, 1e-3]
    sweep = CountFaults().sample(space, bers, seed=4)
    assert [s.num_flips for s in sweep] == [round(ber * space.total_bits) for ber in bers]
    assert sweep[0].num_flips == 0


def test_rrelu_legacy_truncates_per_tensor_and_draws_with_replacement() -> None:
    space = layout(1_000_000, 512, 10)
    sites = LegacyCountFaults().sample(space, [1e-8, 1e-4], seed=2)
    assert sites[0].num_flips == 0  # int(3.2e7 x 1e-8) = 0: no flips, unlike Bernoulli's 0.32
    record = sites[1].record()
    assert record.per_tensor == {"t0": 3200, "t1": 1}
    tiny = LegacyCountFaults().sample(layout(1, bits=8), [1.0], seed=0)[0]
    assert tiny.num_flips == 8
    assert len(pairs(tiny)) < 8  # with replacement: some bit drawn twice (its flips cancel in the mask)


def test_stuck_at_models_carry_their_kind() -> None:
    space = layout(1_000)
    assert BernoulliFaults(kind="stuck-at-0").sample(space, [1e-2], 0)[0].kind == "stuck-at-0"
    assert BernoulliFaults(kind="stuck-at-1").sample(space, [1e-2], 0)[0].kind == "stuck-at-1"
    same = [m.sample(space, [1e-2], 0)[0] for m in (BernoulliFaults(), BernoulliFaults(kind="stuck-at-1"))]
    assert pairs(same[0]) == pairs(same[1])


def test_bit_restriction_by_position_and_field() -> None:
    space = layout(50_000)
    fields = BernoulliFaults(FaultModelOptions(bits=("sign", "exponent"))).sample(space, [1e-3], 1)[0]
    assert set(fields.bits.tolist()) == set(range(23, 32))
    assert stats.chisquare(np.bincount(fields.bits, minlength=32)[23:]).pvalue > ALPHA
    one = CountFaults(FaultModelOptions(bits=(30,))).sample(space, [1e-2], 1)[0]
    assert set(one.bits.tolist()) == {30}
    assert one.num_flips == round(1e-2 * 50_000)


def test_record_counts_per_tensor_and_bit() -> None:
    space = layout(1_000, 2_000, bits=16)
    sites = BernoulliFaults().sample(space, [1e-2], 5)[0]
    record = sites.record()
    assert record.num_flips == sites.num_flips == sum(record.per_tensor.values()) == sum(record.per_bit)
    assert len(record.per_bit) == 16
    assert record.per_tensor["t1"] == int(np.sum(sites.elements >= 1_000))


def test_a_sweep_follows_the_one_ber_rule_of_suites() -> None:
    """BER 0 is the clean cell, never a sweep point; a BER twice is a typo: refused as in a suite file."""
    for model in (BernoulliFaults(), CountFaults(), LegacyCountFaults()):
        with pytest.raises(UsageError, match=r"\(0, 1\]"):
            model.sample(layout(1_000), [0.0, 1e-3], 1)
        with pytest.raises(UsageError, match="distinct"):
            model.sample(layout(1_000), [1e-3, 1e-3], 1)
        assert [s.num_flips for s in model.sample(layout(1_000), [1.0], 1)] == [1_000 * 32]


@pytest.mark.parametrize(
    ("bers", "seed", "options", "message"),
    [
        ([1e-3, 1e-4], 0, {}, "sorted ascending"),
        ([1.5], 0, {}, r"\(0, 1\]"),
        ([], 0, {}, "at least one"),
        ([1e-3], -1, {}, "non-negative"),
        ([1e-3], 0, {"bits": ("fraction",)}, "unknown bit field 'fraction'"),
        ([1e-3], 0, {"bits": (32,)}, "bit 32 outside 0..31"),
    ],
)
def test_bad_input_is_a_usage_error(bers: list[float], seed: int, options: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        BernoulliFaults(FaultModelOptions(**options)).sample(layout(100), bers, seed)


def test_fault_models_are_registered(engine_registries: None) -> None:
    names = plugins.get_registries().faults.names()
    assert names == ["bitflip", "bitflip-count", "rrelu-legacy", "stuck-at-0", "stuck-at-1"]
    assert resolve_fault_model("stuck-at-1").kind == "stuck-at-1"
    restricted = resolve_fault_model("bitflip", {"bits": ["sign", 30]})
    assert restricted.allowed_bits(layout(10)).tolist() == [30, 31]
    with pytest.raises(UsageError, match="did you mean 'bitflip'"):
        resolve_fault_model("bitflips")
    with pytest.raises(UsageError, match="unknown option"):
        resolve_fault_model("bitflip", {"ber": 1e-3})


def test_a_bit_field_that_is_empty_in_the_format_is_a_usage_error() -> None:
    """q0.7 has no integer bits: faults restricted to them would silently never happen."""
    from resbench.engine.formats import FixedPoint

    q = FixedPoint(0, 7)
    space = FaultSpaceLayout(("t0",), (1_000,), q.bits_per_element, q.bit_fields())
    with pytest.raises(UsageError, match="no bit"):
        BernoulliFaults(FaultModelOptions(bits=("integer",))).sample(space, [0.5], 0)


class _Broken(FaultModel):
    """A fault model that breaks one rule of ``sample_sites`` (which one: ``rule``)."""

    name = "broken"

    def __init__(self, rule: str) -> None:
        super().__init__(FaultModelOptions())
        self.rule = rule

    def sample_sites(self, layout: FaultSpaceLayout, bers: list[float], allowed: np.ndarray,
                     generators: list[np.random.Generator]) -> list[FaultSites]:
        draw = np.random.default_rng() if self.rule == "unseeded" else generators[0]
        drawn = draw.integers(layout.total_elements - 1, size=3 * len(bers))  # nested: a prefix per BER
        sites = []
        for index, ber in enumerate(bers):
            elements = np.sort(drawn[: 3 * (index + 1)])
            if self.rule == "element":
                elements[-1] = layout.total_elements
            if self.rule == "nested":
                elements = np.arange(index, index + 3)
            bits = np.full(elements.size, 40 if self.rule == "bit" else 3)
            sites.append(FaultSites(layout, elements, bits, "flip", 0.5 if self.rule == "label" else ber))
        return sites


@pytest.mark.parametrize(("rule", "message"), [
    ("element", "outside the fault space (0..99)"),
    ("bit", "bit positions [40] at BER 0.0001, outside the allowed bits"),
    ("nested", "sites at BER 0.0001 missing at BER 0.001; sites must be nested"),
    ("label", "labelled the sites of BER 0.0001 with BER 0.5"),
    ("unseeded", "gave other sites for the same seed"),
])
def test_sites_that_break_the_contract_are_refused_naming_the_rule(rule: str, message: str) -> None:
    with pytest.raises(ValueError, match="fault model broken: sample_sites") as refused:
        _Broken(rule).sample(layout(100), [1e-4, 1e-3], seed=7)
    assert message in str(refused.value)


def test_a_model_keeping_the_rules_passes_and_a_site_drawn_twice_is_allowed() -> None:
    class Twice(FaultModel):
        name = "twice"

        def sample_sites(self, layout: FaultSpaceLayout, bers: list[float], allowed: np.ndarray,
                         generators: list[np.random.Generator]) -> list[FaultSites]:
            element = int(generators[0].integers(layout.total_elements))
            return [FaultSites(layout, np.array([element, element]), np.array([5, 5]), "flip", ber) for ber in bers]

    [low, high] = Twice(FaultModelOptions()).sample(layout(100), [1e-4, 1e-3], seed=3)
    assert low.num_flips == high.num_flips == 2 and low.masks.size == 0  # the two flips cancel


@pytest.mark.usefixtures("engine_registries")
@pytest.mark.parametrize("name", ["bitflip", "bitflip-count", "rrelu-legacy", "stuck-at-0", "stuck-at-1"])
def test_every_built_in_fault_model_keeps_the_rules(name: str) -> None:
    model = resolve_fault_model(name)
    for seed in range(20):
        model.sample(layout(300, 50), [1e-4, 1e-3, 1e-2], seed)  # check_sites raises on any broken rule
