"""params.yaml access: checked against the schema, missing keys are errors naming the dotted key."""
from __future__ import annotations

from pathlib import Path

import yaml


class MissingParam(KeyError):
    """A setting the code needs is not in params.yaml: every setting has its default there."""

    def __str__(self) -> str:
        return str(self.args[0])


class Params(dict):
    """params.yaml as nested dicts whose missing keys are errors naming the dotted key
    (``params.yaml has no 'decode.top_k'``), never a silent code default."""

    def __init__(self, data: dict | None = None, where: str = ""):
        super().__init__({k: Params(v, f"{where}{k}.") if isinstance(v, dict) and not isinstance(v, Params) else v
                          for k, v in (data or {}).items()})
        self.where = where

    def __missing__(self, key):
        raise MissingParam(f"params.yaml has no '{self.where}{key}' (every setting has its default there)")

    def __setitem__(self, key, value):
        if isinstance(value, dict) and not isinstance(value, Params):
            value = Params(value, f"{self.where}{key}.")
        super().__setitem__(key, value)


def load_params(path: str | Path = "params.yaml") -> Params:
    """params.yaml, checked against :mod:`deflate.infra.params_schema` (a bad value is a
    :class:`~deflate.infra.params_schema.ParamsError` naming its key)."""
    from deflate.infra.params_schema import ParamsError, check_params

    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise ParamsError(f"{path} is not valid YAML ({str(e).splitlines()[0][:100]})") from None
    check_params(raw, str(path))
    return Params(raw)


def stage_params(path: str | Path = "params.yaml") -> Params:
    """What every stage script starts with: one-line errors and clean stops for this process
    (:mod:`deflate.infra.errors`), the checked params, and the kernels and threads their ``repro``
    section names (:func:`deflate.infra.kernels.pin`)."""
    from deflate.infra import errors, kernels

    errors.install()
    p = load_params(path)
    if "repro" in p:  # before any number is computed; may start this command again in its place
        kernels.pin(p["repro"]["kernels"], p["repro"]["num_threads"])
    return p
