"""The training run's directory: its layout, who may write it, and what state it is in.

    RUN/config.yaml        resolved config (what --resume continues with)
    RUN/run.json           data directory and encoder fingerprint (the cache key's source)
    RUN/source_vocab.json  the pruned encoder vocabulary
    RUN/train.log          plain log;  RUN/metrics.jsonl  one JSON object per log/eval line
    RUN/curves.png         training curves (with matplotlib)
    RUN/finished.json      written last: the run is complete
    RUN/checkpoints/       best/, last/ (resumable), averaged/, step-NNNNNNN/ (for averaging)
    RUN/.lock              held by the one process writing the run

This class is the only place these names are spelled; everything else asks it.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

from nmt_bert.atomic import check_not_cwd, replaced_versions
from nmt_bert.model.checkpoint import TRAINER_STATE, WEIGHTS as CHECKPOINT_FILE
from nmt_bert.errors import UserError
from nmt_bert.locks import LOCK_FILE, exclusive



class RunDir:
    def __init__(self, path: Path | str):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # --- the layout ---------------------------------------------------------------------
    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def info_file(self) -> Path:
        return self.path / "run.json"

    @property
    def source_vocab(self) -> Path:
        return self.path / "source_vocab.json"

    @property
    def log_file(self) -> Path:
        return self.path / "train.log"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def curves(self) -> Path:
        return self.path / "curves.png"

    @property
    def finished_file(self) -> Path:
        return self.path / "finished.json"

    @property
    def lock_file(self) -> Path:
        return self.path / LOCK_FILE

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def checkpoint(self, name: str) -> Path:
        """checkpoints/NAME: "best", "last", "averaged" or a `snapshot_name`."""
        return self.checkpoints / name

    @staticmethod
    def snapshot_name(step: int) -> str:
        return f"step-{step:07d}"

    def snapshots(self) -> list[Path]:
        """Complete step-N checkpoints, oldest first."""
        return sorted(p for p in self.checkpoints.glob("step-*") if (p / CHECKPOINT_FILE).exists())

    # --- its state ----------------------------------------------------------------------
    @staticmethod
    def is_run(path: Path) -> bool:
        return (Path(path) / "run.json").is_file()

    @property
    def finished(self) -> bool:
        return self.finished_file.exists()

    def has_checkpoint(self) -> bool:
        return any(self.checkpoints.glob(f"*/{CHECKPOINT_FILE}")) or any(
            self.checkpoints.glob(f".*.old-*/{CHECKPOINT_FILE}"))

    def resumable(self) -> Path | None:
        """checkpoints/last, or the previous one if a kill landed between its two renames."""
        for candidate in (self.checkpoint("last"), *replaced_versions(self.checkpoint("last"))):
            if (candidate / TRAINER_STATE).exists():
                return candidate
        return None

    def best_or_last(self) -> Path | None:
        """The checkpoint that translates for the run: best, else last."""
        for name in ("best", "last"):
            if (self.checkpoint(name) / CHECKPOINT_FILE).exists():
                return self.checkpoint(name)
        return None

    def read_info(self) -> dict:
        try:
            info = json.loads(self.info_file.read_text(encoding="utf-8"))
            Path(info["data_dir"])
        except FileNotFoundError:
            raise UserError(f"{self.path}: not a run directory (no run.json); "
                            "start one with --data/--out") from None
        except (ValueError, KeyError, TypeError):
            raise UserError(f"{self.info_file}: damaged run description (no data_dir)") from None
        return info

    def write_info(self, info: dict) -> None:
        self.info_file.write_text(json.dumps(info, indent=2), encoding="utf-8")

    # --- creating one -------------------------------------------------------------------
    def check_new(self, data_dir: Path) -> None:
        """Refuse an --out that would mix the run into something else; see `prepare_new`."""
        check_not_cwd(self.path)
        run, data = self.path.resolve(), Path(data_dir).resolve()
        if run == data or data in run.parents or run in data.parents:
            raise UserError(f"--out {self.path}: overlaps the prepared data directory "
                            f"{data_dir}; give the run a directory of its own")
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"--out {self.path}: is a file; give a directory name")
        if self.is_run(self.path):
            if self.has_checkpoint() or self.finished:
                raise UserError(f"{self.path}: already holds a run; continue it with --resume "
                                f"{self.path} or choose another --out")
            return
        if self.path.is_dir() and any(p.name != LOCK_FILE for p in self.path.iterdir()):
            raise UserError(f"--out {self.path}: exists and is not an nmt-bert run directory; "
                            "nothing was changed. Choose another directory or remove it yourself")

    def prepare_new(self, data_dir: Path, log=None) -> None:
        """Make the directory ready for a new run (call while holding `lock`).

        A run that stopped before its first checkpoint (killed, disk full) holds nothing
        worth keeping: its files are removed and the run starts over, and `log` says so.
        """
        self.check_new(data_dir)
        if self.is_run(self.path):
            if log is not None:
                log(f"{self.path}: the earlier run stopped before its first checkpoint; "
                    "starting it again")
            for file in (self.config, self.info_file, self.source_vocab, self.log_file,
                         self.metrics, self.curves):
                with contextlib.suppress(FileNotFoundError):
                    file.unlink()
            shutil.rmtree(self.checkpoints, ignore_errors=True)
        self.path.mkdir(parents=True, exist_ok=True)

    def create(self, data_dir: Path, config, log=None) -> None:
        """Start a new run here (hold `lock`): refuses a directory that is not ours."""
        from nmt_bert.config import save_config

        self.prepare_new(data_dir, log)
        save_config(config, self.config)
        self.write_info({"data_dir": str(Path(data_dir).resolve())})

    def read(self):
        """(config, data directory, run.json) of an existing run, for --resume."""
        from nmt_bert.config import config_from_dict, read_yaml

        info = self.read_info()
        return config_from_dict(read_yaml(self.config), str(self.config)), Path(info["data_dir"]), info

    # --- one writer ---------------------------------------------------------------------
    def lock(self):
        """Hold the run's lock for a block (`locks.exclusive`): one writer per run."""
        return exclusive(self.path)
