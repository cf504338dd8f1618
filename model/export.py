"""Export a model to ONNX for other runtimes: dynamic batch, checked against eager, self-describing.

    python -m model.export --weights damdnet --format onnx --out damdnet.onnx

The graph is the one the CPU fast path runs (``model.ort_forward``: BatchNorm folded, constant-size SGE, DAMDNet's
linear head as one matrix), input ``crops`` (N, 3, 120, 120) float32, output ``params`` (N, 62) whitened, N dynamic.
Before anything is written its output is compared with the eager network's at several batch sizes; more than
``--tol`` (1e-4) apart and nothing is written.

Everything needed to turn the output into 68 landmarks without this project's code goes into the file's metadata
(``custom_metadata_map["damdnet"]``, one JSON string) and into a sidecar ``FILE.json`` with the same content
(``decode_spec``): input preparation, the whitening mean/std, the parameter layout, the 68-point mean, shape and
expression bases, and the crop-to-frame mapping of the checkpoint's convention. ``tests/test_model_export.py``
decodes with onnxruntime and numpy only, in an isolated interpreter, and matches our Aligner.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from model.assets import AssetStore
from model.checkpoint import LoadedModel, load_model
from model.cliparse import OneLineParser
from model.errors import UserError
from model.morphable import CROP_SIZE, N_EXP, N_PARAMS, N_SHAPE, MorphableModel

SPEC_FORMAT = "damdnet-onnx/1"
METADATA_KEY = "damdnet"
CHECK_BATCHES = (1, 3, 8)

DECODE_STEPS = [
    "crop: round the ROI (x1, y1, x2, y2) to integer pixels; take image[y1:y2, x1:x2] of the BGR frame, zero-padded "
    "where the ROI leaves the frame, resized to 120x120 (bilinear)",
    "input: float32 (N, 3, 120, 120) NCHW BGR, (pixel - 127.5) / 128",
    "params = output * whitening.std + whitening.mean  (N, 62 real parameters)",
    "P = params[:, 0:12] as (3, 4) row-major; R = P[:, :3]; t = P[:, 3]; alpha_shp = params[:, 12:52]; "
    "alpha_exp = params[:, 52:62]",
    "S = mean + shape_basis @ alpha_shp + expression_basis @ alpha_exp  (204,) -> (68, 3): x, y, z per point",
    "v = S @ R.T + t  (68, 3) crop coordinates, y up",
    "convention v1: y = 121 - y.  convention v2: x = x - 1; z = z - 1; y = 120 - y",
    "frame: sx = (x2 - x1) / 120, sy = (y2 - y1) / 120; x = x * sx + x1; y = y * sy + y1; z = z * (sx + sy) / 2; "
    "convention v2 then z = z - min(z) per face",
    "result: (68, 3) frame pixels, x right, y down, z toward the camera scaled like x",
]


class ExportError(UserError, RuntimeError):
    """The export cannot be made or disagrees with the eager network (one line)."""


def decode_spec(loaded: LoadedModel, morph: MorphableModel) -> dict[str, Any]:
    """Everything another runtime needs to decode the exported network's output into 68 landmarks (JSON-able)."""
    sp = morph.sparse
    f = lambda a: np.asarray(a, np.float64).round(9).reshape(-1).tolist()  # noqa: E731
    return {
        "format": SPEC_FORMAT,
        "model": loaded.name,
        "backbone": loaded.backbone,
        "convention": loaded.convention,
        "input": {"name": "crops", "shape": ["n", 3, CROP_SIZE, CROP_SIZE], "dtype": "float32", "layout": "NCHW",
                  "channels": "BGR", "normalise": "(pixel - 127.5) / 128", "crop_size": CROP_SIZE},
        "output": {"name": "params", "shape": ["n", N_PARAMS], "dtype": "float32", "whitened": True},
        "whitening": {"name": loaded.whitening.name, "mean": f(loaded.whitening.mean), "std": f(loaded.whitening.std)},
        "params_layout": {"camera": [0, 12], "shape": [12, 12 + N_SHAPE], "expression": [12 + N_SHAPE, N_PARAMS],
                          "camera_matrix": "3x4 row-major: [R | t], R includes the scale"},
        "landmarks68": {"mean": f(sp.u), "mean_shape": [68 * 3],
                        "shape_basis": f(sp.w_shp.reshape(68 * 3, N_SHAPE)), "shape_basis_shape": [68 * 3, N_SHAPE],
                        "expression_basis": f(sp.w_exp.reshape(68 * 3, N_EXP)),
                        "expression_basis_shape": [68 * 3, N_EXP],
                        "row_order": "point-major: rows 3k, 3k+1, 3k+2 are x, y, z of point k"},
        "decode": DECODE_STEPS,
    }


def export_bytes(loaded: LoadedModel) -> bytes:
    """ONNX bytes of ``loaded``'s network as the fast path exports it (folded; dynamic batch)."""
    from model.fastpath import fold_all_bn
    from model.ort_forward import export_module, export_onnx_bytes

    return export_onnx_bytes(export_module(fold_all_bn(loaded.net.eval().cpu())))


