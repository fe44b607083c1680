"""Train the toy problem in its own process (the SIGKILL test kills it mid-run).

usage: python train_script.py OUT EPOCHS SLEEP_PER_STEP [--resume]
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine_toy import ToyTask, make_cfg, make_trainer  # noqa: E402


def main() -> None:
    out, epochs, sleep = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    torch.set_num_threads(1)
    cfg = make_cfg(out, epochs=epochs, resume="--resume" in sys.argv)
    make_trainer(cfg, ToyTask(sleep=sleep), augment=True, dropout=0.2, log=print).fit()


if __name__ == "__main__":
    main()
