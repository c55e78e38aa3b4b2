"""Asynchronous GOMEA (one linkage tree); kernel GOMEA (`kernel_gomea`) builds on it.

Each population slot in turn runs a *mixing job*: gene-pool optimal mixing over the
FOS subsets in random order, then, if needed, forced improvements. A job is a
sequence of evaluations, one at a time; several jobs run at once (as many as the
evaluations in flight), and `ask()` hands out the next pending change of any job. A
subset change that leaves the genotype as it is costs nothing; one that leaves the
network as it is (same canonical genotype: only inactive variables changed) is adopted
without evaluation (counted in `neutral`); one that makes a network evaluated before is
judged at once with the memo's objectives (`memo_hits`). Only new networks are asked.
Within one stretch of a job, a trial made before since the slot's objectives last
changed is not made again: a known network would get the same verdict, and going back
to a genotype held with the same objectives would only cycle (see `Trials`).

Multi-objective: every slot carries its own weight vector; a change is kept when it
is not worse by that vector's augmented Tchebycheff scalarisation (with the steering
floor first), and the forced-improvement donor is the archived solution best for
that vector. There is no clustering in objective space: one population, one model.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from evostitch.errors import SearchError
from evostitch.evolution.algorithms.linkage import linkage_tree, pack_fos, prepare, unpack_fos
from evostitch.evolution.algorithms.mixing import Donors, Trials, membership_matrix
from evostitch.evolution.algorithms.population import PopulationAlgorithm
from evostitch.evolution.algorithms.scalarisation import better_by_key
from evostitch.evolution.base import Genotype, Objectives, Problem

JOBS_PER_ASK = 8  # new jobs one ask() may start while evaluations are in flight
CLOSURE_LIMIT = 256  # genotypes GOMEA looks up to prove it converged (see `_converged`)


class GOMEA(PopulationAlgorithm):
    """Linkage-tree GOMEA: one tree learned from the whole population (UPGMA on
    normalised mutual information). A *generation* is `pop_size` finished jobs: at its
    start the population is frozen as `parents`, the donor pool, and the tree is
    learned from it (slots themselves change in place). Donating from the frozen
    parents, as classic generational GOMEA does, matters: with donors taken from the
    live population, trap-5 (l=50, pop 128) lost building blocks and needed a restart
    in about half of the seeds; with frozen parents none did.

    Forced improvement (donor: the elitist for the slot's weight vector) follows when
    a job changed nothing, or its slot has not strictly improved for more than
    1 + log10(pop_size) jobs; if that fails too, the slot becomes the elitist. The
    initial population is evaluated completely before mixing starts. If two passes over
    the population (2 * `pop_size` jobs) finish without asking for a new network
    (converged), the population is re-initialised, up to `restart_elites` (default
    half) of it with archived solutions and the rest with new networks where it can
    (see `_restart`); after a quarter pass already when no pass could ask
    anything (`_converged`: every genotype mixing could build is known). The count
    restarts when a new network is asked, not when the job that asked it finishes, so
    jobs overlapping an evaluation in flight count.
    (One pass restarts sooner but needed ~40% more evaluations to cover LOTZ-16's front.)
    While evaluations are in flight, one `ask` starts at most `JOBS_PER_ASK` new jobs
    before it hands back: their results may change the population, and the loop can
    book them meanwhile.
    GOMEA has no mutation: a value no donor holds never appears (see the LOTZ note in
    the tests)."""

    name = "gomea"

    def __init__(
        self, problem: Problem, seed: int = 0, *, restart_elites: float = 0.5, **params: Any
    ) -> None:
        super().__init__(problem, seed, **params)
        if not 0.0 <= restart_elites <= 1.0:
            raise SearchError("restart_elites must be between 0 and 1")
        self.params["restart_elites"] = restart_elites
        self.restart_elites = restart_elites
        self.cards = list(problem.cardinalities)
        self.fos: list[list[int]] = []
        self.parents: list[Genotype] = []  # donors: the population when `fos` was learned
        self._jobs: dict[int, dict[str, Any]] = {}
        self._next_slot = 0
        self._finished = 0  # jobs finished since the FOS was learned
        self._idle = 0  # jobs that finished without a new network since one was asked
        self.nis = [0] * self.pop_size
        self.restarts = 0
        self.neutral = 0  # changes skipped because the network stayed the same
        self._parents_array: tuple[list[Genotype], np.ndarray] | None = None  # derived
        self._masks: dict[int, tuple[list[list[int]], np.ndarray]] = {}  # slot: its job's
        # FOS and which variables each subset holds (derived)
        self._keys: dict[tuple[int, Objectives], tuple[float, float]] = {}  # see _slot_key
        self._keys_for: tuple[Any, int] | None = None
        prepare()

    @property
    def nis_threshold(self) -> int:
        return 1 + int(math.floor(math.log10(self.pop_size)))

    # -------------------------------------------------------------------- model
    def _new_generation(self) -> None:
        """Freeze the donor population and learn the model from it."""
        self.parents = list(self.pop_g)
        self.fos = linkage_tree(np.array(self.parents, dtype=np.int64), self.cards, self.rng)

    def _start(self, slot: int) -> dict[str, Any]:
        if not self.parents or self._finished >= self.pop_size:
            self._new_generation()
            self._finished = 0
        order = self.rng.permutation(len(self.fos))
        return self._job([self.fos[i] for i in order])

    @staticmethod
    def _job(fos: list[list[int]], **extra: Any) -> dict[str, Any]:
        job = {"fos": fos, "pos": 0, "phase": "gom", "changed": False, "improved": False}
        return {**job, "trial": None, "elitist": None, **extra}

    def _donor_bound(self, job: dict[str, Any]) -> int:
        """A gene-pool-mixing donor is drawn as `rng.integers(bound)`..."""
        return self.pop_size - 1

    def _donor_parents(self, slot: int, job: dict[str, Any], draws: np.ndarray) -> np.ndarray:
        """...and these draws name these parents: any but the slot's own."""
        return draws + (draws >= slot)

    def _parents_matrix(self) -> np.ndarray:
        """The frozen parents as one array (rows), made once per generation."""
        if self._parents_array is None or self._parents_array[0] is not self.parents:
            dtype = np.min_scalar_type(max(self.cards) - 1)
            self._parents_array = (self.parents, np.array(self.parents, dtype=dtype))
        return self._parents_array[1]

    def _trials(self, slot: int, job: dict[str, Any]) -> Trials:
        """The trials of the job's remaining subsets: gene-pool mixing draws a donor per
        subset ahead (see `Donors`); forced improvement's donor is the elitist. Only
        variables where a donor differs from the slot's genotype are looked at (`g`
        changes only by taking donors' values): the parents' (a superset of the job's
        donors'), or the elitist's."""
        masks = self._masks.get(slot)
        if masks is None or masks[0] is not job["fos"]:
            masks = self._masks[slot] = (job["fos"], membership_matrix(job["fos"], len(self.cards)))
        subsets = masks[1][job["pos"] :]
        parents = self._parents_matrix()
        row = np.asarray(self.pop_g[slot], dtype=parents.dtype)
        if job["phase"] == "gom":
            columns = np.flatnonzero((parents != row).any(axis=0))
            return Donors(
                self.rng,
                self._donor_bound(job),
                lambda draws: self._donor_parents(slot, job, draws),
                parents[:, columns],
                subsets[:, columns],
                columns.tolist(),
            )
        elitist = np.asarray(job["elitist"][0], dtype=parents.dtype)
        columns = np.flatnonzero(elitist != row)
        values = np.broadcast_to(elitist[columns], (len(subsets), len(columns)))
        return Trials(values, subsets[:, columns], columns.tolist())

    # ------------------------------------------------------------------- mixing
    def _advance(self, slot: int, job: dict[str, Any]) -> Genotype | None:
        """Next trial genotype (a new network) of the job, or None after finishing it. A
        job that asked for no new network counts toward a restart (`_idle`).

        A subset on which the donor agrees with the slot's genotype changes nothing, and
        one whose trial was judged since the genotype last changed would be judged the
        same: both are passed over (`Trials`)."""
        g, network, trials = self.pop_g[slot], None, None
        try:
            while True:
                if job["pos"] < len(job["fos"]):
                    trials = trials or self._trials(slot, job)
                    trial = trials.next(g)
                    job["pos"] = len(job["fos"]) - trials.left
                    if trial is None:
                        continue
                    canonical = self.canonical(trial)
                    if self.problem.canonical is not None:
                        network = network or self.canonical(g)
                        if canonical == network:
                            g = self.pop_g[slot] = trial  # neutral change: no evaluation
                            self.neutral += 1
                            continue
                    f = self.recall(trial, canonical)
                    if f is not None:  # a network evaluated before: judged at once
                        before = self.pop_f[slot].tolist()
                        self._mix(slot, job, trial, f)
                        if self.pop_g[slot] != g:
                            g, network = self.pop_g[slot], None
                            if list(f) != before:
                                trials.forget()
                        continue
                    job["trial"] = list(trial)
                    if self.memo_key(canonical, True) not in self.memo:
                        job["new"], self._idle = True, 0
                    return trial
                if job["phase"] == "gom":
                    self.nis[slot] = 0 if job["improved"] else self.nis[slot] + 1
                    if not job["changed"] or self.nis[slot] > self.nis_threshold:
                        elitist = self.elitist(self.weights[slot])
                        if elitist is not None and elitist[0] != g:
                            job.update(phase="fi", pos=0, improved=False, elitist=elitist)
                            if trials is not None:
                                trials.settle()
                                trials = None
                            continue
                elif not job["improved"]:  # forced improvement failed: take the elitist
                    self.set_member(slot, tuple(job["elitist"][0]), job["elitist"][1])
                del self._jobs[slot]
                self._finished += 1
                self._idle += 0 if job.get("new") else 1
                if self._idle == max(1, self.pop_size // 4) and self._converged():
                    self._idle = 2 * self.pop_size  # the passes could ask nothing: restart
                return None
        finally:
            if trials is not None:
                trials.settle()

    def _converged(self) -> bool:
        """True when no job can ask for a new network, so passes over the population would
        only take known ones: nothing is in flight, and every genotype that takes each
        variable's value from a member, a frozen parent or an archived solution (all that
        gene-pool mixing and forced improvement can build from) is known. Looked at only
        while there are at most `CLOSURE_LIMIT` such genotypes."""
        if self._pending:
            return False
        rows = [*self.pop_g, *self.parents, *(s.genotype for s in self.archive)]
        x = np.array(rows)
        varying = np.flatnonzero((x != x[:1]).any(axis=0)).tolist()
        values = [np.unique(x[:, v]).tolist() for v in varying]
        if math.prod(map(len, values)) > CLOSURE_LIMIT:
            return False
        genotype = list(rows[0])
        for combination in itertools.product(*values):
            for v, value in zip(varying, combination, strict=True):
                genotype[v] = value
            if self.memo_key(genotype) not in self.memo:
                return False
        return True

    def _propose(self) -> tuple[Genotype, dict[str, Any]] | None:
        while True:  # ends: a restart's known members count toward `max_silent`
            proposal = self._next_trial()
            if proposal is not None or self._jobs or self._init_left > 0:
                return proposal  # None: waiting for evaluations in flight
            self.restarts += 1  # two passes without a new network: converged
            self._restart()

    def _restart(self) -> None:
        """A new population, its model learned when its first job starts. Up to
        `restart_elites` of its slots after the references hold archived solutions
        (distinct networks, drawn at random; known, so free), the rest new random
        genotypes: mixing then recombines the front with new values, which GOMEA, having
        no mutation, has no other way to bring to it. A fully random restart throws
        the front away: on the demo segmentation supernetwork (33 variables, 2,000
        evaluations, population 16) GOMEA restarted ~45 times and LK-GOMEA ~130,
        spending 25% and 57% of the evaluations on random restarts
        (benchmarks/gomea_diagnosis.py)."""
        self._reset_population(restart=True)
        first = len(set(map(tuple, self.problem.references)))
        room = int(self.restart_elites * (self.pop_size - first))
        if room > 0 and len(self.archive):
            elites = list(dict.fromkeys(self.canonical(s.genotype) for s in self.archive))
            order = self.rng.permutation(len(elites)).tolist()
            for slot, i in zip(range(first, first + room), order, strict=False):
                self.pop_g[slot] = elites[i]
        self.fos, self.parents, self._finished, self._idle = [], [], 0, 0
        self.nis = [0] * self.pop_size

    def _next_trial(self) -> tuple[Genotype, dict[str, Any]] | None:
        init = self._propose_init()
        if init is not None or self._init_left > 0:
            return init  # mixing starts once the initial population is evaluated
        for slot, job in list(self._jobs.items()):
            if job["trial"] is None:
                trial = self._advance(slot, job)
                if trial is not None:
                    return trial, {"slot": slot}
        for started in range(2 * self.pop_size):
            if self._idle >= 2 * self.pop_size or (self._pending and started >= JOBS_PER_ASK):
                break
            slot = self._next_slot
            self._next_slot = (slot + 1) % self.pop_size
            if slot in self._jobs:
                continue
            self._jobs[slot] = self._start(slot)
            trial = self._advance(slot, self._jobs[slot])
            if trial is not None:
                return trial, {"slot": slot}
        return None

    def _receive(self, genotype: Genotype, f: Objectives, context: dict[str, Any]) -> None:
        if self._receive_init(f, context):
            return
        slot = context["slot"]
        job = self._jobs[slot]
        job["trial"] = None
        self._mix(slot, job, genotype, f)

    def _mix(self, slot: int, job: dict[str, Any], genotype: Genotype, f: Objectives) -> None:
        """Keep the trial `genotype` in `slot` if the job's phase accepts it (the tests
        of `not_worse` and `better`, each key computed once)."""
        current = self.pop_f[slot]
        new, old = self._slot_key(slot, f), self._slot_key(slot, tuple(current.tolist()))
        better = better_by_key(new, old, f, current)
        if job["phase"] == "gom":
            if new <= old:
                job["improved"] |= better
                job["changed"] = True
                self.set_member(slot, genotype, f)
        elif better:
            job["improved"] = True
            self.nis[slot] = 0
            job["pos"] = len(job["fos"])  # one forced improvement is enough
            self.set_member(slot, genotype, f)

    def _slot_key(self, slot: int, f: Objectives) -> tuple[float, float]:
        """`key(f, slot's weights)`, remembered while the normalisation (a new object
        whenever a member's objectives change) and the steering floor (moves with
        `told`) stay the same: a converging population judges the same few networks
        over and over."""
        bounds = self._normalisation()
        token = self._keys_for
        if token is None or token[0] is not bounds or token[1] != self.told:
            self._keys_for, self._keys = (bounds, self.told), {}
        key = self._keys.get((slot, f))
        if key is None:
            key = self._keys[(slot, f)] = self.key(f, self.weights[slot])
        return key

    # -------------------------------------------------------------- checkpoints
    def _state(self) -> dict[str, Any]:
        state = super()._state()
        state.update(
            fos=pack_fos(self.fos),
            parents=[list(g) for g in self.parents],
            jobs=[[slot, {**job, "fos": pack_fos(job["fos"])}] for slot, job in self._jobs.items()],
            next_slot=self._next_slot,
            finished=self._finished,
            nis=self.nis,
            restarts=self.restarts,
            neutral=self.neutral,
            idle=self._idle,
        )
        return state

    def _load(self, state: dict[str, Any]) -> None:
        super()._load(state)
        self.fos = unpack_fos(state["fos"])
        self.parents = [tuple(map(int, g)) for g in state["parents"]]
        self._jobs = {
            int(slot): {**job, "fos": unpack_fos(job["fos"])} for slot, job in state["jobs"]
        }
        self._next_slot = int(state["next_slot"])
        self._finished = int(state["finished"])
        self.nis = [int(v) for v in state["nis"]]
        self.restarts = int(state["restarts"])
        self.neutral = int(state.get("neutral", 0))
        self._idle = int(state.get("idle", 0))
