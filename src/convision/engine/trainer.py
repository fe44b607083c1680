"""The one training loop for every task (segmentation now; classification/detection later).

Task-specific work (collation, loss, metric, evaluation step) comes from a :class:`Task`; the
trainer owns sampling, distribution, the optimiser and schedule, mixed precision, progress,
checkpoints, resume and the output folder. See docs/architecture.md ("Engine", "Checkpoint").

Output folder (``cfg.out``, written by rank 0 only):
  run.json       meta (task, model, classes, config, ...) plus world size and device
  metrics.jsonl  one JSON record per epoch: epoch, train_loss, lr, images_per_s, time, val metrics
  curves.png     the curves of metrics.jsonl (``convision.viz.plot_curves``)
  last.pt        checkpoint after every epoch (atomic)
  best.pt        checkpoint of the epoch with the best ``task.main_metric`` (atomic)

Reproducibility: every training sample is loaded with the global RNGs (torch, numpy, random)
seeded from ``(cfg.seed, epoch, sample index)``, so random augmentation depends neither on the
number of loader workers, nor on the number of processes, nor on whether the run was resumed.

Batch norm under torchrun with ``cfg.sync_bn``: torch's SyncBatchNorm on CUDA; on CPU, where
torch's refuses to run, convision's CPUSyncBatchNorm (engine/distributed.py). Either way N
processes with B/N images each train like one process with B images.

Validation under torchrun: each process evaluates the samples ``rank, rank + world, ...`` of the
validation set (no padding, no duplicates, unlike DistributedSampler) with the unwrapped model,
then the metric is all-reduced, so the numbers are those of the full set exactly.
"""

from __future__ import annotations

import io
import json
import math
import pickle
import random
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler
from tqdm import tqdm

import convision
from convision.engine import distributed as dist_utils
from convision.engine.checkpoint import FORMAT, load_checkpoint, save_checkpoint
from convision.engine.distributed import DistInfo, resolve_device
from convision.errors import CheckpointError, ConfigError, DataError, TrainingDiverged

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("poly", "cosine", "constant")
OUTPUT_FILES = ("last.pt", "best.pt", "metrics.jsonl", "curves.png", "run.json")


class Metric(Protocol):
    def update(self, *args: Any, **kwargs: Any) -> None: ...
    def reduce_(self) -> None: ...
    def compute(self) -> dict[str, Any]: ...


class Task(Protocol):
    main_metric: str  # higher is better

    def collate(self, batch: list) -> Any: ...
    def loss(
        self, model: nn.Module, batch: Any, device: torch.device
    ) -> torch.Tensor: ...
    def new_metric(self) -> Metric: ...
    def eval_step(
        self, model: nn.Module, batch: Any, device: torch.device, metric: Metric
    ) -> None: ...


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy and Python's ``random``."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ---------------------------------------------------------------- sampling


class _EpochSampler(Sampler):
    """Wraps a DistributedSampler and yields ``(epoch, index)`` so samples can be seeded per epoch."""

    def __init__(self, sampler: DistributedSampler) -> None:
        self.sampler = sampler
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        return ((epoch, i) for i in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)


class _SeededSamples(Dataset):
    """``ds[(epoch, i)]`` = ``dataset[i]`` loaded with the global RNGs seeded from (seed, epoch, i)."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        words = np.random.SeedSequence(
            [self.seed % 2**63, epoch, index]
        ).generate_state(2)
        sample_seed = (int(words[0]) << 32) | int(words[1])
        in_worker = torch.utils.data.get_worker_info() is not None
        saved = (
            None
            if in_worker
            else (torch.get_rng_state(), np.random.get_state(), random.getstate())
        )
        try:
            torch.manual_seed(sample_seed)
            np.random.seed(int(words[0]))
            random.seed(sample_seed)
            return self.dataset[index]
        finally:
            if (
                saved is not None
            ):  # the main process's RNGs (dropout, ...) must not be disturbed
                torch.set_rng_state(saved[0])
                np.random.set_state(saved[1])
                random.setstate(saved[2])


class _ShardSampler(Sampler):
    """Indices ``rank, rank + world, ...``: every sample exactly once over all processes."""

    def __init__(self, n: int, rank: int, world_size: int) -> None:
        self.indices = list(range(rank, n, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def _loader_kwargs(workers: int, device: torch.device) -> dict[str, Any]:
    return {
        "num_workers": workers,
        "persistent_workers": workers > 0,
        "pin_memory": device.type == "cuda",
    }


def eval_loader(
    task: Task, dataset: Dataset, batch_size: int, workers: int, device: torch.device
) -> DataLoader:
    """Batches of this process's shard of ``dataset`` (rank r takes r, r+W, ...; no padding)."""
    rank, world = dist_utils.rank_world()
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=_ShardSampler(len(dataset), rank, world),  # type: ignore[arg-type]
        collate_fn=task.collate,
        generator=torch.Generator().manual_seed(0),  # keeps the global RNG untouched
        **_loader_kwargs(workers, device),
    )


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


