"""Evaluations on a pool of long-lived Ray actors (optional: `pip install evostitch[ray]`).

Each actor calls the evaluator factory once, then evaluates one genotype at a time, or up
to `per_worker` at once through the evaluator's `evaluate_many` when it has one. Work goes
to actors that have started (built their evaluator), so an actor waiting for the
cluster's resources holds nothing. On a cluster (one it joined, or a Ray this process
had started), a factory that loads a supernetwork folder (`FolderFactory`) is shipped:
its files go through the object store to nodes that cannot read the folder (`shipping`).

An actor that dies (its process crashed, was killed, ran out of memory) is replaced and
the genotypes it held are retried, one per task, up to `max_retries` times, then reported
as failed. An actor whose node died costs its genotypes no attempt, and the node's idle
actors are replaced at once: a lost node costs time only. An exception raised by the
evaluator is not a death: it is reported as failed at once.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections import deque
from typing import Any

from ..errors import SearchError
from ..evolution.backend import (
    Backend,
    EvaluatorFactory,
    FolderFactory,
    Pool,
    Result,
    evaluate_batch,
    evaluate_one,
    worker_name,
)
from ..evolution.base import Genotype
from .shipping import Receipt, Shipped, ship


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise SearchError("the Ray backend needs Ray: pip install 'evostitch[ray]'") from None
    return ray


class _Worker:
    """The actor: builds its evaluator once, then evaluates the genotypes it is handed."""

    def __init__(self, factory: EvaluatorFactory) -> None:
        from .allocator import keep_freed_memory

        keep_freed_memory()  # the actor owns its process
        self._name = worker_name()
        self._receipt: Receipt | None = None
        if isinstance(factory, Shipped):
            self._evaluate, self._receipt = factory.receive()
        else:
            self._evaluate = factory()

    def evaluate(self, ticket: int, genotype: Genotype) -> Result:
        return evaluate_one(self._evaluate, ticket, genotype, self._name)

    def evaluate_many(self, items: list[tuple[int, Genotype]], context: Any = None) -> list[Result]:
        return evaluate_batch(self._evaluate, items, self._name, context)

    def info(self) -> tuple[str, str, Receipt | None]:
        """Its name, its node's id and where its supernetwork came from (if shipped)."""
        import ray

        return self._name, ray.get_runtime_context().get_node_id(), self._receipt


