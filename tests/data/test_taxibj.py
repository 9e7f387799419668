"""TaxiBJ (DeepST HDF5) and TaxiBJ+ (X_c.npy / Y.npy) readers on files written here in the
real formats."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from sdkd_pipeline.data.raw import validate_raw
from sdkd_pipeline.data.sources.taxibj import (
    parse_taxibj_dates,
    read_taxibj,
    read_taxibj_plus,
    read_taxibj_source,
)
from sdkd_pipeline.errors import ConfigError, DataError, MissingRawDataError

GRID = 32


def _slots(day: str, first: int, last: int) -> list[bytes]:
    return [f"{day}{s:02d}".encode() for s in range(first, last + 1)]


def _flows(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.poisson(20.0, size=(n, 2, GRID, GRID)).astype(np.float64)  # DeepST stores float64


def _write_bj(
    path: Path, dates: list[bytes], data: np.ndarray | None = None, seed: int = 0
) -> np.ndarray:
    data = _flows(len(dates), seed) if data is None else data
    with h5py.File(path, "w") as h5:
        h5.create_dataset("data", data=data)
        h5.create_dataset("date", data=np.array(dates, dtype="S10"))
    return data


def test_dates_parse_slots_from_midnight() -> None:
    times = parse_taxibj_dates([b"2013070101", b"2013070102", b"2013070148", "2013070201"], "f")
    expected = np.array(
        ["2013-07-01T00:00", "2013-07-01T00:30", "2013-07-01T23:30", "2013-07-02T00:00"],
        dtype="datetime64[ns]",
    )
    np.testing.assert_array_equal(times, expected)


def test_reads_concatenates_and_segments_gaps(tmp_path: Path) -> None:
    # BJ13: 2013-07-01 slots 1..48 but slot 10 missing, then 2013-07-02 slots 1..4.
    dates13 = [d for d in _slots("20130701", 1, 48) if d != b"2013070110"] + _slots(
        "20130702", 1, 4
    )
    data13 = _write_bj(tmp_path / "BJ13_M32x32_T30_InOut.h5", dates13, seed=1)
    # BJ14 starts months later: another gap.
    dates14 = _slots("20140301", 1, 6)
    data14 = _write_bj(tmp_path / "BJ14_M32x32_T30_InOut.h5", dates14, seed=2)
    (tmp_path / "BJ_Holiday.txt").write_text("20130701\n")  # not needed, ignored

    raw = read_taxibj(tmp_path)
    validate_raw(raw)
    assert list(raw["channel"].values) == ["inflow", "outflow"]
    assert raw["fields"].shape == (1, 47 + 4 + 6, 2, GRID, GRID)
    assert raw["fields"].dtype == np.float32
    np.testing.assert_array_equal(raw["fields"].values[0, :51], data13.astype(np.float32))
    np.testing.assert_array_equal(raw["fields"].values[0, 51:], data14.astype(np.float32))
    seg = raw["segment"].values
    np.testing.assert_array_equal(seg, [0] * 9 + [1] * 42 + [2] * 6)
    assert raw["time"].values[9] == np.datetime64("2013-07-01T05:00")  # slot 11
    assert raw.attrs["n_segments"] == 3
    long_gap = (raw["time"].values[51] - raw["time"].values[50]) // np.timedelta64(30, "m")
    assert raw.attrs["n_missing_slots"] == 1 + (long_gap - 1)
    assert raw.attrs["n_duplicates_dropped"] == 0 and raw.attrs["input_was_sorted"] == 1


def test_unsorted_and_identical_duplicates_are_handled(tmp_path: Path) -> None:
    dates = _slots("20150101", 1, 6)
    data = _flows(6, 3)
    order = [3, 4, 5, 0, 1, 2, 2]  # unsorted, slot 3 twice with identical grids
    path = tmp_path / "BJ15_M32x32_T30_InOut.h5"
    _write_bj(path, [dates[i] for i in order], data[order])
    raw = read_taxibj([path])
    np.testing.assert_array_equal(raw["fields"].values[0], data.astype(np.float32))
    assert np.all(raw["segment"].values == 0)
    assert raw.attrs["n_duplicates_dropped"] == 1 and raw.attrs["input_was_sorted"] == 0


def test_conflicting_duplicates_name_the_files(tmp_path: Path) -> None:
    a = tmp_path / "BJ15_M32x32_T30_InOut.h5"
    b = tmp_path / "BJ16_M32x32_T30_InOut.h5"
    _write_bj(a, _slots("20150101", 1, 4), seed=4)
    _write_bj(b, _slots("20150101", 4, 6), seed=5)  # slot 4 again, other flows
    with pytest.raises(DataError, match=r"BJ15.*BJ16.*2015-01-01T01:30.*twice"):
        read_taxibj(tmp_path)


@pytest.mark.parametrize("bad", [b"2013070100", b"2013070149"])
def test_bad_slot_number_names_the_file(tmp_path: Path, bad: bytes) -> None:
    path = tmp_path / "BJ13_M32x32_T30_InOut.h5"
    _write_bj(path, _slots("20130701", 1, 3) + [bad])
    with pytest.raises(DataError, match=rf"BJ13_M32x32_T30_InOut\.h5.*{bad.decode()}"):
        read_taxibj(path)


def test_malformed_dates_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "BJ13_M32x32_T30_InOut.h5"
    _write_bj(path, [b"2013-07-01"])
    with pytest.raises(DataError, match=r"BJ13.*YYYYMMDDSS"):
        read_taxibj(path)
    _write_bj(path, [b"2013023101"])
    with pytest.raises(DataError, match=r"BJ13.*calendar date"):
        read_taxibj(path)


def test_wrong_layouts_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "BJ13_M32x32_T30_InOut.h5"
    with h5py.File(path, "w") as h5:
        h5.create_dataset("data", data=np.zeros((3, 3, GRID, GRID)))
        h5.create_dataset("date", data=np.array(_slots("20130701", 1, 3), dtype="S10"))
    with pytest.raises(DataError, match=r"BJ13.*\(3, 3, 32, 32\)"):
        read_taxibj(path)
    with h5py.File(path, "w") as h5:
        h5.create_dataset("data", data=np.zeros((3, 2, GRID, GRID)))
        h5.create_dataset("date", data=np.array(_slots("20130701", 1, 2), dtype="S10"))
    with pytest.raises(DataError, match=r"BJ13.*'date' has shape \(2,\)"):
        read_taxibj(path)
    with h5py.File(path, "w") as h5:
        h5.create_dataset("flows", data=np.zeros((3, 2, GRID, GRID)))
    with pytest.raises(DataError, match=r"BJ13.*holds \['flows'\]"):
        read_taxibj(path)


def test_nan_and_truncated_file(tmp_path: Path) -> None:
    path = tmp_path / "BJ13_M32x32_T30_InOut.h5"
    data = _flows(3, 6)
    data[1, 0, 5, 5] = np.nan
    _write_bj(path, _slots("20130701", 1, 3), data)
    with pytest.raises(DataError, match=r"BJ13.*NaN/Inf.*2013070102"):
        read_taxibj(path)
    _write_bj(path, _slots("20130701", 1, 3))
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])
    with pytest.raises(DataError, match=r"BJ13_M32x32_T30_InOut\.h5: cannot be read"):
        read_taxibj(path)


def test_missing_taxibj_files_say_who_supplies_them(tmp_path: Path) -> None:
    with pytest.raises(
        MissingRawDataError, match=r"user supplies.*BJ\*_M32x32_T30_InOut\.h5.*data/01_raw/taxibj/"
    ):
        read_taxibj_source({"dir": str(tmp_path)}, "taxibj")
    with pytest.raises(MissingRawDataError, match="user supplies"):
        read_taxibj_source({"dir": str(tmp_path / "absent")}, "taxibj")
    with pytest.raises(MissingRawDataError, match="BJ13"):
        read_taxibj([tmp_path / "BJ13_M32x32_T30_InOut.h5"])


# ----------------------------------------------------------------------------- TaxiBJ+


def _plus_sequences(n: int, frames: int = 12, size: int = 16) -> np.ndarray:
    """Sequences (N, 24 frames, 2, H, W) whose value encodes (sample, frame, channel)."""
    sample = np.arange(n)[:, None, None, None, None]
    frame = np.arange(2 * frames)[None, :, None, None, None]
    channel = np.arange(2)[None, None, :, None, None]
    pixel = np.arange(size * size).reshape(1, 1, 1, size, size) * 1e-4
    values = sample * 1000 + frame * 10 + channel + pixel
    return np.broadcast_to(values, (n, 2 * frames, 2, size, size)).astype(np.float32)


def _write_plus(folder: Path, seq: np.ndarray, layout: str = "frame_major") -> None:
    n, t, c, h, w = seq.shape
    half = t // 2
    for name, part in (("X_c.npy", seq[:, :half]), ("Y.npy", seq[:, half:])):
        if layout == "channel_major":
            part = part.transpose(0, 2, 1, 3, 4)
        np.save(folder / name, np.ascontiguousarray(part).reshape(n, half * c, h, w))


@pytest.mark.parametrize("lazy", [False, True])
def test_plus_frame_major(tmp_path: Path, lazy: bool) -> None:
    if lazy:
        pytest.importorskip("dask")
    seq = _plus_sequences(5)
    _write_plus(tmp_path, seq)
    raw = read_taxibj_plus(tmp_path, lazy=lazy)
    validate_raw(raw)
    assert raw["fields"].shape == (5, 24, 2, 16, 16)
    assert list(raw["channel"].values) == ["inflow", "outflow"]
    np.testing.assert_array_equal(raw["fields"].values, seq)
    np.testing.assert_array_equal(raw["time"].values, np.arange(24.0))
    assert raw.attrs["n_input_frames"] == 12 and raw.attrs["n_output_frames"] == 12
    assert "split_count_train" not in raw.attrs  # only for the group's 4444 samples


def test_plus_channel_major_layout(tmp_path: Path) -> None:
    seq = _plus_sequences(3)
    _write_plus(tmp_path, seq, layout="channel_major")
    raw = read_taxibj_source(
        {"dir": str(tmp_path), "channel_layout": "channel_major"}, "taxibj_plus"
    )
    np.testing.assert_array_equal(raw["fields"].values, seq)
    # Read with the wrong layout the channel axis mixes frames: the check above is not vacuous.
    wrong = read_taxibj_plus(tmp_path, lazy=False)
    assert not np.array_equal(wrong["fields"].values, seq)


def test_plus_records_the_group_split_for_4444_samples(tmp_path: Path) -> None:
    x = np.zeros((4444, 24, 2, 2), dtype=np.float32)
    np.save(tmp_path / "X_c.npy", x)
    np.save(tmp_path / "Y.npy", x)
    raw = read_taxibj_plus(tmp_path)
    assert (
        raw.attrs["split_count_train"],
        raw.attrs["split_count_val"],
        raw.attrs["split_count_test"],
    ) == (3555, 444, 445)


def test_plus_bad_inputs_name_the_file(tmp_path: Path) -> None:
    good = np.zeros((4, 24, 8, 8), dtype=np.float32)
    np.save(tmp_path / "X_c.npy", good)
    np.save(tmp_path / "Y.npy", good[:3])
    with pytest.raises(DataError, match=r"X_c\.npy has 4 samples but .*Y\.npy has 3"):
        read_taxibj_plus(tmp_path)
    np.save(tmp_path / "Y.npy", np.zeros((4, 23, 8, 8), dtype=np.float32))
    with pytest.raises(DataError, match=r"Y\.npy: shape \(4, 23, 8, 8\)"):
        read_taxibj_plus(tmp_path)
    # 20 planes: 10 target frames for 12 input frames, named as the file's fault (not the window)
    np.save(tmp_path / "Y.npy", np.zeros((4, 20, 8, 8), dtype=np.float32))
    with pytest.raises(
        DataError,
        match=r"Y\.npy: 20 planes \(10 frames of 2 channels\) but "
        r".*X_c\.npy has 24 \(12 frames\)",
    ):
        read_taxibj_plus(tmp_path)
    np.save(tmp_path / "Y.npy", np.zeros((4, 24, 8), dtype=np.float32))
    with pytest.raises(DataError, match=r"Y\.npy: shape \(4, 24, 8\)"):
        read_taxibj_plus(tmp_path)
    np.save(tmp_path / "Y.npy", np.zeros((4, 24, 8, 16), dtype=np.float32))
    with pytest.raises(DataError, match=r"grid \(8, 8\) differs .*Y\.npy grid \(8, 16\)"):
        read_taxibj_plus(tmp_path)
    bad = good.copy()
    bad[2, 5, 1, 1] = np.nan
    np.save(tmp_path / "Y.npy", bad)
    with pytest.raises(DataError, match="NaN/Inf"):
        read_taxibj_plus(tmp_path, lazy=False)
    np.save(tmp_path / "Y.npy", good)
    content = (tmp_path / "Y.npy").read_bytes()
    (tmp_path / "Y.npy").write_bytes(content[: len(content) // 2])
    with pytest.raises(DataError, match=r"Y\.npy: cannot be read"):
        read_taxibj_plus(tmp_path)
    with pytest.raises(ConfigError, match="taxibj_plus.channel_layout"):
        read_taxibj_plus(tmp_path, channel_layout="12x2")


def test_plus_missing_files_and_config(tmp_path: Path) -> None:
    with pytest.raises(
        MissingRawDataError, match=r"user supplies.*data/01_raw/taxibj_plus/.*No public download"
    ):
        read_taxibj_source({"dir": str(tmp_path)}, "taxibj_plus")
    with pytest.raises(ConfigError, match="taxibj_plus.folder"):
        read_taxibj_source({"folder": str(tmp_path)}, "taxibj_plus")
    with pytest.raises(ConfigError, match="taxibj_plus.files"):
        read_taxibj_source({"files": ["X_c.npy"]}, "taxibj_plus")
    with pytest.raises(ConfigError, match="taxibj_bike"):
        read_taxibj_source({}, "taxibj_bike")
