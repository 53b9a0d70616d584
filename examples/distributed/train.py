"""A tiny linear model trained on 2 ranks with torch.distributed (gloo, on the CPU).

Each rank fits its own shard of a synthetic regression problem; DistributedDataParallel
all-reduces the gradients every step, so the ranks keep the same weights. Rank 0 logs the loss
(averaged over the ranks with an all-reduce) and saves the model. mlws sets MASTER_ADDR,
MASTER_PORT, RANK and WORLD_SIZE, as torchrun does: init_process_group reads them.
"""

import os

import torch
import torch.distributed as dist
from azureml.core import Run  # unchanged v1 code; `from mlws import Run` works the same

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
run = Run.get_context()

true_w = torch.tensor([[2.0], [-3.0], [0.5]])
g = torch.Generator().manual_seed(100 + rank)  # each rank its own data
x = torch.randn(256, 3, generator=g)
y = x @ true_w + 1.0 + 0.01 * torch.randn(256, 1, generator=g)

torch.manual_seed(0)  # the same start on every rank (DDP also broadcasts rank 0's weights)
model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(3, 1))
opt = torch.optim.SGD(model.parameters(), lr=0.1)
steps = int(os.environ.get("STEPS", "60"))
for step in range(steps):
    opt.zero_grad()
    loss = torch.nn.functional.mse_loss(model(x), y)
    loss.backward()  # DDP all-reduces the gradients here
    opt.step()
    mean = loss.detach().clone()
    dist.all_reduce(mean)
    mean /= world
    if rank == 0 and (step % 10 == 0 or step == steps - 1):
        run.log("loss", mean.item())

# The ranks must hold the same weights: their all-reduced mean equals each rank's own.
w = model.module.weight.detach().clone()
total = w.clone()
dist.all_reduce(total)
print(f"rank {rank}/{world}: loss {loss.item():.5f}, weights {w.flatten().tolist()}", flush=True)
if rank == 0:
    run.log("world_size", world)
    run.log("ranks_in_step", bool(torch.allclose(total / world, w)))
    run.log("weight_error", (w.T - true_w).abs().max().item())
    os.makedirs("outputs", exist_ok=True)
    torch.save(model.module.state_dict(), "outputs/model.pt")
# Every rank ends together: a rank that tears gloo down while another still works in it can
# abort (SIGABRT) when its peer's connection closes (seen under load: rank 1, after training).
dist.barrier()
dist.destroy_process_group()