class RayBackend(Backend):
    """A pool of `num_workers` Ray actors, each with `num_cpus` and a `num_gpus` fraction.

    `address`: None starts a local Ray (unless one is already running in this process);
    "auto" or "HOST:PORT" joins a cluster. Ray is shut down on `close()` only if this
    backend started it.

    By default the schedule is asynchronous: one genotype per idle actor, results in the
    order they finish. `deterministic=True` runs synchronous batches of `batch_size`
    (default `num_workers`): `results()` returns nothing until the whole batch is done,
    then all of it in ticket order, so a run equals the in-process backend's with the
    same batch size and seed (in-process default: batch size 1).

    `per_worker` (default 1) is how many queued genotypes an idle actor takes at once; it
    evaluates them together when its evaluator has `evaluate_many` (offspring then share
    their common computation). Fewer than that are handed out by `results()`. In-flight
    capacity is `num_workers * per_worker`.
    """

    def __init__(
        self,
        evaluator_factory: EvaluatorFactory,
        num_workers: int = 1,
        num_cpus: float = 1.0,
        num_gpus: float = 0.0,
        address: str | None = None,
        max_retries: int = 2,
        deterministic: bool = False,
        batch_size: int | None = None,
        init_kwargs: dict[str, Any] | None = None,
        per_worker: int = 1,
    ) -> None:
        if num_workers < 1:
            raise SearchError("num_workers must be at least 1")
        if per_worker < 1:
            raise SearchError("per_worker must be at least 1")
        ray = self._ray = _import_ray()
        from ray.exceptions import RayActorError, RayError, WorkerCrashedError

        self._died = (RayActorError, WorkerCrashedError)
        self._ray_error = RayError
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            kwargs = {"include_dashboard": False} if address is None else {}
            try:
                ray.init(address=address, **{**kwargs, **(init_kwargs or {})})
            except (ConnectionError, RuntimeError, ValueError, SystemExit) as e:
                # Ray calls sys.exit() when it cannot reach a cluster's GCS
                why = "no Ray cluster answered" if isinstance(e, SystemExit) else _one_line(e)
                where = address or "a local Ray"
                raise SearchError(f"could not start or join {where}: {why}") from None
        self.deterministic = deterministic
        in_flight = num_workers * per_worker
        self.capacity = (batch_size or in_flight) if deterministic else in_flight
        self.per_worker = per_worker
        self.max_retries = max_retries
        self.shipped: Shipped | None = None
        local = self._owns_ray and address is None  # a Ray of this machine's, for the run
        if isinstance(evaluator_factory, FolderFactory) and not local:
            evaluator_factory = self.shipped = ship(evaluator_factory, ray.put)
        self._factory = evaluator_factory
        self._actor_cls = ray.remote(_Worker).options(
            num_cpus=num_cpus, num_gpus=num_gpus, max_restarts=0
        )
        self._starting: dict[Any, Any] = {}  # its info() call -> an actor not started yet
        self._nodes: dict[Any, str] = {}  # a started actor -> its node's id
        self.receipts: dict[str, tuple[str, Receipt | None]] = {}  # worker -> node, receipt
        self._idle: list[Any] = []
        for _ in range(num_workers):
            self._start_actor()
        self._running: dict[Any, tuple[Any, list[tuple[int, Genotype, int]]]] = {}
        self._queue: deque[tuple[int, Genotype, int]] = deque()
        self._done: list[Result] = []
        self._deaths_in_a_row = 0
        self._death_limit = max(4, 2 * num_workers * (max_retries + 1))
        self.replaced = 0

    def _start_actor(self) -> None:
        actor = self._actor_cls.remote(self._factory)
        self._starting[actor.info.remote()] = actor

    def pool(self) -> Pool:
        return Pool(len(self._nodes), len(self._starting), len(set(self._nodes.values())))

    def submit(self, ticket: int, genotype: Genotype) -> None:
        self._queue.append((ticket, tuple(genotype), 0))
        self._dispatch(partial=False)  # smaller batches wait for results()

    def _dispatch(self, partial: bool = True) -> None:
        while self._idle and (len(self._queue) >= self.per_worker or (partial and self._queue)):
            held = [self._queue.popleft()]  # retries run alone (their batch-mates may be fine)
            while len(held) < self.per_worker and self._queue and not held[0][2]:
                if self._queue[0][2]:
                    break
                held.append(self._queue.popleft())
            actor = self._idle.pop()
            if len(held) == 1 and self.context is None:
                ref = actor.evaluate.remote(*held[0][:2])
            else:  # a race, or a batch: the context as it leaves
                ref = actor.evaluate_many.remote([(t, g) for t, g, _ in held], self.context)
            self._running[ref] = (actor, held)

    def results(self, timeout: float | None = None) -> list[Result]:
        ray = self._ray
        self._dispatch()
        refs = [*self._running, *self._starting]
        if refs:
            ready, _ = ray.wait(refs, num_returns=1, timeout=timeout)
            if ready:  # collect everything that is done, not just the first
                ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
            for ref in ready:
                self._started(ref) if ref in self._starting else self._collect(ref)
            self._dispatch()
        if self.deterministic and (self._running or self._queue):
            return []
        done, self._done = self._done, []
        return sorted(done, key=lambda r: r.ticket) if self.deterministic else done

    def _started(self, ref: Any) -> None:
        """An actor built its evaluator (it takes work now), or died trying."""
        actor = self._starting.pop(ref)
        try:
            name, node, receipt = self._ray.get(ref)
        except self._died as e:
            if _dead_node(e) is None and (cause := _creation_error(e)) is not None:
                raise SearchError(f"a Ray worker could not build its evaluator: {cause}") from None
            self._replace(actor, e)
            return
        self._nodes[actor] = node
        self.receipts[name] = (node, receipt)
        self._idle.append(actor)

    def _collect(self, ref: Any) -> None:
        actor, held = self._running.pop(ref)
        try:
            done = self._ray.get(ref)
            self._done.extend(done if isinstance(done, list) else [done])
            self._idle.append(actor)
            self._deaths_in_a_row = 0
        except self._died as e:
            node = _dead_node(e)
            self._replace(actor, e)
            if node is not None:  # its idle actors died with it: none is handed work
                for lost in [a for a in self._idle if self._nodes.get(a) == node]:
                    self._idle.remove(lost)
                    self._replace(lost, e, count=False)
            for ticket, genotype, attempts in reversed(held):
                tries = attempts if node is not None else attempts + 1  # the node, not it
                if tries <= self.max_retries:
                    self._queue.appendleft((ticket, genotype, tries))
                else:
                    error = f"worker died {tries} times; last: {_death_reason(e)}"
                    now = time.time()
                    self._done.append(Result(ticket, genotype, None, error, 0.0, "", now, now))
        except self._ray_error as e:  # the task itself failed in Ray (e.g. unpicklable result)
            self._idle.append(actor)
            now = time.time()
            for ticket, genotype, _ in held:
                self._done.append(Result(ticket, genotype, None, _one_line(e), 0.0, "", now, now))

    def _replace(self, actor: Any, cause: BaseException, count: bool = True) -> None:
        self._nodes.pop(actor, None)
        if count:
            self._deaths_in_a_row += 1
        if self._deaths_in_a_row > self._death_limit:
            raise SearchError(
                f"Ray workers died {self._deaths_in_a_row} times in a row: {_death_reason(cause)}"
            )
        with contextlib.suppress(Exception):  # it may be gone already
            self._ray.kill(actor, no_restart=True)
        self._start_actor()
        self.replaced += 1

    def close(self) -> None:
        actors = [*self._idle, *self._starting.values(), *(a for a, _ in self._running.values())]
        self._idle, self._running, self._starting, self._nodes = [], {}, {}, {}
        for actor in actors:
            with contextlib.suppress(Exception):
                self._ray.kill(actor, no_restart=True)
        if self._owns_ray and self._ray.is_initialized():
            self._ray.shutdown()
        self._owns_ray = False


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(_ANSI.sub("", str(exc)).split())
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _death_reason(exc: BaseException) -> str:
    """Why an actor died, in one line: Ray's first line, the pid and the exit detail."""
    lines = [line.strip() for line in _ANSI.sub("", str(exc)).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    pid = re.search(r"\bpid: (\d+)", str(exc))
    detail = re.search(r"Worker exit detail: (.*?\.)", str(exc))
    extra = ", ".join(x for x in (pid and f"pid {pid.group(1)}", detail and detail.group(1)) if x)
    return f"{lines[0].rstrip('.')}" + (f" ({extra})" if extra else "")


def _creation_error(exc: BaseException) -> str | None:
    """The evaluator factory's own error when the actor died building it, else None."""
    text = _ANSI.sub("", str(exc))
    if "creation task" not in text:
        return None
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def _dead_node(exc: BaseException) -> str | None:
    """The id of the node whose death killed the actor, None when the actor died alone."""
    found = re.search(r"its node has died\. Node Id: ([0-9a-f]+)", _ANSI.sub("", str(exc)))
    return found.group(1) if found else None
