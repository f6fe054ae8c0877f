"""Trainer under DistributedDataParallel: 2 CPU processes with gloo keep identical weights."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp

from hoi_perception.config import load_config
from hoi_training.train_config import TrainConfig


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_rank(rank: int, world_size: int, port: int, root: str, out: str) -> None:
    """One torchrun-like process: environment, process group, two training steps, weights out."""
    import torch.distributed as dist

    from hoi_training.trainer import Trainer, init_distributed

    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world_size)})
    config = load_config(TrainConfig, "train/tiny_test.yaml", [
        f"datasets.synthetic.config.root={root}", f"output_dir={out}", "max_steps=2", "image_interval=0"])
    context = init_distributed(config.device)
    try:
        trainer = Trainer(config, context)
        trainer.fit()
        indices = [trainer.sampler.epoch_indices().tolist() for trainer.sampler.epoch in (0, 1)]
        torch.save({"model": trainer.network.state_dict(), "indices": indices, "backend": dist.get_backend()},
                   Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_keep_identical_parameters(tiny_set, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    mp.spawn(_train_rank, args=(2, _free_port(), str(tiny_set), str(out)), nprocs=2, join=True)
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert ranks[0]["backend"] == "gloo"
    # Each rank trained on its own half of every epoch ...
    for epoch in range(2):
        assert set(ranks[0]["indices"][epoch]).isdisjoint(ranks[1]["indices"][epoch])
    # ... and the replicas still hold the same weights and BatchNorm statistics.
    for name, tensor in ranks[0]["model"].items():
        assert torch.equal(tensor, ranks[1]["model"][name]), name
    initial = load_config(TrainConfig, "train/tiny_test.yaml", [f"datasets.synthetic.config.root={tiny_set}"])
    from hoi_perception.models.network import HOINet

    torch.manual_seed(initial.seed)
    untrained = HOINet(initial.model_config()).state_dict()
    assert not torch.equal(untrained["detection_head.size.3.weight"], ranks[0]["model"]["detection_head.size.3.weight"])
    checkpoint = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert checkpoint["step"] == 2 and checkpoint["world_size"] == 2
    for name, tensor in checkpoint["model"].items():
        assert torch.equal(tensor, ranks[0]["model"][name]), name
