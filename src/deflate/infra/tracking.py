"""MLflow, outage-tolerant: a tracking failure warns once and training carries on.

Default store: ``sqlite:///mlflow.db`` inside the repo (git-ignored) with artifacts in
``mlartifacts/``; ``tracking.uri`` points at a server instead. Browse with
``mlflow ui --backend-store-uri sqlite:///mlflow.db``.
"""
from __future__ import annotations

import os
import subprocess
import warnings
from pathlib import Path


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


class Tracker:
    def __init__(self, cfg: dict, stage: str, params: dict, device: str):
        self.on, self.mlflow = bool(cfg["enabled"]), None
        if not self.on:
            return
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        try:
            import mlflow

            self.mlflow = mlflow
            uri = cfg["uri"] or f"sqlite:///{Path('mlflow.db').resolve()}"
            mlflow.set_tracking_uri(uri)
            name = cfg["experiment"]
            if mlflow.get_experiment_by_name(name) is None and uri.startswith("sqlite"):
                mlflow.create_experiment(name, artifact_location=Path("mlartifacts").resolve().as_uri())
            mlflow.set_experiment(name)
            # system metrics (CPU, memory; GPU utilisation too when nvidia-ml-py is installed) on GPU runs
            mlflow.start_run(run_name=stage, log_system_metrics=device.startswith("cuda"))
            mlflow.set_tags({"dvc.stage": stage, "git.commit": git_commit(), "device": device,
                             **({"gpu": _gpu_name()} if device.startswith("cuda") else {})})
            flat = {k: str(v)[:500] for k, v in _flatten(params).items()}
            for i in range(0, len(flat), 90):  # MLflow takes at most 100 params per call
                mlflow.log_params(dict(list(flat.items())[i:i + 90]))
        except Exception as e:  # tracking must never stop training
            self._fail(e)

    def _fail(self, e: Exception):
        warnings.warn(f"MLflow tracking disabled for this run: {type(e).__name__}: {str(e)[:200]}", stacklevel=3)
        self.on = False

    def metrics(self, values: dict, step: int):
        if self.on:
            try:
                self.mlflow.log_metrics({k: float(v) for k, v in values.items()}, step=step)
            except Exception as e:
                self._fail(e)

    def artifacts(self, path: Path, name: str):
        if self.on:
            try:
                self.mlflow.log_artifacts(str(path), artifact_path=name)
            except Exception as e:
                self._fail(e)

    def log_pyfunc(self, bundle: Path) -> str:
        """Log a bundle (see :mod:`deflate.answering.engine`) as an MLflow pyfunc model, the model code being
        ``answering/pyfunc.py`` (named by path: infra imports nothing above it) and the model carrying
        the whole ``deflate`` package; its URI, or ""."""
        if not self.on:
            return ""
        try:
            from mlflow.models import ModelSignature
            from mlflow.types.schema import ParamSchema, ParamSpec

            package = Path(__file__).parents[1]
            # no input schema (rows carry optional fields); the one param picks the output layout
            signature = ModelSignature(inputs=None, outputs=None,
                                       params=ParamSchema([ParamSpec("layout", "string", "values")]))
            info = self.mlflow.pyfunc.log_model(name="deflate", python_model=str(package / "answering" / "pyfunc.py"),
                                                artifacts={"bundle": str(bundle)}, code_paths=[str(package)],
                                                pip_requirements=_requirements(), signature=signature)
            return info.model_uri
        except Exception as e:
            self._fail(e)
            return ""

    def close(self):
        if self.mlflow is not None:
            try:
                self.mlflow.end_run()
            except Exception:
                pass


def _requirements() -> list[str]:
    """The pinned runtime set, explicit (MLflow would otherwise load the model to guess it)."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for pkg in ("torch", "transformers", "tokenizers", "safetensors", "numpy", "pandas", "pillow", "scikit-learn",
                "tqdm", "mlflow"):
        try:
            out.append(f"{pkg}=={version(pkg)}")
        except PackageNotFoundError:
            pass
    return out


def _gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""
