"""Fault models: which stored bits go wrong in a trial.

A fault model samples :class:`FaultSites` (element, bit) over a :class:`FaultSpaceLayout`. All models
see the fault space as one **canonical bit line**: element ``e`` of the layout, allowed bit ``j``
(``bits`` option, all bits by default) sits at position ``e * len(bits) + j``. Model tensors come first
in the layout, method tensors after.

* ``bitflip``: every bit flips independently with probability BER. Sites come from geometric gaps along
  the bit line (Devroye, *Non-Uniform Random Variate Generation*, 1986, sec. X.2.1 "the geometric
  method"), which is exact Bernoulli at any BER (1e-12 included), costs O(flips) and comes out sorted.
  The gaps are drawn in a chunk schedule that depends on BER only, so two layouts sharing a prefix (a
  method adding bounds after the model's tensors) get identical sites in it: common random numbers.
* ``stuck-at-0`` / ``stuck-at-1``: the same Bernoulli sites, forced to 0 or 1 instead of flipped.
* ``bitflip-count``: exactly ``round(BER x bits)`` distinct sites over the whole line.
* ``rrelu-legacy``: per tensor ``int(numel x bits x BER)`` sites drawn with replacement (the counting of
  the ProAct authors' reliable-relu-toolbox, ``multi_weight_inj_*``); a bit drawn twice flips twice.

**Nested sweeps.** ``sample`` draws once at the largest BER. Each Bernoulli site carries a uniform
``u`` and is kept at BER ``b`` when ``u < b / BER_max`` (binomial thinning, exact marginals); count
models keep prefixes of a random order. Sites at a lower BER are a subset of those at a higher one.

**Seeds.** ``seed`` (a non-negative int the runner derives from base seed, model, dataset, format,
fault model and trial, never from the method) fixes everything: a trial replays from its seed alone.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import Field

from resbench.engine.bers import check_bers
from resbench.engine.faultspace import FaultSpaceLayout
from resbench.engine.formats import NumberFormat
from resbench.errors import UsageError
from resbench.hookspecs import Register
from resbench.options import Options
from resbench.plugins import get_registries, hookimpl

__all__ = [
    "BernoulliFaults",
    "CountFaults",
    "FaultModel",
    "FaultModelOptions",
    "FaultRecord",
    "FaultSites",
    "FaultTarget",
    "LegacyCountFaults",
    "SiteKind",
    "check_sites",
    "register_fault_models",
    "resolve_fault_model",
]

SiteKind = Literal["flip", "stuck-at-0", "stuck-at-1"]
#: What faults hit: the stored tensors (weights) or the outputs of operators while data passes through
#: (activations, see :mod:`resbench.engine.activation_faults`).
FaultTarget = Literal["weights", "activations"]

# Gap chunks grow from 2**10 to 2**20 draws; the schedule depends on nothing but the BER.
_FIRST_CHUNK = 1 << 10
_LAST_CHUNK = 1 << 20
# Keeps ``last + cumsum(gaps)`` inside int64: gaps are clipped to the line length.
_MAX_LINE = 1 << 42


@dataclass(frozen=True)
class FaultRecord:
    """What one trial injected: total flips, flips per tensor (non-zero only) and per bit position."""

    num_flips: int
    per_tensor: dict[str, int]
    per_bit: list[int]


class FaultSites:
    """The (element, bit) sites of one trial at one BER, over ``layout``.

    ``elements`` index the layout's element line and are non-decreasing; ``bits`` are bit positions
    (LSB = 0). :attr:`touched` and :attr:`masks` combine the sites element by element: the XOR of
    ``1 << bit`` over its sites (a bit drawn twice cancels, as two flips do).
    """

    def __init__(
        self,
        layout: FaultSpaceLayout,
        elements: np.ndarray,
        bits: np.ndarray,
        kind: SiteKind,
        ber: float,
    ) -> None:
        if elements.size > 1 and np.any(elements[1:] < elements[:-1]):
            order = np.argsort(elements, kind="stable")
            elements, bits = elements[order], bits[order]
        self.layout = layout
        self.elements = np.ascontiguousarray(elements, dtype=np.int64)
        self.bits = np.ascontiguousarray(bits, dtype=np.int64)
        self.kind: SiteKind = kind
        self.ber = ber
        self.touched, self.masks = _combine(self.elements, self.bits)

    @property
    def num_flips(self) -> int:
        """Number of sites (flips for bit flips, stuck sites for stuck-at faults)."""
        return int(self.elements.size)

    def record(self) -> FaultRecord:
        """Flips per tensor (canonical names, non-zero counts only) and per bit position."""
        tensor_index = np.searchsorted(np.asarray(self.layout.offsets[1:]), self.elements, side="right")
        per_tensor = np.bincount(tensor_index, minlength=len(self.layout.names))
        per_bit = np.bincount(self.bits, minlength=self.layout.bits_per_element)
        return FaultRecord(
            num_flips=self.num_flips,
            per_tensor={name: int(n) for name, n in zip(self.layout.names, per_tensor, strict=True) if n},
            per_bit=[int(n) for n in per_bit],
        )

    def __repr__(self) -> str:
        return f"<FaultSites {self.kind} BER={self.ber:g}: {self.num_flips} sites>"


def _combine(elements: np.ndarray, bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct touched elements and the XOR mask (uint64) of their sites; zero masks are dropped."""
    if elements.size == 0:
        return elements.copy(), np.zeros(0, dtype=np.uint64)
    starts = np.flatnonzero(np.concatenate(([True], elements[1:] != elements[:-1])))
    values = np.left_shift(np.uint64(1), bits.astype(np.uint64))
    masks = np.bitwise_xor.reduceat(values, starts)
    keep = masks != 0
    return elements[starts][keep], masks[keep]


