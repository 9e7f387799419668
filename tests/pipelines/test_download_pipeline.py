"""`kedro run --pipelines=download` fetches WeatherBench 1 from the URL in config, and the data
pipeline then reads it: served by a local HTTP server on 127.0.0.1, never the internet."""

from __future__ import annotations

import json
import zipfile

import pytest

from sdkd_pipeline.data.store import open_store
from sdkd_pipeline.errors import ConfigError
from tests.data.test_weatherbench import _hours, _write_wb1_year
from tests.http_server import serve_directory
from tests.pipelines.conftest import run_kedro


def _wb1_archive(tmp_path):
    source = tmp_path / "src"
    _write_wb1_year(source, 2016, _hours("2016-12-20T00:00", 12 * 24))
    _write_wb1_year(source, 2017, _hours("2017-01-01T00:00", 10 * 24))
    www = tmp_path / "www"
    www.mkdir()
    with zipfile.ZipFile(www / "download", "w") as zf:
        for path in sorted((source / "2m_temperature").glob("*.nc")):
            zf.write(path, arcname=path.name)
    return www


def test_download_then_data_pipeline(project, tmp_path):
    www = _wb1_archive(tmp_path)
    params = {
        "data.datasets": "weatherbench",
        "weatherbench.source.wb1_netcdf.years.start": 2016,
        "weatherbench.source.wb1_netcdf.years.end": 2017,
    }
    with serve_directory(www) as server:
        run_kedro(
            project,
            env="smoke",
            pipeline="download",
            params={**params, "weatherbench.download.wb1.base_url": f"{server.base_url}/download"},
        )
        assert [r.path for r in server.requests] == ["/download"]
    manifest = json.loads((project / "data/01_raw/weatherbench_downloads.json").read_text())
    assert [f["path"].rsplit("/", 1)[-1] for f in manifest["files"]] == [
        "2m_temperature_2016_5.625deg.nc",
        "2m_temperature_2017_5.625deg.nc",
    ]
    run_kedro(project, env="smoke", pipeline="data", params=params)
    store = open_store(project / "data/05_model_input/weatherbench.zarr")
    assert store.sizes["time"] == 22 * 24
    assert [str(c) for c in store["channel"].values] == ["t2m"]


@pytest.mark.bad_input
def test_unknown_download_key_names_the_parameter(project):
    with pytest.raises(ConfigError, match=r"weatherbench\.download\.wb1\.mirror"):
        run_kedro(
            project,
            env="smoke",
            pipeline="download",
            params={"data.datasets": "weatherbench", "weatherbench.download.wb1.mirror": "x"},
        )
    assert not (project / "data/01_raw/weatherbench").exists()
    assert not (project / "data/01_raw/weatherbench_downloads.json").exists()
