# Writes tests/data/torch_save_sd.ckpt with Python's real torch.save (run with
# Debian's python3-torch 1.13: /usr/bin/python3 tests/data/make_torch_save_fixture.py).
# The C++ test (PickleReadsPythonTorchSave) recomputes every value, so the
# fixture is checked without Python. It mimics an SD/Lightning .ckpt: a
# top-level dict with "state_dict", an int, a float, and a callbacks dict
# keyed by a pytorch_lightning class (an opaque global the reader must skip).
import collections, os, sys, types
import torch

for parent in ("pytorch_lightning", "pytorch_lightning.callbacks"):
    sys.modules[parent] = types.ModuleType(parent)
mod = types.ModuleType("pytorch_lightning.callbacks.model_checkpoint")
class ModelCheckpoint:  # stands in for Lightning's callback class
    pass
ModelCheckpoint.__module__ = mod.__name__
mod.ModelCheckpoint = ModelCheckpoint
sys.modules[mod.__name__] = mod

base = torch.arange(24, dtype=torch.float32)
sd = collections.OrderedDict()
sd["model.diffusion_model.w"] = base[2:14].view(3, 4).t()          # non-contiguous view with an offset
sd["model.diffusion_model.w_alias"] = base.view(4, 6)               # the same storage
sd["first_stage_model.h"] = (torch.arange(6, dtype=torch.float32) / 4).half().view(2, 3)
sd["cond_stage_model.b"] = (torch.arange(4, dtype=torch.float32) - 1.5).bfloat16()
sd["p"] = torch.nn.Parameter(torch.full((2,), 0.25))
sd["i"] = torch.arange(3, dtype=torch.int64)
sd["scalar"] = torch.tensor(7.5, dtype=torch.float64)
obj = {"state_dict": sd, "global_step": 5, "epoch": 1.5,
       "callbacks": {ModelCheckpoint: {"best_model_score": torch.tensor(0.5), "dirpath": "logs"}}}
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_save_sd.ckpt")
torch.save(obj, out)
print(out, os.path.getsize(out), "bytes")