class FaultModelOptions(Options):
    """Options shared by the built-in fault models."""

    target: FaultTarget = Field(
        default="weights",
        description="what faults hit: weights (stored tensors) or activations (operator outputs); each fault "
        "model supports the targets it lists",
    )
    bits: tuple[int | str, ...] = Field(
        default=(),
        description="bit positions (LSB = 0) or fields (sign, exponent, mantissa, integer, fraction, "
        "magnitude) faults may hit; empty for all bits",
    )


def _generators(seed: int, count: int) -> list[np.random.Generator]:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise UsageError(f"a trial seed must be a non-negative integer, got {seed!r}")
    return [np.random.Generator(np.random.PCG64(child)) for child in np.random.SeedSequence(int(seed)).spawn(count)]


def _bernoulli_line(
    gaps: np.random.Generator, thinning: np.random.Generator, length: int, ber: float
) -> tuple[np.ndarray, np.ndarray]:
    """Positions in ``[0, length)`` each present with probability ``ber``, and a uniform per position."""
    positions: list[np.ndarray] = []
    uniforms: list[np.ndarray] = []
    last, size = -1, _FIRST_CHUNK
    while last < length:
        steps = np.minimum(gaps.geometric(ber, size=size), length + 1)
        chunk = last + np.cumsum(steps)
        positions.append(chunk)
        uniforms.append(thinning.random(size))
        last, size = int(chunk[-1]), min(2 * size, _LAST_CHUNK)
    line, u = np.concatenate(positions), np.concatenate(uniforms)
    inside = line < length
    return line[inside], u[inside]


