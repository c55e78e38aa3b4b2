"""The Ray backend on a simulated multi-node cluster: bytes per node, and a node lost.

    python benchmarks/multinode.py [--part bytes,loss] [--nodes 4]

Issue 39 (b) and (c); `backend_scaling.py` runs them with the other parts. A Ray cluster
of `--nodes` raylets on this machine (`ray.cluster_utils.Cluster`), each with its own
object store, and a head without CPUs where the driver runs:

b. bytes each node's object store receives (Ray's own count, `cumulative_created_bytes`)
   while 2 actors per node start from a supernetwork folder they cannot read (moved
   away after the driver shipped it), for the demo supernetwork (untrained, the demo's
   parents and 1x28x28 input) and for resnet50 x resnext50_32x4d at 224x224 (untrained):
   per node / the folder's size (goal at most 1.1).
c. a search of stub evaluations that sleep `--sleep` s on 4 actors per node: wall time
   with one node removed when half the budget is in, against the same search
   undisturbed (same cluster, just before), and what losing that node's share of the
   actors for the second half predicts; evaluations lost and stored twice (goal 0, 0).
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import tempfile
import time
from pathlib import Path

from driver_ceiling import sleeper, stored_search
from evostitch.evolution.backend import Backend, FolderFactory
from evostitch.execution import RayBackend
from evostitch.execution.shipping import FILES, ship
from evostitch.supernet import Supernet

PAIRS = {
    "demo (1x28x28)": (["demo:resnet_like", "demo:mobilenet_like"], (1, 28, 28)),
    "resnet50 x resnext50_32x4d (3x224x224)": (
        ["torchvision:resnet50", "torchvision:resnext50_32x4d"],
        (3, 224, 224),
    ),
}
HERE = Path(__file__).resolve().parent


def start_cluster(nodes: int, cpus: int, store_mb: int = 200):
    """A cluster of `nodes` raylets of `cpus` CPUs and a head without CPUs, joined."""
    import ray
    from ray.cluster_utils import Cluster

    store = store_mb * 2**20
    # the raylets' workers inherit it and import this folder's modules (a runtime_env
    # would start Ray's runtime-env agent in every worker: slower, noisier)
    os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "object_store_memory": store, "include_dashboard": False},
    )
    for _ in range(nodes):
        cluster.add_node(num_cpus=cpus, object_store_memory=store)
    ray.init(address=cluster.address, logging_level="ERROR")
    return cluster


def received(folder: str):
    """A worker's evaluator that only checks it has the folder's files (part b measures
    their transfer; loading 1.1 GB in 8 actors would not fit this machine's memory)."""
    sizes = [(Path(folder) / name).stat().st_size for name in FILES]
    return lambda genotype: (0.0, float(sum(sizes)))


def created_bytes(cluster) -> dict[str, int]:
    """Bytes created in each worker node's object store so far (Ray's count)."""
    from ray._private.internal_api import node_stats  # no public per-node figure

    return {
        node.node_id: node_stats(node.node_ip_address, node.node_manager_port).store_stats
        .cumulative_created_bytes
        for node in cluster.worker_nodes
    }  # fmt: skip


def node_bytes(nodes: int) -> None:
    import ray

    cluster = start_cluster(nodes, cpus=2, store_mb=1600)
    print(f"\nb. bytes per node: {nodes} nodes x 2 actors, the folder unreadable to them")
    print(f"{'supernetwork':>40} {'folder MB':>10} {'per node MB':>22} {'max/folder':>10}")
    try:
        for label, (parents, shape) in PAIRS.items():
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp) / "sn"
                Supernet.build(parents, shape).save(folder)
                size = sum(f.stat().st_size for f in folder.iterdir())
                shipped = ship(FolderFactory(str(folder), received), ray.put)
                shutil.move(folder, Path(tmp) / "elsewhere")
                before = created_bytes(cluster)
                with RayBackend(shipped, num_workers=2 * nodes) as backend:
                    while backend.pool().ready < 2 * nodes:
                        backend.results(timeout=1.0)
                    sources = {r.source for _, r in backend.receipts.values()}
                    after = created_bytes(cluster)
            got = [after[n] - before[n] for n in after]
            shown = " ".join(f"{b / 2**20:.1f}" for b in got)
            print(f"{label:>40} {size / 2**20:>10.1f} {shown:>22} {max(got) / size:>10.3f}")
            assert sources == {"object store"}, sources
    finally:
        ray.shutdown()
        cluster.shutdown()


class LoseANode(Backend):
    """A Ray backend whose busiest node is removed once `at` results are in."""

    def __init__(self, inner: RayBackend, cluster, at: int) -> None:
        self.inner, self.cluster, self.at = inner, cluster, at
        self.capacity, self.seen, self.removed_at = inner.capacity, 0, None

    def submit(self, ticket, genotype) -> None:
        self.inner.submit(ticket, genotype)

    def pool(self):
        return self.inner.pool()

    def results(self, timeout=None):
        done = self.inner.results(timeout)
        self.seen += len(done)
        if self.removed_at is None and self.seen >= self.at:
            nodes = self.inner._nodes  # the node of the most busy actors
            busy = [nodes[actor] for actor, _ in self.inner._running.values()]
            victim = max(set(busy), key=busy.count)
            self.cluster.remove_node(next(n for n in self.cluster.worker_nodes
                                          if n.node_id == victim))  # fmt: skip
            self.removed_at = time.perf_counter()
        return done

    def close(self) -> None:
        self.inner.close()


def node_loss(nodes: int, per_node: int, sleep: float, rounds: int) -> None:
    import ray

    cluster = start_cluster(nodes, cpus=per_node)
    actors = nodes * per_node
    budget = actors * rounds
    print(f"\nc. a node lost at half the budget: {actors} actors on {nodes} nodes, "
          f"t = {sleep} s, {budget} evaluations (random search)")  # fmt: skip
    factory = functools.partial(sleeper, sleep)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            runs = {}
            for name in ("undisturbed", "node lost"):
                backend = RayBackend(factory, num_workers=actors)
                while backend.pool().ready < actors:
                    backend.results(timeout=1.0)
                if name == "node lost":
                    backend = LoseANode(backend, cluster, at=budget // 2)
                with backend:
                    runs[name] = stored_search(backend, "rs", budget, actors, Path(tmp) / name[:4])
            (calm, _), (hit, records) = runs["undisturbed"], runs["node lost"]
            predicted = calm * (0.5 + 0.5 * nodes / (nodes - 1))
            distinct = len({r.canonical for r in records})
            print(f"undisturbed {calm:.2f} s; node lost {hit:.2f} s ({hit / calm:.3f}x; "
                  f"losing 1/{nodes} of the actors for the second half predicts "
                  f"{predicted / calm:.3f}x)")  # fmt: skip
            print(f"stored {len(records)} of {budget}, {len(records) - distinct} twice, "
                  f"{sum(not r.ok for r in records)} failed")  # fmt: skip
    finally:
        ray.shutdown()
        cluster.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", default="bytes,loss")
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--sleep", type=float, default=0.5)
    parser.add_argument("--rounds", type=int, default=16, help="evaluations per actor in c")
    args = parser.parse_args()
    parts = args.part.split(",")
    if "bytes" in parts:
        node_bytes(args.nodes)
    if "loss" in parts:
        node_loss(args.nodes, 4, args.sleep, args.rounds)


if __name__ == "__main__":
    main()
