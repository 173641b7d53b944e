"""The CUDA path gives the CPU's numbers (within float tolerance). Skipped where no GPU is present
(CI and the project's CPU machines); run it on a GPU machine with `pytest tests/test_cuda.py`."""
import pytest
import torch

from reglab import RunConfig, make_dataset, train
from reglab.curvature import top_eigenvalues
from reglab.models import build_model

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

CASES = {
    "mlp sweep": [RunConfig(data="digits", n_train=300, width=32, depth=2, batch_size=32, steps=40, eval_every=20,
                            step_size=s, seed=k) for s, k in ((0.05, 0), (0.2, 1))],
    "batchnorm + momentum": [RunConfig(data="digits", n_train=300, width=32, depth=3, batchnorm=True, momentum=0.9,
                                       weight_decay=5e-4, decay="coupled", batch_size=64, steps=40, eval_every=20,
                                       seed=k) for k in (0, 1)],
    "transformer": [RunConfig(data="zipf_sequences", n_train=256, data_options={"vocab": 16, "context": 8, "n_test": 64},
                              model="transformer", width=16, depth=2, heads=2, optimizer="adamw", step_size=3e-3,
                              batch_size=32, steps=30, eval_every=15, seed=k) for k in (0, 1)],
}


@pytest.mark.parametrize("name", list(CASES))
def test_cuda_training_matches_cpu(name):
    configs = CASES[name]
    on_cpu = train([c.replace(device="cpu") for c in configs], progress=False)
    on_gpu = train([c.replace(device="cuda") for c in configs], progress=False)
    assert next(iter(on_gpu.params.values())).is_cuda
    for key, p in on_cpu.params.items():
        torch.testing.assert_close(on_gpu.params[key].cpu(), p, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(torch.tensor(on_gpu.summary.train_loss.to_numpy()),
                               torch.tensor(on_cpu.summary.train_loss.to_numpy()), rtol=1e-3, atol=1e-4)


def top_eigenvalue(device: str) -> torch.Tensor:
    data = make_dataset("digits", n_train=200).to(torch.device(device))
    cfg = RunConfig(data="digits", n_train=200, width=16, depth=1, activation="tanh", loss="mse")
    model = build_model(cfg, data)
    params = model.init([torch.Generator().manual_seed(0)], device=device)
    target = torch.nn.functional.one_hot(data.y_train, 10).float()
    loss = lambda q: 0.5 * (model(q, data.x_train) - target).pow(2).sum(-1).mean(-1)
    return top_eigenvalues(loss, params, k=1, tol=1e-4).eigenvalues[:, 0].cpu()


def test_cuda_top_eigenvalue_matches_cpu():
    torch.testing.assert_close(top_eigenvalue("cuda"), top_eigenvalue("cpu"), rtol=1e-3, atol=0)