class FaultModel(ABC):
    """Samples nested fault sites for a sorted list of BERs (see the module docstring)."""

    name: str
    kind: SiteKind = "flip"
    #: The fault targets this model knows how to sample; the weight models know only ``weights``.
    targets: tuple[FaultTarget, ...] = ("weights",)

    def __init__(self, options: FaultModelOptions | None = None) -> None:
        self.options = options or FaultModelOptions()

    @property
    def target(self) -> FaultTarget:
        """The target this model was asked for (its ``target`` option)."""
        return self.options.target

    def check_target(self) -> None:
        """Refuse a target the model does not support (bad input, found before any work)."""
        if self.target not in self.targets:
            known = ", ".join(self.targets)
            raise UsageError(f"fault model {self.name} supports the {known} target only, not {self.target}; "
                             "activation faults come from act-bitflip or act-single")

    def check(self, number_format: NumberFormat) -> None:
        """Bad input found before any work: a target the model does not support, bits outside
        ``number_format`` (the format the stored tensors are held in). Raises :class:`UsageError`."""
        self.check_target()
        self.allowed_bits(FaultSpaceLayout(("probe",), (1,), number_format.bits_per_element,
                                           number_format.bit_fields()))

    def cell_bers(self, bers: Sequence[float]) -> list[float]:
        """The BER column of this model's faulty cells for a suite sweep ``bers`` (the sweep itself)."""
        return [float(ber) for ber in bers]

    def definition_fields(self) -> dict[str, object]:
        """What the model adds to a cell's definition beside its name and options (weight faults: nothing,
        so the identities of weight cells never change)."""
        return {}

    def allowed_bits(self, layout: FaultSpaceLayout) -> np.ndarray:
        """The bit positions faults may hit in ``layout``, ascending."""
        if not self.options.bits:
            return np.arange(layout.bits_per_element, dtype=np.int64)
        chosen: set[int] = set()
        for entry in self.options.bits:
            chosen.update(self._bit_entry(entry, layout))
        if not chosen:
            raise UsageError(f"fault model {self.name}: bits {list(self.options.bits)} select no bit of this format")
        return np.array(sorted(chosen), dtype=np.int64)

    def _bit_entry(self, entry: int | str, layout: FaultSpaceLayout) -> tuple[int, ...]:
        if isinstance(entry, str) and not entry.isdigit():
            if entry not in layout.bit_fields:
                fields = ", ".join(layout.bit_fields) or "none"
                raise UsageError(f"fault model {self.name}: unknown bit field {entry!r} (fields: {fields})")
            return layout.bit_fields[entry]
        position = int(entry)
        if not 0 <= position < layout.bits_per_element:
            raise UsageError(f"fault model {self.name}: bit {position} outside 0..{layout.bits_per_element - 1}")
        return (position,)

    def sample(self, layout: FaultSpaceLayout, bers: Sequence[float], seed: int) -> list[FaultSites]:
        """One :class:`FaultSites` per BER in ``bers`` (ascending), nested, replayable from ``seed``."""
        checked = check_bers(bers)
        allowed = self.allowed_bits(layout)
        if layout.total_elements * allowed.size > _MAX_LINE:
            raise UsageError(f"a fault space of {layout.total_bits} bits is beyond the 2**42-bit limit")
        sites = self.sample_sites(layout, checked, allowed, _generators(seed, 2))
        first_draw = not getattr(self, "_checked", False)
        check_sites(self.name, layout, checked, allowed, sites, nesting=first_draw)
        if first_draw:  # once per fault model (a rule broken by its code shows at once): the seed alone decides
            again = self.sample_sites(layout, checked, allowed, _generators(seed, 2))
            if any(not (np.array_equal(first.elements, second.elements) and np.array_equal(first.bits, second.bits))
                   for first, second in zip(sites, again, strict=True)):
                raise ValueError(f"fault model {self.name}: sample_sites gave other sites for the same seed; draw "
                                 "every random number from the generators it is given")
            self._checked = True
        return sites

    @abstractmethod
    def sample_sites(
        self,
        layout: FaultSpaceLayout,
        bers: list[float],
        allowed: np.ndarray,
        generators: list[np.random.Generator],
    ) -> list[FaultSites]:
        """What a fault model implements: one :class:`FaultSites` per BER of ``bers`` (checked, ascending).

        ``allowed`` holds the bit positions faults may hit (ascending); ``generators`` are two numpy
        generators seeded from the trial seed (use them for every draw, so a trial replays). Sites at a
        lower BER must be a subset of those at a higher one. :meth:`sites_at` turns positions on the
        canonical bit line (``element * len(allowed) + index into allowed``) into sites.
        """

    def sites_at(self, layout: FaultSpaceLayout, line: np.ndarray, allowed: np.ndarray, ber: float) -> FaultSites:
        """Sites for positions ``line`` of the canonical bit line (see the module docstring)."""
        return FaultSites(layout, line // allowed.size, allowed[line % allowed.size], self.kind, ber)


def check_sites(name: str, layout: FaultSpaceLayout, bers: Sequence[float], allowed: np.ndarray,
                sites: Sequence[FaultSites], nesting: bool = True) -> None:
    """Refuse what :meth:`FaultModel.sample_sites` must never return (a plugin's bug: ``ValueError`` naming the
    fault model): other than one :class:`FaultSites` per BER labelled with it, an element outside the fault
    space, a bit position the ``bits`` option does not allow, or (``nesting``; it costs more than the draw, so
    :meth:`FaultModel.sample` checks it on a fault model's first draw) sites of a lower BER missing at a higher
    one. A site drawn twice is allowed (the two flips cancel; the store's ``effective_flips`` counts the bits
    that really changed)."""
    problem = _contract_problem(layout, bers, allowed, sites, nesting)
    if problem:
        raise ValueError(f"fault model {name}: sample_sites {problem}")


def _contract_problem(layout: FaultSpaceLayout, bers: Sequence[float], allowed: np.ndarray,
                      sites: Sequence[FaultSites], nesting: bool) -> str | None:
    if len(sites) != len(bers) or not all(isinstance(site, FaultSites) for site in sites):
        return f"returned {len(sites)} items for {len(bers)} BERs; it must return one FaultSites per BER"
    allowed_mask = np.zeros(layout.bits_per_element, dtype=bool)
    allowed_mask[allowed] = True
    for index, (ber, site) in enumerate(zip(bers, sites, strict=True)):
        if site.ber != ber:
            return f"labelled the sites of BER {ber:g} with BER {site.ber:g}"
        if not site.elements.size:
            continue
        if site.elements[0] < 0 or site.elements[-1] >= layout.total_elements:
            return f"returned elements outside the fault space (0..{layout.total_elements - 1}) at BER {ber:g}"
        bits = site.bits
        if bits.min() < 0 or bits.max() >= layout.bits_per_element or not allowed_mask[bits].all():
            return (f"returned bit positions {sorted(set(bits.tolist()) - set(allowed.tolist()))[:5]} at BER "
                    f"{ber:g}, outside the allowed bits {allowed.tolist()}")
        if nesting and index + 1 < len(sites):
            higher = sites[index + 1]
            keys = site.elements * layout.bits_per_element + bits
            if not np.isin(keys, higher.elements * layout.bits_per_element + higher.bits).all():
                return (f"returned sites at BER {ber:g} missing at BER {bers[index + 1]:g}; sites must be nested "
                        "across BERs")
    return None


class BernoulliFaults(FaultModel):
    """Every allowed bit is a site independently with probability BER (flipped or stuck)."""

    def __init__(self, options: FaultModelOptions | None = None, kind: SiteKind = "flip") -> None:
        super().__init__(options)
        self.kind = kind
        self.name = "bitflip" if kind == "flip" else kind

    def sample_sites(
        self,
        layout: FaultSpaceLayout,
        bers: list[float],
        allowed: np.ndarray,
        generators: list[np.random.Generator],
    ) -> list[FaultSites]:
        highest = bers[-1]
        if highest == 0.0:
            empty = np.zeros(0, dtype=np.int64)
            return [self.sites_at(layout, empty, allowed, ber) for ber in bers]
        gaps, thinning = generators
        line, u = _bernoulli_line(gaps, thinning, layout.total_elements * allowed.size, highest)
        return [self.sites_at(layout, line[u < ber / highest], allowed, ber) for ber in bers]


class CountFaults(FaultModel):
    """Exactly ``round(BER x bits)`` distinct bit flips over the whole fault space."""

    name = "bitflip-count"

    def sample_sites(
        self,
        layout: FaultSpaceLayout,
        bers: list[float],
        allowed: np.ndarray,
        generators: list[np.random.Generator],
    ) -> list[FaultSites]:
        length = layout.total_elements * allowed.size
        counts = [round(ber * length) for ber in bers]
        order = generators[0].choice(length, size=counts[-1], replace=False, shuffle=True)
        return [self.sites_at(layout, order[:count], allowed, ber) for ber, count in zip(bers, counts, strict=True)]


class LegacyCountFaults(FaultModel):
    """Per tensor ``int(numel x bits x BER)`` flips at positions drawn with replacement.

    Reproduces the counting of the reliable-relu-toolbox (``multi_weight_inj_float``): truncation per
    tensor, so small tensors and low BERs get no flips at all.
    """

    name = "rrelu-legacy"

    def sample_sites(
        self,
        layout: FaultSpaceLayout,
        bers: list[float],
        allowed: np.ndarray,
        generators: list[np.random.Generator],
    ) -> list[FaultSites]:
        lengths = np.array(layout.numels, dtype=np.int64) * allowed.size
        most = np.array([int(n * bers[-1]) for n in lengths.tolist()], dtype=np.int64)
        tensor = np.repeat(np.arange(lengths.size), most)
        inside = np.floor(generators[0].random(tensor.size) * lengths[tensor]).astype(np.int64)
        line = np.array(layout.offsets[:-1], dtype=np.int64)[tensor] * allowed.size + np.minimum(
            inside, lengths[tensor] - 1
        )
        rank = np.arange(tensor.size) - np.repeat(np.cumsum(most) - most, most)
        sites = []
        for ber in bers:
            counts = np.array([int(n * ber) for n in lengths.tolist()], dtype=np.int64)
            sites.append(self.sites_at(layout, line[rank < counts[tensor]], allowed, ber))
        return sites


def _bitflip(options: FaultModelOptions) -> FaultModel:
    """Each stored bit flips independently with probability BER (exact Bernoulli)."""
    return BernoulliFaults(options, "flip")


def _stuck_at_0(options: FaultModelOptions) -> FaultModel:
    """Bits chosen independently with probability BER are stuck at 0."""
    return BernoulliFaults(options, "stuck-at-0")


def _stuck_at_1(options: FaultModelOptions) -> FaultModel:
    """Bits chosen independently with probability BER are stuck at 1."""
    return BernoulliFaults(options, "stuck-at-1")


def _bitflip_count(options: FaultModelOptions) -> FaultModel:
    """Exactly round(BER x total bits) distinct bit flips over the fault space."""
    return CountFaults(options)


def _rrelu_legacy(options: FaultModelOptions) -> FaultModel:
    """Per tensor int(numel x bits x BER) flips drawn with replacement (reliable-relu-toolbox)."""
    return LegacyCountFaults(options)


@hookimpl
def register_fault_models(register: Register) -> None:
    """Register the built-in fault models."""
    for name, factory in (
        ("bitflip", _bitflip),
        ("bitflip-count", _bitflip_count),
        ("rrelu-legacy", _rrelu_legacy),
        ("stuck-at-0", _stuck_at_0),
        ("stuck-at-1", _stuck_at_1),
    ):
        register(name, factory, options=FaultModelOptions)


def resolve_fault_model(name: str, options: dict[str, Any] | None = None) -> FaultModel:
    """The fault model called ``name`` built with ``options``; bad input raises :class:`UsageError`."""
    made: FaultModel = get_registries().faults.build(name, options, where=f"fault model {name}").value
    return made