# In a log file (not a terminal) redraw the bars rarely so the log stays readable.
_BAR_INTERVAL = 0.1 if sys.stderr.isatty() else 10.0


def _run_eval(
    task: Task,
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    progress: bool,
) -> dict:
    return run_metric(task, model, loader, device, progress).compute()


@torch.no_grad()
def run_metric(
    task: Task,
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    progress: bool,
) -> Metric:
    """The task's metric updated over ``loader`` and reduced over processes (not yet computed)."""
    model = _unwrap(
        model
    )  # DDP's forward would sync buffers; shards may differ in length
    was_training = model.training
    model.eval()
    metric = task.new_metric()
    show = progress and dist_utils.rank_world()[0] == 0
    for batch in tqdm(
        loader,
        desc="val",
        leave=False,
        file=sys.stderr,
        disable=not show,
        dynamic_ncols=True,
        mininterval=_BAR_INTERVAL,
    ):
        task.eval_step(model, batch, device, metric)
    metric.reduce_()
    model.train(was_training)
    return metric


def evaluate(
    task: Task,
    model: nn.Module,
    dataset: Dataset,
    *,
    batch_size: int,
    workers: int = 2,
    device: str | torch.device,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate ``model`` on ``dataset`` with ``task``'s metric; shards the set over torchrun processes."""
    device = resolve_device(device)
    model = _unwrap(model).to(device)
    loader = eval_loader(task, dataset, batch_size, workers, device)
    return _run_eval(task, model, loader, device, progress)


# ---------------------------------------------------------------- schedule


def make_lr_lambda(
    schedule: str, total_iters: int, warmup_iters: int, poly_power: float
) -> Callable[[int], float]:
    """Factor of the peak lr at iteration ``step`` (0-based): linear warm-up, then poly/cosine/constant."""
    if schedule not in SCHEDULES:
        raise ConfigError(
            f"schedule: unknown {schedule!r} (expected {' | '.join(SCHEDULES)})"
        )

    def factor(step: int) -> float:
        if step < warmup_iters:
            return (step + 1) / warmup_iters
        t = min(
            1.0, max(0.0, (step - warmup_iters) / max(1, total_iters - warmup_iters))
        )
        if schedule == "poly":
            return (1.0 - t) ** poly_power
        if schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * t))
        return 1.0

    return factor


def _rng_state(device: torch.device) -> dict[str, Any]:
    """RNG states as tensors / plain types (loadable with weights_only=True)."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [
            np_state[0],
            torch.from_numpy(np_state[1].astype(np.int64)),
            *np_state[2:],
        ],
        "python": [
            random.getstate()[0],
            list(random.getstate()[1]),
            random.getstate()[2],
        ],
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if "numpy" in state:
        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state(
            (name, keys.numpy().astype(np.uint32), pos, has_gauss, cached)
        )
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


# ---------------------------------------------------------------- trainer


@dataclass
class _Progress:
    """Where a run stands: the first epoch to train, the best main metric so far, the records."""

    start_epoch: int = 1
    best_metric: float | None = None
    best_epoch: int | None = None
    history: list[dict] = field(default_factory=list)

    def add(self, record: dict[str, Any], value: Any) -> bool:
        """Append the epoch's record; True when ``value`` (the main metric) is a new best."""
        self.history.append(record)
        improved = (
            isinstance(value, (int, float))
            and math.isfinite(value)
            and (self.best_metric is None or value > self.best_metric)
        )
        if improved:
            self.best_metric, self.best_epoch = float(value), record["epoch"]
        return improved


