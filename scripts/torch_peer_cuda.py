"""Runs ../shared/bench/torch_mgr.py's benchmark on CUDA without changing it: every tensor and
module is created on the GPU (torch.set_default_device), and each forward pass waits for the GPU
so that inference timings are real (training already waits through loss.item()).

usage: python3 scripts/torch_peer_cuda.py PATH/TO/torch_mgr.py --batch 256 --steps 20
"""
import importlib.util
import sys

import torch

path, args = sys.argv[1], sys.argv[2:]
spec = importlib.util.spec_from_file_location("torch_mgr", path)
peer = importlib.util.module_from_spec(spec)
spec.loader.exec_module(peer)
if not torch.cuda.is_available():
    sys.exit("torch_peer_cuda: torch sees no CUDA device")
torch.set_default_device("cuda")
forward = peer.MGR.forward


def synchronised_forward(self, *a, **k):
    out = forward(self, *a, **k)
    torch.cuda.synchronize()
    return out


peer.MGR.forward = synchronised_forward
sys.argv = [path, "bench", *args]
parser_args = peer.argparse.ArgumentParser()
parser_args.add_argument("cmd")
for name, default in [("batch", 64), ("steps", 20), ("d", 64), ("heads", 4), ("layers", 2),
                      ("uni-layers", 1), ("lt", 2)]:
    parser_args.add_argument(f"--{name}", type=int, default=default)
parser_args.add_argument("--rho", type=float, default=0.5)
peer.bench(parser_args.parse_args(sys.argv[1:]))
