"""Deployment: TorchScript/ONNX export and checks, predict from Zarr/NetCDF, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr

from sdkd_pipeline import deploy
from sdkd_pipeline.deploy.__main__ import main as cli_main
from sdkd_pipeline.errors import DataError
from sdkd_pipeline.models import build_model

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

T_IN, T_OUT, C, H, W = 3, 2, 2, 16, 16


def make_checkpoint(height: int = H, width: int = W) -> dict:
    torch.manual_seed(0)
    shape = {
        "in_frames": T_IN,
        "out_frames": T_OUT,
        "channels": C,
        "height": height,
        "width": width,
    }
    config = {"hidden": 8, "base_width": 8}
    model = build_model("unet", **shape, **config).eval()
    return {
        "model": "unet",
        "method": "sdkd",
        "dataset": "x",
        "role": "student",
        "model_config": config,
        "shape": shape,
        "channels": ["u", "v"],
        "mean": torch.tensor([10.0, -2.0]),
        "std": torch.tensor([3.0, 0.5]),
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
    }


@pytest.fixture(scope="module")
def ckpt() -> dict:
    return make_checkpoint()


@pytest.fixture(scope="module")
def exported(ckpt, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("exported")
    return {"pt": deploy.export_torchscript(ckpt, out), "onnx": deploy.export_onnx(ckpt, out)}


def raw_dataset(n_time: int = 6, time=None, seed: int = 1) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    fields = (
        rng.standard_normal((2, n_time, C, H, W)) * np.array([3.0, 0.5])[None, None, :, None, None]
        + np.array([10.0, -2.0])[None, None, :, None, None]
    ).astype(np.float32)
    time = np.arange(n_time) * 0.5 + 1.0 if time is None else time
    return xr.Dataset(
        {"fields": (("trajectory", "time", "channel", "y", "x"), fields)},
        coords={
            "trajectory": np.arange(2),
            "time": time,
            "channel": ["u", "v"],
            "y": np.linspace(-1, 1, H),
            "x": np.linspace(0, 2, W),
        },
        attrs={"dataset": "x", "source": "test"},
    )


def manual_forecast(ckpt: dict, window: np.ndarray) -> np.ndarray:
    model = deploy.build_checkpoint_model(ckpt)
    mean = ckpt["mean"].numpy()[None, :, None, None]
    std = ckpt["std"].numpy()[None, :, None, None]
    x = torch.from_numpy(((window - mean) / std).astype(np.float32))[None]
    with torch.no_grad():
        y = model(x)[0].numpy()
    return y * std + mean


# -- export and checks -----------------------------------------------------------------------


def test_exports_agree_with_pytorch_for_batch_1_and_3(ckpt, exported):
    assert exported["pt"].name == "unet_sdkd.pt" and exported["onnx"].name == "unet_sdkd.onnx"
    assert deploy.check_torchscript(ckpt, exported["pt"]) < 1e-4
    assert deploy.check_onnx(ckpt, exported["onnx"], n=2) < 1e-4
    model = deploy.build_checkpoint_model(ckpt)
    session = ort.InferenceSession(str(exported["onnx"]), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape[0] == "batch"  # dynamic batch axis
    for batch in (1, 3):
        x = torch.randn(batch, T_IN, C, H, W)
        with torch.no_grad():
            ref = model(x).numpy()
        got = session.run(None, {"x": x.numpy()})[0]
        np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-3)
        script, _ = deploy.load_exported(exported["pt"], trust_torchscript=True)
        np.testing.assert_allclose(script(x), ref, atol=1e-5, rtol=1e-4)


def test_metadata_round_trips(ckpt, exported):
    expected = deploy.checkpoint_meta(ckpt)
    for path in exported.values():
        model, meta = deploy.load_exported(path, trust_torchscript=True)
        assert meta == expected
        assert meta["channels"] == ["u", "v"] and meta["mean"] == [10.0, -2.0]
        assert meta["std"] == [3.0, 0.5] and meta["shape"]["height"] == H
        assert (meta["model"], meta["method"], meta["dataset"]) == ("unet", "sdkd", "x")
    extra = {deploy.META_FILE: ""}
    torch.jit.load(str(exported["pt"]), _extra_files=extra)
    assert json.loads(extra[deploy.META_FILE]) == expected
    import onnx

    props = {p.key: p.value for p in onnx.load(str(exported["onnx"])).metadata_props}
    assert json.loads(props["sdkd_meta"]) == expected and props["method"] == "sdkd"


def test_export_pads_grids_not_multiple_of_downsampling(tmp_path):
    ckpt = make_checkpoint(height=14, width=10)
    onnx_path = deploy.export_onnx(ckpt, tmp_path / "m.onnx")
    pt_path = deploy.export_torchscript(ckpt, tmp_path / "m.pt")
    assert deploy.check_onnx(ckpt, onnx_path, n=1) < 1e-4
    assert deploy.check_torchscript(ckpt, pt_path, n=1) < 1e-4


def test_check_raises_naming_the_file_when_out_of_tolerance(ckpt, exported, tmp_path):
    other = make_checkpoint()
    other["state_dict"] = {
        k: v + 0.1 if v.is_floating_point() else v for k, v in other["state_dict"].items()
    }
    with pytest.raises(ValueError, match="unet_sdkd.onnx.*differs"):
        deploy.check_onnx(other, exported["onnx"])
    with pytest.raises(ValueError, match="unet_sdkd.pt.*differs"):
        deploy.check_torchscript(other, exported["pt"])


def test_exported_latency_rows(exported):
    for path in exported.values():
        rows = deploy.exported_latency(
            path, (T_IN, C, H, W), batch_sizes=(1, 2), repeats=3, warmup=1, threads=1
        )
        assert [r["batch_size"] for r in rows] == [1, 2]
        assert all(r["median_ms"] > 0 and r["ms_per_sample"] > 0 for r in rows)
    assert (
        deploy.exported_latency(exported["onnx"], None, repeats=1, warmup=0)[0]["format"] == "onnx"
    )


def test_exported_latency_stops_after_three_calls_past_max_seconds(exported, monkeypatch):
    calls = []
    original = deploy.ExportedModel.__call__

    def counted(self, x):
        calls.append(len(x))
        return original(self, x)

    monkeypatch.setattr(deploy.ExportedModel, "__call__", counted)
    rows = deploy.exported_latency(
        exported["pt"], None, batch_sizes=(1, 2), repeats=50, warmup=1, max_seconds=1e-9
    )
    assert calls == [1] * 4 + [2] * 4  # 1 warm-up + 3 timed calls per batch size
    assert all(r["median_ms"] > 0 for r in rows)
    assert deploy.onnx_missing() is None  # this module runs only where both import


def _predict_cli(model, src, out, *extra: str) -> int:
    """``python -m sdkd_pipeline.deploy predict --model M --input S --output O [extra]``."""
    return cli_main(
        ["predict", "--model", str(model), "--input", str(src), "--output", str(out), *extra]
    )


# -- predict ---------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["nc", "zarr"])
def test_predict_from_raw_file_is_denormalized_with_coords(ckpt, exported, tmp_path, fmt):
    ds = raw_dataset()
    src = tmp_path / f"raw.{fmt}"
    ds.to_netcdf(src) if fmt == "nc" else ds.to_zarr(src, zarr_format=2)
    out = deploy.predict(exported["onnx"], src, tmp_path / "forecast.nc", trajectory=1)
    res = xr.open_dataset(out)
    expected = manual_forecast(ckpt, ds["fields"].values[1, 3:6].astype(np.float64))
    assert res["forecast"].dims == ("time", "channel", "y", "x")
    np.testing.assert_allclose(res["forecast"].values, expected, rtol=1e-4, atol=1e-4)
    assert list(res["channel"].values) == ["u", "v"]
    np.testing.assert_allclose(res["y"].values, ds["y"].values)
    np.testing.assert_allclose(res["x"].values, ds["x"].values)
    np.testing.assert_allclose(res["time"].values, [4.0, 4.5])  # last 3.5, step 0.5
    assert list(res["lead"].values) == [1, 2]
    assert res.attrs["model"] == "unet" and res.attrs["method"] == "sdkd"
    assert res.attrs["dataset"] == "x" and res.attrs["source_file"] == str(src)
    assert json.loads(res.attrs["input_times"]) == ["2.5", "3.0", "3.5"]
    res.close()


def test_predict_time_index_zarr_output_and_model_kinds(ckpt, exported, tmp_path):
    ds = raw_dataset(n_time=8)
    src = tmp_path / "raw.nc"
    ds.to_netcdf(src)
    expected = manual_forecast(ckpt, ds["fields"].values[0, 2:5].astype(np.float64))
    for model in (exported["pt"], exported["onnx"], ckpt):
        # the second and third replace the first's store: only with overwrite
        out = deploy.predict(
            model, src, tmp_path / "f.zarr", time_index=4, overwrite=True, trust_torchscript=True
        )
        res = xr.open_zarr(out)
        np.testing.assert_allclose(res["forecast"].values, expected, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(res["time"].values, [3.5, 4.0])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.bad_input
def test_predict_never_overwrites_its_input_or_model_and_asks_before_replacing(
    exported, tmp_path, capsys
):
    ds = raw_dataset()
    src_nc, src_zarr = tmp_path / "raw.nc", tmp_path / "raw.zarr"
    ds.to_netcdf(src_nc)
    ds.to_zarr(src_zarr, zarr_format=2)
    before = src_nc.read_bytes()
    cases = [
        (src_nc, src_nc, "would overwrite the input"),
        (src_zarr, src_zarr, "would overwrite the input"),
        (src_zarr, src_zarr / "inside.nc", "would overwrite the input"),
        (src_nc, exported["onnx"], "would overwrite the model"),
    ]
    for src, out, message in cases:
        with pytest.raises(DataError, match=message) as info:
            deploy.predict(exported["onnx"], src, out)
        assert str(out) in str(info.value)
        assert _predict_cli(exported["onnx"], src, out, "--overwrite") == 1
        assert message in capsys.readouterr().err
    assert src_nc.read_bytes() == before and not (src_zarr / "inside.nc").exists()
    xr.open_zarr(src_zarr).load()  # the input store is intact
    # an existing output: refused without --overwrite, replaced with it
    out = tmp_path / "f.nc"
    deploy.predict(exported["onnx"], src_nc, out)
    first = out.read_bytes()
    with pytest.raises(DataError, match=r"f\.nc: exists; pass --overwrite"):
        deploy.predict(exported["onnx"], src_nc, out, trajectory=1)
    assert out.read_bytes() == first
    deploy.predict(exported["onnx"], src_nc, out, trajectory=1, overwrite=True)
    assert out.read_bytes() != first


def test_predict_datetime_and_irregular_time(exported, tmp_path):
    times = np.array("2020-01-01", dtype="datetime64[ns]") + np.arange(6) * np.timedelta64(6, "h")
    src = tmp_path / "dt.nc"
    raw_dataset(time=times).to_netcdf(src)
    res = xr.open_dataset(deploy.predict(exported["onnx"], src, tmp_path / "a.nc"))
    assert list(res["time"].values) == [
        times[-1] + np.timedelta64(6, "h"),
        times[-1] + np.timedelta64(12, "h"),
    ]
    res.close()
    src2 = tmp_path / "irr.nc"
    raw_dataset(time=np.array([0.0, 1.0, 3.0, 4.0, 7.0, 9.0])).to_netcdf(src2)
    res = xr.open_dataset(deploy.predict(exported["onnx"], src2, tmp_path / "b.nc"))
    assert list(res["time"].values) == [1, 2]
    res.close()


@pytest.mark.bad_input
def test_predict_from_tensor_store_uses_stored_normalization(ckpt, exported, tmp_path):
    ds = raw_dataset()
    phys = ds["fields"].values.astype(np.float64)
    s_mean, s_std = np.array([9.0, -1.0]), np.array([2.0, 1.0])
    norm = ((phys - s_mean[:, None, None]) / s_std[:, None, None]).astype(np.float32)
    store = ds.copy()
    store["fields"] = (ds["fields"].dims, norm)
    store["mean"] = ("channel", s_mean.astype(np.float32))
    store["std"] = ("channel", s_std.astype(np.float32))
    store.attrs.update({"format_version": 1, "t_in": T_IN, "t_out": T_OUT})
    src = tmp_path / "tensors.zarr"
    store.to_zarr(src, zarr_format=2)
    # loading TorchScript runs the file's code: refused unless trusted
    with pytest.raises(DataError, match=r"unet_sdkd\.pt: a TorchScript file runs the code"):
        deploy.predict(exported["pt"], src, tmp_path / "f.nc")
    assert not (tmp_path / "f.nc").exists()
    assert _predict_cli(exported["pt"], src, tmp_path / "f.nc") == 1
    assert not (tmp_path / "f.nc").exists()
    assert _predict_cli(exported["pt"], src, tmp_path / "f.nc", "--trust-torchscript") == 0
    (tmp_path / "f.nc").unlink()
    res = xr.open_dataset(
        deploy.predict(exported["pt"], src, tmp_path / "f.nc", trust_torchscript=True)
    )
    expected = manual_forecast(ckpt, phys[0, 3:6])
    np.testing.assert_allclose(res["forecast"].values, expected, rtol=1e-4, atol=1e-3)
    assert res.attrs["input_normalized"] == 1
    res.close()


def _bad_inputs(tmp_path: Path) -> list[tuple[Path, dict, str]]:
    cases = []
    missing = tmp_path / "missing.nc"
    cases.append((missing, {}, "not found"))
    wrong_var = tmp_path / "wrongvar.nc"
    raw_dataset().rename({"fields": "other"}).to_netcdf(wrong_var)
    cases.append((wrong_var, {}, "no variable 'fields'"))
    one_chan = tmp_path / "onechan.nc"
    raw_dataset().isel(channel=[0]).to_netcdf(one_chan)
    cases.append((one_chan, {}, "1 channel"))
    names = tmp_path / "names.nc"
    raw_dataset().assign_coords(channel=["a", "b"]).to_netcdf(names)
    cases.append((names, {}, "channels.*do not match"))
    grid = tmp_path / "grid.nc"
    raw_dataset().isel(y=slice(0, 12)).to_netcdf(grid)
    cases.append((grid, {}, "grid.*12, 16"))
    short = tmp_path / "short.nc"
    raw_dataset(n_time=2).to_netcdf(short)
    cases.append((short, {}, "2 time step.*T_in = 3"))
    early = tmp_path / "early.nc"
    raw_dataset().to_netcdf(early)
    cases.append((early, {"time_index": 1}, "T_in = 3"))
    cases.append((early, {"trajectory": 5}, "trajectory 5 out of range"))
    nan = tmp_path / "nan.nc"
    ds = raw_dataset()
    ds["fields"][0, 4, 1, 2, 2] = np.nan
    ds.to_netcdf(nan)
    cases.append((nan, {}, "NaN"))
    return cases


@pytest.mark.bad_input
def test_bad_inputs_name_the_file_and_write_nothing(exported, tmp_path):
    out_dir = tmp_path / "out"
    for src, kwargs, problem in _bad_inputs(tmp_path):
        target = out_dir / "f.nc"
        with pytest.raises(DataError, match=problem) as info:
            deploy.predict(exported["onnx"], src, target, **kwargs)
        assert str(src) in str(info.value)
        assert not target.exists()
        assert not out_dir.exists() or not list(out_dir.iterdir())
    with pytest.raises(DataError, match="no model file"):
        deploy.predict(tmp_path / "nope.onnx", tmp_path / "early.nc", out_dir / "f.nc")


# -- CLI -------------------------------------------------------------------------------------


@pytest.mark.bad_input
def test_cli_export_and_predict_round_trip(ckpt, tmp_path, capsys):
    ckpt_path = tmp_path / "sdkd.pt"
    torch.save(ckpt, ckpt_path)
    out = tmp_path / "exported"
    assert cli_main(["export", "--checkpoint", str(ckpt_path), "--out", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["onnx"]["max_abs_diff"] < 1e-4 and report["torchscript"]["max_abs_diff"] < 1e-4
    assert (out / "unet_sdkd.onnx").is_file() and (out / "unet_sdkd.pt").is_file()
    ds = raw_dataset()
    src = tmp_path / "raw.zarr"
    ds.to_zarr(src, zarr_format=2)
    forecast = tmp_path / "forecast.nc"
    assert (
        _predict_cli(
            str(out / "unet_sdkd.onnx"),
            str(src),
            str(forecast),
            "--time-index",
            "4",
            "--trajectory",
            "1",
        )
        == 0
    )
    res = xr.open_dataset(forecast)
    expected = manual_forecast(ckpt, ds["fields"].values[1, 2:5].astype(np.float64))
    np.testing.assert_allclose(res["forecast"].values, expected, rtol=1e-4, atol=1e-4)
    res.close()
    capsys.readouterr()
    assert _predict_cli(out / "unet_sdkd.onnx", tmp_path / "none.nc", tmp_path / "x.nc") == 1
    assert "none.nc" in capsys.readouterr().err and not (tmp_path / "x.nc").exists()


def test_cli_runs_as_module(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "sdkd_pipeline.deploy", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and "predict" in proc.stdout


def test_deploy_imports_without_heavy_packages():
    code = (
        "import sys, sdkd_pipeline.deploy, sdkd_pipeline.deploy.__main__; "
        "print([m for m in ('kedro', 'mlflow', 'zarr', 'dask', 'onnx', 'onnxruntime') "
        "if m in sys.modules])"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