class Trainer:
    """Trains ``model`` on ``train_set`` for ``cfg.epochs`` epochs, validating after each epoch.

    ``meta`` = {"task", "model": {"name", "kwargs"}, "classes", "colors", "normalization", "config"}
    is copied into every checkpoint. ``dist`` comes from :func:`init_distributed` under torchrun;
    None means one process on ``cfg.device``. After :meth:`fit`, ``self.model`` (unwrapped) holds the
    last epoch's weights; the best ones are in ``<out>/best.pt``.
    """

    #: DDP's find_unused_parameters: a subclass that freezes parameters between epochs sets it
    find_unused_parameters = False

    def __init__(
        self,
        *,
        task: Task,
        model: nn.Module,
        train_set: Dataset,
        val_set: Dataset | None,
        cfg: Any,
        meta: dict[str, Any],
        workers: int = 2,
        dist: DistInfo | None = None,
        progress: bool = True,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.task = task
        self.model = model
        self.train_set = train_set
        self.val_set = val_set
        self.cfg = cfg
        self.meta = dict(meta)
        self.workers = workers
        self.dist = (
            dist if dist is not None else DistInfo(device=resolve_device(cfg.device))
        )
        self.progress = progress
        self.out = Path(cfg.out)
        self._log = log if log is not None else (lambda msg: print(msg, flush=True))

    # ------------------------------------------------------------ helpers

    def log(self, msg: str) -> None:
        if self.dist.is_main:
            self._log(msg)

    def _check_config(self) -> int:
        cfg, world = self.cfg, self.dist.world_size
        if cfg.epochs < 1:
            raise ConfigError(f"epochs: must be at least 1, got {cfg.epochs}")
        if cfg.batch_size < 1:
            raise ConfigError(f"batch_size: must be at least 1, got {cfg.batch_size}")
        if cfg.batch_size % world != 0:
            raise ConfigError(
                f"batch_size: {cfg.batch_size} cannot be split over {world} processes; use a multiple of {world}"
            )
        if cfg.optimizer not in OPTIMIZERS:
            raise ConfigError(
                f"optimizer: unknown {cfg.optimizer!r} (expected {' | '.join(OPTIMIZERS)})"
            )
        if cfg.schedule not in SCHEDULES:
            raise ConfigError(
                f"schedule: unknown {cfg.schedule!r} (expected {' | '.join(SCHEDULES)})"
            )
        if cfg.lr <= 0:
            raise ConfigError(f"lr: must be positive, got {cfg.lr}")
        if cfg.warmup_epochs < 0:
            raise ConfigError(f"warmup_epochs: must be >= 0, got {cfg.warmup_epochs}")
        if len(self.train_set) == 0:  # type: ignore[arg-type]
            raise DataError("training set: no samples")
        return cfg.batch_size // world

    def _check_meta(self) -> None:
        """meta goes into every checkpoint: it must load with weights_only=True (a bug otherwise)."""
        buffer = io.BytesIO()
        torch.save(self.meta, buffer)
        buffer.seek(0)
        try:
            torch.load(buffer, weights_only=True)
        except pickle.UnpicklingError as e:
            first = str(e).strip().splitlines()[0]
            raise TypeError(
                f"Trainer meta must hold only plain types and tensors: {first}"
            ) from None

    def _check_out(self) -> Path | None:
        """Apply the resume/overwrite rules; returns the checkpoint to resume from, if any."""
        for folder in (self.out, *self.out.parents):
            if folder.exists() and not folder.is_dir():
                raise ConfigError(f"out: {folder} is a file, not a folder")
        last = self.out / "last.pt"
        overwrite = getattr(self.cfg, "overwrite", False)
        if self.cfg.resume:
            if not last.is_file():
                raise ConfigError(
                    f"{last}: nothing to resume; drop --resume to start a new run"
                )
            return last
        if last.is_file() and not overwrite:
            raise ConfigError(
                f"{self.out} already holds a run; pass --resume to continue or --overwrite to start over"
            )
        return None

    def _build_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        cfg = self.cfg
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ConfigError("model: no trainable parameters")
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(
                params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
            )
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    def _payload(
        self,
        epoch: int,
        best_metric: float | None,
        best_epoch: int | None,
        metrics: dict,
    ) -> dict:
        payload = dict(self.meta)
        payload.update(
            {
                "format": FORMAT,
                "convision_version": convision.__version__,
                "state_dict": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "epoch": epoch,
                "best_metric": best_metric,
                "best_epoch": best_epoch,
                "metrics": metrics,
                "rng": _rng_state(self.dist.device),
            }
        )
        return payload

    def _read_history(self, upto: int) -> list[dict]:
        """Records of metrics.jsonl with epoch <= upto (a torn last line is dropped)."""
        path = self.out / "metrics.jsonl"
        if not path.is_file():
            return []
        records = []
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if (
                isinstance(record, dict)
                and isinstance(record.get("epoch"), int)
                and record["epoch"] <= upto
            ):
                records.append(record)
        return records

    def _write_history(self, records: list[dict]) -> None:
        text = "".join(json.dumps(r) + "\n" for r in records)
        tmp = self.out / "metrics.jsonl.tmp"
        tmp.write_text(text)
        tmp.replace(self.out / "metrics.jsonl")

    def _append_history(self, record: dict) -> None:
        with open(self.out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()

    def _plot(self) -> None:
        try:
            from convision.viz import plot_curves

            plot_curves(self.out / "metrics.jsonl", self.out / "curves.png")
        except Exception as e:  # noqa: BLE001 - a picture must never stop training
            self.log(f"note: could not draw curves.png ({type(e).__name__}: {e})")

    # ------------------------------------------------------------ main loop

    def fit(self) -> dict[str, Any]:
        """Train; returns {"best_epoch", "best_metric", "history": [per-epoch records]}."""
        per_batch = self._check_config()
        self._check_meta()
        resume_from = self._check_out()
        self._start_out(resume_from)
        seed_everything(self.cfg.seed)
        train_model = self._place_model()
        sampler, train_loader, val_loader = self._loaders(per_batch)
        self._build_optimisation(len(train_loader))
        progress = self._resume(resume_from) if resume_from is not None else _Progress()
        run_start = time.time()
        for epoch in range(progress.start_epoch, self.cfg.epochs + 1):
            sampler.set_epoch(epoch)
            record, metrics = self._epoch(
                epoch, train_model, train_loader, val_loader, per_batch, len(sampler)
            )
            improved = progress.add(record, metrics.get(self.task.main_metric))
            if self.dist.is_main:
                self._save_epoch(record, metrics, progress, improved)
                self.log(
                    self._summary(
                        record,
                        self.cfg.epochs,
                        run_start,
                        epoch - progress.start_epoch + 1,
                    )
                )
        return {
            "best_epoch": progress.best_epoch,
            "best_metric": progress.best_metric,
            "history": progress.history,
        }

    def _start_out(self, resume_from: Path | None) -> None:
        """Rank 0 creates the output folder (a fresh start clears this trainer's files) and writes run.json."""
        info = self.dist
        if info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            if (
                resume_from is None
            ):  # fresh start (or --overwrite): clear this trainer's outputs
                for name in OUTPUT_FILES:
                    (self.out / name).unlink(missing_ok=True)
            run = {
                **self.meta,
                "world_size": info.world_size,
                "device": str(info.device),
                "torch": torch.__version__,
            }
            (self.out / "run.json").write_text(
                json.dumps(run, indent=2, default=str) + "\n"
            )
        dist_utils.barrier()

    def _place_model(self) -> nn.Module:
        """The model on its device (synchronised batch norm under torchrun); returns the module to train
        (DDP-wrapped under torchrun), keeping the plain one as ``self.model``."""
        info, device = self.dist, self.dist.device
        model = self.model.to(device)
        if info.distributed and self.cfg.sync_bn:
            # CUDA: torch's SyncBatchNorm; CPU (which torch's refuses): convision's CPUSyncBatchNorm
            model = dist_utils.convert_sync_batchnorm(model, device)
        self.model = model
        if not info.distributed:
            return model
        return DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=self.find_unused_parameters,
        )

    def _loaders(
        self, per_batch: int
    ) -> tuple[_EpochSampler, DataLoader, DataLoader | None]:
        """The training sampler and loader (this process's shard) and the validation loader, if any."""
        cfg, info, device = self.cfg, self.dist, self.dist.device
        sampler = _EpochSampler(
            DistributedSampler(
                self.train_set,
                num_replicas=info.world_size,
                rank=info.rank,
                shuffle=True,
                seed=cfg.seed,
                drop_last=False,
            )
        )
        # a last batch of one image would break batch norm on 1x1 maps ("Expected more than 1 value
        # per channel"); every process holds the same shard length, so all drop it together
        drop_single = len(sampler) % per_batch == 1 and len(sampler) > 1
        train_loader = DataLoader(
            _SeededSamples(self.train_set, cfg.seed),
            batch_size=per_batch,
            sampler=sampler,
            collate_fn=self.task.collate,
            drop_last=drop_single,
            generator=torch.Generator().manual_seed(
                cfg.seed + info.rank
            ),  # keeps the global RNG untouched
            **_loader_kwargs(self.workers, device),
        )
        val_loader = None
        if self.val_set is not None and len(self.val_set) > 0:  # type: ignore[arg-type]
            val_loader = eval_loader(
                self.task, self.val_set, per_batch, self.workers, device
            )
        return sampler, train_loader, val_loader

    def _build_optimisation(self, iters: int) -> None:
        """Optimizer, per-iteration schedule and (CUDA) mixed-precision scaler."""
        cfg = self.cfg
        self.iters = iters
        self.optimizer = self._build_optimizer(self.model)
        lr_lambda = make_lr_lambda(
            cfg.schedule,
            cfg.epochs * iters,
            round(cfg.warmup_epochs * iters),
            cfg.poly_power,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda)
        self.use_amp = bool(cfg.amp) and self.dist.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda") if self.use_amp else None

    def _resume(self, path: Path) -> _Progress:
        """Model, optimizer, schedule, scaler and RNG states from ``path``; the history up to its epoch."""
        ckpt = load_checkpoint(path)
        try:
            self.model.load_state_dict(ckpt["state_dict"])
        except RuntimeError as e:
            lines = str(e).strip().splitlines()
            detail = (lines[1] if len(lines) > 1 else lines[0]).strip()
            raise CheckpointError(
                f"{path}: does not match the model ({detail})"
            ) from None
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        done = int(ckpt["epoch"])
        progress = _Progress(
            done + 1,
            ckpt.get("best_metric"),
            ckpt.get("best_epoch"),
            self._read_history(done),
        )
        if self.dist.is_main:
            self._write_history(progress.history)
        _set_rng_state(ckpt["rng"], self.dist.device)
        self.log(f"resuming from {path} (epoch {done}), continuing at epoch {done + 1}")
        if done + 1 > self.cfg.epochs:
            self.log(
                f"nothing to do: the run already finished {done} of {self.cfg.epochs} epochs"
            )
        return progress

    def _epoch(
        self,
        epoch: int,
        train_model: nn.Module,
        train_loader: DataLoader,
        val_loader: DataLoader | None,
        per_batch: int,
        shard: int,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """One epoch of training and validation; returns (the metrics.jsonl record, the full metrics)."""
        t0 = time.time()
        loss_total, seen, lr = self._train_epoch(
            epoch, train_model, train_loader, per_batch, shard, self.use_amp
        )
        train_time = time.time() - t0
        device = self.dist.device
        metrics = (
            _run_eval(self.task, self.model, val_loader, device, self.progress)
            if val_loader is not None
            else {}
        )
        record: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": loss_total / self.iters,
            "lr": lr,
            "images_per_s": seen / max(train_time, 1e-9),
            "time": time.time() - t0,
        }
        for k, v in metrics.items():
            if (
                isinstance(v, (int, float))
                and not isinstance(v, bool)
                and math.isfinite(v)
            ):
                record[k] = v
        return record, metrics

    def _save_epoch(
        self,
        record: dict[str, Any],
        metrics: dict[str, Any],
        progress: _Progress,
        improved: bool,
    ) -> None:
        """Rank 0: the record, then the checkpoints (last.pt; best.pt when improved), then the curves."""
        # order matters for SIGKILL: metrics first (truncated on resume), then checkpoints
        self._append_history(record)
        payload = self._payload(
            record["epoch"],
            progress.best_metric,
            progress.best_epoch,
            {**metrics, **record},
        )
        if improved:
            save_checkpoint(self.out / "best.pt", payload)
        save_checkpoint(self.out / "last.pt", payload)
        self._plot()

    def _train_epoch(
        self,
        epoch: int,
        model: nn.Module,
        loader: DataLoader,
        per_batch: int,
        shard: int,
        use_amp: bool,
    ) -> tuple[float, int, float]:
        """One pass over the training shard; returns (sum of step losses, images seen, last lr)."""
        cfg, info, device = self.cfg, self.dist, self.dist.device
        params = [p for p in self.model.parameters() if p.requires_grad]
        model.train()
        loss_total, seen, t0 = 0.0, 0, time.time()
        lr = self.optimizer.param_groups[0]["lr"]
        bar = tqdm(
            total=len(loader),
            desc=f"epoch {epoch}/{cfg.epochs}",
            leave=False,
            file=sys.stderr,
            disable=not (self.progress and info.is_main),
            dynamic_ncols=True,
            mininterval=_BAR_INTERVAL,
        )
        try:
            for step, batch in enumerate(loader, start=1):
                with (
                    torch.autocast("cuda", dtype=torch.float16)
                    if use_amp
                    else nullcontext()
                ):
                    loss = self.task.loss(model, batch, device)
                if loss.ndim != 0:
                    raise ValueError(
                        f"task.loss must return a scalar, got shape {tuple(loss.shape)}"
                    )
                # one small all-reduce per step: the mean loss for the log, and a divergence flag so
                # that every process stops at the same step instead of hanging in backward()
                detached = loss.detach().float()
                stats = torch.stack(
                    [
                        torch.nan_to_num(detached, 0.0, 0.0, 0.0),
                        (~torch.isfinite(detached)).float(),
                    ]
                )
                dist_utils.all_reduce_sum_(stats)
                loss_sum, bad = stats.tolist()
                if bad:
                    raise TrainingDiverged(self._diverged_message(epoch, step))
                self.optimizer.zero_grad(set_to_none=True)
                if self.scaler is not None:
                    self.scaler.scale(loss).backward()
                    if cfg.grad_clip > 0:
                        self.scaler.unscale_(self.optimizer)
                        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                else:
                    loss.backward()
                    if cfg.grad_clip > 0:
                        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                    self.optimizer.step()
                lr = self.optimizer.param_groups[0]["lr"]  # the lr this step used
                self.scheduler.step()

                loss_total += loss_sum / info.world_size
                seen = min(step * per_batch, shard) * info.world_size
                bar.update(1)
                bar.set_postfix(
                    loss=f"{loss_total / step:.4f}",
                    img_s=f"{seen / max(time.time() - t0, 1e-9):.1f}",
                )
        finally:
            bar.close()
        return loss_total, seen, lr

    def _diverged_message(self, epoch: int, step: int) -> str:
        last = self.out / "last.pt"
        if epoch > 1:
            kept = f"{last} (epoch {epoch - 1}) is the last good checkpoint"
        else:
            kept = "no checkpoint was written yet"
        return f"loss became NaN or infinite at epoch {epoch}, step {step} (try a lower --lr or --grad-clip); {kept}"

    def _summary(self, record: dict, epochs: int, run_start: float, done: int) -> str:
        parts = [
            f"epoch {record['epoch']}/{epochs}",
            f"train_loss {record['train_loss']:.4f}",
        ]
        skip = {"epoch", "train_loss", "lr", "images_per_s", "time"}
        parts += [f"{k} {v:.4f}" for k, v in record.items() if k not in skip]
        remaining = (time.time() - run_start) / done * (epochs - record["epoch"])
        parts += [
            f"lr {record['lr']:.2e}",
            f"{record['images_per_s']:.1f} img/s",
            f"{record['time']:.1f}s",
            f"eta {_hms(remaining)}",
        ]
        return "  ".join(parts)


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"
