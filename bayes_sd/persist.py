"""Saving and loading fitted models: one NetCDF file per model, written atomically.

A file holds the posterior (``xarray.DataTree``), the model's configuration and its hash, a
hash of the model's structure, the package version, the sampler settings and diagnostics, and
the data it was fitted on (as CSV bytes); the NetCDF bytes are followed by their SHA-256 (the
file still opens with ``xarray.open_datatree``). Loading verifies the checksum before parsing,
rebuilds the model from its data and refuses a file whose structure differs (another version
or configuration) with a :class:`~bayes_sd.DataError` naming the file and the field — as it
does for files that are not bayes_sd models or are damaged.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from bayes_sd._version import __version__
from bayes_sd.errors import DataError
from bayes_sd.schema import atomic_write

__all__ = ["config_hash", "load_tree", "save_tree", "structure_hash"]


def _json_default(o: Any) -> Any:
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def prior_spec(prior) -> dict | float:
    """A prior as stored in a file: its ``to_dict()``, or the number that fixes a value."""
    return prior if isinstance(prior, float) else prior.to_dict()


def dumps(obj: Any) -> str:
    return json.dumps(obj, default=_json_default)


def config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(
        json.dumps(config, sort_keys=True, default=_json_default).encode()
    ).hexdigest()[:16]


def structure_hash(model, config: dict[str, Any]) -> str:
    """Free variables, coordinates, configuration hash and major version of a built model."""
    desc = {
        "free": sorted(v.name for v in model.free_RVs),
        "coords": {k: list(map(str, v)) for k, v in sorted(model.coords.items())},
        "config": config_hash(config),
        "version": __version__.split(".")[0],
    }
    return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:16]


def save_tree(
    path: str | os.PathLike,
    idata,
    *,
    kind: str,
    tables: dict[str, pd.DataFrame],
    attrs: dict[str, Any],
) -> Path:
    """Write ``idata`` with ``tables`` (as CSV bytes) and ``attrs`` (JSON-encoded) atomically."""
    tree = idata.copy()
    for name, table in tables.items():
        raw = table.to_csv(index=False).encode("utf-8")
        tree[f"bayes_sd_{name}"] = xr.DataTree(
            xr.Dataset({f"{name}_csv": ("byte", np.frombuffer(raw, dtype=np.uint8))})
        )
    tree.attrs.update(
        bayes_sd_kind=kind,
        bayes_sd_version=__version__,
        **{f"bayes_sd_{k}": v if isinstance(v, str) else dumps(v) for k, v in attrs.items()},
    )

    def write(p: Path) -> None:
        tree.to_netcdf(p, engine="h5netcdf")
        digest = hashlib.sha256(p.read_bytes()).hexdigest().encode()
        with p.open("ab") as fh:
            fh.write(_TRAILER + digest)

    return atomic_write(path, write)


# After the NetCDF bytes, a model file ends with the SHA-256 of them: a damaged file is refused
# before libhdf5 parses it (HDF5 has no checksum of its data, and some damaged files make it
# loop forever rather than fail)
_TRAILER = b"\nbayes_sd-sha256:"


def _open_tree(file: str):
    """The DataTree of a model file, its checksum verified first (files written before the
    checksum, 2026-12-03, are parsed as they are)."""
    raw = Path(file).read_bytes()
    n = len(_TRAILER) + 64
    if len(raw) > n and raw[-n:].startswith(_TRAILER):
        body, digest = raw[:-n], raw[-64:].decode("ascii", "replace")
        if hashlib.sha256(body).hexdigest() != digest:
            raise DataError("damaged model file: its bytes do not match their checksum",
                            file=file)  # fmt: skip
        return xr.load_datatree(io.BytesIO(body), engine="h5netcdf")
    return xr.load_datatree(file, engine="h5netcdf")


def load_tree(path: str | os.PathLike, *, kind: str, tables: dict[str, Any], json_keys=()):
    """``(tree, attrs, tables)`` of a file written by :func:`save_tree` for ``kind``: the
    ``bayes_sd_`` attributes without their prefix (those in ``json_keys`` decoded), and the
    ``tables`` found (name → dtype to read them with: ``str`` keeps every value as written);
    the table groups are removed from the tree. Anything unreadable is a DataError naming the
    file and field."""
    file = str(path)
    if not Path(file).is_file():
        raise DataError("no such model file", file=file)
    try:
        tree = _open_tree(file)
    except DataError:
        raise
    except Exception as err:  # h5py / h5netcdf on a damaged file raise many kinds
        raise DataError(f"cannot read as a bayes_sd model file: {type(err).__name__}: {err}",
                        file=file) from err  # fmt: skip
    raw_attrs = dict(tree.attrs)
    if "bayes_sd_model_config" not in raw_attrs and "bayes_sd_kind" not in raw_attrs:
        raise DataError("not a bayes_sd model file (no bayes_sd attributes)", file=file)
    found = raw_attrs.get("bayes_sd_kind", "LatencyModel")  # files before the kind was written
    if found != kind:
        raise DataError(f"the file holds a {found}, not a {kind}", file=file, field="bayes_sd_kind")
    attrs = {k.removeprefix("bayes_sd_"): v for k, v in raw_attrs.items()
             if k.startswith("bayes_sd_")}  # fmt: skip
    for name in json_keys:
        if name not in attrs:
            continue
        try:
            attrs[name] = json.loads(attrs[name])
        except (json.JSONDecodeError, RecursionError, TypeError) as err:
            raise DataError(f"damaged attribute: {err}", file=file,
                            field=f"bayes_sd_{name}") from err  # fmt: skip
    out = {}
    for name, dtype in tables.items():
        group = f"bayes_sd_{name}"
        if group not in tree.children:
            continue
        try:
            raw = tree[group].dataset[f"{name}_csv"].values.tobytes()
            if dtype is str:
                table = pd.read_csv(io.BytesIO(raw), dtype=str, keep_default_na=False,
                                    na_values=[""])  # fmt: skip
            else:
                table = pd.read_csv(io.BytesIO(raw))
            out[name] = table
        except (KeyError, ValueError, UnicodeDecodeError) as err:
            raise DataError(f"damaged table: {err}", file=file, field=group) from err
        del tree[group]
    return tree, attrs, out


def require(attrs: dict, names: tuple[str, ...], file: str) -> None:
    """Every attribute in ``names`` is present (a damaged or foreign file otherwise)."""
    for name in names:
        if name not in attrs:
            raise DataError("damaged model file: attribute missing", file=file,
                            field=f"bayes_sd_{name}")  # fmt: skip
