"""Run in its own process by test_multinode.py: a head and two worker nodes (ray.cluster_utils),
then a 2-worker training run on a snapshot, one worker per node. Prints the run folder."""

import sys

from ray.cluster_utils import Cluster

from stream2dataset.cluster import ray_env_defaults
from stream2dataset.layout import Storage
from stream2dataset.training.trainer import train
from tests.training.conftest import tiny


def main(root: str) -> None:
    import ray

    ray_env_defaults()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "resources": {"head": 1}})
    for i in range(2):  # 2 CPUs each: one training worker and its share of the loader
        cluster.add_node(num_cpus=2, resources={f"node{i}": 1})
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        # cpus_per_worker 1.5: no node can hold two workers, so Ray Train spreads them.
        folder = train(Storage(root), "diffusion", "train-v1",
                       tiny(steps=6, checkpoint_every=6, sample_every=6, cpus_per_worker=1.5, loader_cpus=0.5),
                       run="multinode")
        print(folder)
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