def with_metadata(model_bytes: bytes, spec: dict[str, Any]) -> bytes:
    """``model_bytes`` with ``spec`` as the JSON string ``metadata_props["damdnet"]`` (plus producer fields)."""
    import onnx

    m = onnx.load_from_string(model_bytes)
    onnx.helper.set_model_props(m, {METADATA_KEY: json.dumps(spec, separators=(",", ":")),
                                    "damdnet_model": spec["model"], "damdnet_convention": spec["convention"]})
    m.doc_string = ("DAMDNet-family 3DMM regressor: crops (N,3,120,120) -> whitened params (N,62); decoding in the "
                    f"'{METADATA_KEY}' metadata entry")
    return m.SerializeToString()


def batch_is_dynamic(model_bytes: bytes) -> bool:
    """True when the first input's and output's dimension 0 are symbolic (any batch size)."""
    import onnx

    g = onnx.load_from_string(model_bytes).graph
    dims = [v.type.tensor_type.shape.dim[0] for v in (g.input[0], g.output[0])]
    return all(d.dim_param and not d.HasField("dim_value") for d in dims)


def check_against_eager(model_bytes: bytes, net: torch.nn.Module, tol: float = 1e-4,
                        batches: Sequence[int] = CHECK_BATCHES) -> float:
    """Max abs difference between ONNX Runtime on ``model_bytes`` and the eager ``net`` over random batches of each
    size in ``batches``; raises ExportError above ``tol`` or when the batch is not dynamic."""
    from model.ort_forward import make_session

    if not batch_is_dynamic(model_bytes):
        raise ExportError("the exported graph has a fixed batch size (expected a dynamic dimension 0)")
    session = make_session(model_bytes)
    gen = torch.Generator().manual_seed(62)
    err = 0.0
    for n in batches:
        x = torch.randn(n, 3, CROP_SIZE, CROP_SIZE, generator=gen)
        with torch.inference_mode():
            ref = net.eval().cpu()(x).numpy()
        out = session.run(["params"], {"crops": x.numpy()})[0]
        if out.shape != ref.shape:
            raise ExportError(f"batch {n}: ONNX output shape {out.shape} != eager {ref.shape}")
        err = max(err, float(np.abs(out - ref).max()))
    if not err <= tol:
        raise ExportError(f"the ONNX export differs from the eager network by {err:.2e} > {tol:g}; nothing written")
    return err


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 -> what open() would have made
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def sidecar_path(out: str | os.PathLike) -> Path:
    """``FILE.onnx`` -> ``FILE.json``."""
    return Path(out).with_suffix(".json")


def export_onnx(weights: str, out: str | os.PathLike, store: AssetStore | None = None,
                tol: float = 1e-4) -> dict[str, Any]:
    """Export model ``weights`` (a name or checkpoint path) to ``out`` (.onnx) and its sidecar JSON, after checking
    it against eager within ``tol``. Returns {"onnx", "sidecar", "max_abs_error", "model", "bytes"}.

    Raises ExportError, CheckpointError or AssetError with one-line messages."""
    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise ExportError(f"--out {out}: expected a .onnx file name")
    store = store or AssetStore()
    loaded = load_model(weights, store)
    morph = MorphableModel.load(store, follow_landmarks=False)  # the 68-point basis only (the dense fit keeps it)
    spec = decode_spec(loaded, morph)
    try:
        data = with_metadata(export_bytes(loaded), spec)
    except ImportError as exc:
        raise ExportError(f"ONNX export needs the onnx package ({exc})") from None
    err = check_against_eager(data, loaded.net, tol)
    spec_json = json.dumps(spec, indent=1)
    _write_atomic(out, data)
    _write_atomic(sidecar_path(out), spec_json.encode())
    return {"onnx": str(out), "sidecar": str(sidecar_path(out)), "max_abs_error": err, "model": loaded.name,
            "bytes": len(data)}


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(prog="python -m model.export", description=(
        "Export a model to ONNX (dynamic batch, checked against eager, decoding in the metadata and FILE.json). "
        "Example: python -m model.export --weights damdnet --format onnx --out damdnet.onnx"))
    p.add_argument("--weights", default="damdnet", help="model name or checkpoint path (default damdnet)")
    p.add_argument("--format", default="onnx", choices=["onnx"], help="export format (onnx)")
    p.add_argument("--out", required=True, help="output file (.onnx); the sidecar .json goes beside it")
    p.add_argument("--tol", type=float, default=1e-4, help="largest allowed |ONNX - eager| (default 1e-4)")
    p.add_argument("--assets", default=None, help="assets root (default $DAMDNET_ASSETS or ~/.cache/damdnet)")
    a = p.parse_args(argv)
    try:
        res = export_onnx(a.weights, a.out, AssetStore(a.assets), a.tol)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{res['model']} -> {res['onnx']} ({res['bytes'] / 1e6:.1f} MB, dynamic batch, max |ONNX - eager| "
          f"{res['max_abs_error']:.1e}) and {res['sidecar']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
