"""The climatology's slots (``evaluate.climatology``): per time of day, per day of year and time
of day, and ``auto``'s choice, each against a hand computation (numpy and ``datetime``) on
tiny synthetic weather-like stores."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest
import torch

from sdkd_pipeline.data.raw import make_raw
from sdkd_pipeline.data.tensors import SplitConfig, WindowConfig, build_tensor_dataset
from sdkd_pipeline.data.windows import WindowDataset
from sdkd_pipeline.errors import ConfigError
from sdkd_pipeline.evaluation.baselines import Climatology, build_baselines, day_of_year
from sdkd_pipeline.evaluation.config import EvaluationConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")

T_IN, T_OUT = 2, 2
GRID = (3, 4)
SIX_HOURS = np.timedelta64(6, "h")


def _fields(time: np.ndarray, seed: int = 0) -> np.ndarray:
    """(1, time, 1, 3, 4): a seasonal cycle (its own pattern per day of year), a daily cycle
    (its own per hour) and noise, so the two climatologies differ."""
    rng = np.random.default_rng(seed)
    doy = day_of_year(time)
    hour = (time - time.astype("datetime64[D]")).astype("timedelta64[h]").astype(np.int64)
    season = rng.normal(size=(366, 1, *GRID)) * 3.0
    daily = rng.normal(size=(24, 1, *GRID)) * 2.0
    noise = rng.normal(size=(len(time), 1, *GRID))
    return (season[doy] + daily[hour] + noise + 10.0)[None].astype(np.float32)


def _windows(fields: np.ndarray, time: np.ndarray, split: SplitConfig, name: str = "test"):
    raw = make_raw(fields, dataset="demo", source="test:demo", channels=["t2m"], time=time)
    tensors = build_tensor_dataset(raw, split=split, window=WindowConfig(T_IN, T_OUT)).load()
    return WindowDataset(tensors, name)


def _train_frames(windows: WindowDataset) -> np.ndarray:
    (train,) = json.loads(windows.attrs["splits"])["train"]
    return np.arange(train[1], train[2])


def _forecast(climatology: Climatology, windows: WindowDataset) -> np.ndarray:
    x = torch.zeros(len(windows), T_IN, 1, *GRID)
    return windows.denormalize(climatology(x, window_index=torch.arange(len(windows)))).numpy()


def _hand(fields: np.ndarray, time: np.ndarray, frames: np.ndarray, key) -> dict:
    """``{key(datetime): mean of the given frames with that key}``, a plain Python loop."""
    groups: dict = {}
    for t in frames:
        groups.setdefault(key(_datetime(time[t])), []).append(fields[0, t].astype(np.float64))
    return {k: np.mean(v, axis=0) for k, v in groups.items()}


def _datetime(t: np.datetime64) -> dt.datetime:
    return t.astype("datetime64[s]").astype(dt.datetime)


def _hour(d: dt.datetime) -> int:
    return d.hour * 3600 + d.minute * 60


def _day_and_hour(d: dt.datetime) -> tuple[int, int, int]:
    # the stated leap-day rule: Feb 29 is averaged with (and forecast as) Feb 28
    month, day = (2, 28) if (d.month, d.day) == (2, 29) else (d.month, d.day)
    return month, day, _hour(d)


def _expected(means: dict, time: np.ndarray, windows: WindowDataset, key) -> np.ndarray:
    return np.stack(
        [
            np.stack([means[key(_datetime(time[t0 + T_IN + k]))] for k in range(T_OUT)])
            for _, t0 in windows.windows
        ]
    )


def _one_month():
    """The ERA5 sample's length: March 2019, hourly; weatherbench's 0.7 / 0.1 / 0.2 split."""
    time = np.datetime64("2019-03-01T00:00") + np.arange(31 * 24) * np.timedelta64(1, "h")
    return time, _fields(time)


def _years(train_days: int = 731):
    """2019-03-01 to 2024-03-10, 6-hourly: training 2019-03-01 .. 2021-02-28 (two years, Feb 29
    2020 among them), validation after it, and a 30-day test split around Feb 29 2024."""
    time = np.arange(
        np.datetime64("2019-03-01T00:00"), np.datetime64("2024-03-10T00:00"), SIX_HOURS
    )
    test = 30 * 4
    gap = T_IN + T_OUT
    split = SplitConfig(train_days * 4, len(time) - 731 * 4 - test - 2 * gap, test)
    return time, _fields(time, 1), split


def test_day_of_year_puts_feb_29_on_feb_28_and_keeps_later_dates_on_their_day():
    dates = [
        "2021-02-28",
        "2021-03-01",
        "2020-02-28",
        "2020-02-29",
        "2020-03-01",
        "2020-12-31",
        "2021-12-31",
        "1900-03-01",  # 1900 is no leap year
        "2000-02-29",
        "2000-03-01",
        "NaT",
    ]
    got = day_of_year(np.array(dates, dtype="datetime64[h]"))
    assert got.tolist() == [59, 60, 59, 59, 60, 365, 365, 60, 59, 60, -1]
    assert day_of_year(np.arange(3.0)) is None


def test_auto_picks_time_of_day_on_one_month_and_equals_the_hourly_mean_by_hand():
    time, fields = _one_month()
    windows = _windows(fields, time, SplitConfig(0.7, 0.1, 0.2))
    climatology = Climatology.fit(windows)  # mode="auto"
    info = climatology.describe()
    assert climatology.mode == info["mode"] == "time_of_day" and info["requested"] == "auto"
    assert info["slots"] == 24 and info["day_slots"] == 0
    train = _train_frames(windows)
    assert climatology.train_frames == len(train)
    means = _hand(fields, time, train, _hour)
    assert len(means) == 24
    assert info["slot_frames"] == [len(train) // 24, -(-len(train) // 24)]
    assert "per time of day (24 slots" in info["definition"] and "auto" in info["definition"]
    expected = _expected(means, time, windows, _hour)
    assert np.allclose(_forecast(climatology, windows), expected, atol=1e-4)
    assert climatology.unmatched_targets == climatology.time_of_day_fallbacks == 0
    # each training frame once: averaging the frames of every training window per hour differs
    train_windows = _windows(fields, time, SplitConfig(0.7, 0.1, 0.2), "train")
    hours = (time - time.astype("datetime64[D]")).astype("timedelta64[s]").astype(np.int64)
    covered = np.concatenate([np.arange(t0, t0 + T_IN + T_OUT) for _, t0 in train_windows.windows])
    per_window = fields[0, covered[hours[covered] == 0]].astype(np.float64).mean(axis=0)
    assert np.abs(per_window - means[0]).max() > 1e-3


def test_day_of_year_climatology_equals_the_hand_computation_over_two_years():
    time, fields, split = _years()
    windows = _windows(fields, time, split)
    climatology = Climatology.fit(windows)  # auto: every slot has >= 2 frames
    info = climatology.describe()
    assert climatology.mode == info["mode"] == "day_of_year" and info["requested"] == "auto"
    train = _train_frames(windows)
    assert len(train) == 731 * 4 and climatology.train_frames == len(train)
    means = _hand(fields, time, train, _day_and_hour)
    assert len(means) == 365 * 4 == info["day_slots"] and info["slots"] == 4
    # Feb 28 2020, Feb 29 2020 and Feb 28 2021 share day 59: 3 frames; every other slot 2
    assert info["slot_frames"] == [2, 3]
    assert "per day of year and time of day (1460 slots, 2-3 frames each" in info["definition"]
    expected = _expected(means, time, windows, _day_and_hour)
    assert np.allclose(_forecast(climatology, windows), expected, atol=1e-4)
    # the test split holds Feb 29 2024 (forecast with the Feb 28 mean) and Mar 1 2024 (day 60)
    targets = {str(time[t0 + T_IN + k])[:10] for _, t0 in windows.windows for k in range(T_OUT)}
    assert {"2024-02-28", "2024-02-29", "2024-03-01"} <= targets
    assert climatology.unmatched_targets == climatology.time_of_day_fallbacks == 0
    # only the slots the test targets fall in are kept
    keys = {
        _day_and_hour(_datetime(time[t0 + T_IN + k])) for _, t0 in windows.windows for k in (0, 1)
    }
    assert len(climatology.day_slots) == len(keys) < 365 * 4
    # the per-day climatology beats the per-hour one on a seasonal cycle; validation and test
    # frames are never used
    by_hour = Climatology.fit(windows, mode="time_of_day")
    assert by_hour.mode == "time_of_day" and by_hour.describe()["requested"] == "time_of_day"
    truth = np.stack([fields[0, t0 + T_IN : t0 + T_IN + T_OUT] for _, t0 in windows.windows])
    error = {
        m: float(np.mean((_forecast(m, windows) - truth) ** 2)) for m in (climatology, by_hour)
    }
    assert error[climatology] < 0.7 * error[by_hour]
    spiked = fields.copy()
    spiked[0, len(train) + 10] = 1e6  # a validation frame
    spiked[0, -1] = -1e6  # a test frame
    after = Climatology.fit(_windows(spiked, time, split))
    assert torch.allclose(after.means, climatology.means) and torch.equal(
        after.lookup, climatology.lookup
    )


def test_auto_needs_two_frames_in_every_day_of_year_slot():
    # two days short of two years: Feb 27's slots hold one frame, so per time of day
    time, fields, split = _years(729)
    windows = _windows(fields, time, split)
    climatology = Climatology.fit(windows)
    assert climatology.mode == "time_of_day" and climatology.describe()["day_slots"] == 0
    # but one day short still is: Feb 28 2021's place is taken by Feb 29 2020
    time, fields, split = _years(730)
    assert Climatology.fit(_windows(fields, time, split)).mode == "day_of_year"
    # without datetimes, every mode is the plain mean field
    plain = _windows(fields[:, :200], np.arange(200.0), SplitConfig(0.5, 0.25, 0.25))
    for mode in ("auto", "time_of_day", "day_of_year"):
        assert Climatology.fit(plain, mode=mode).describe()["mode"] == "mean_field"


def test_a_day_never_seen_in_training_falls_back_to_its_time_of_day_then_the_all_times_mean():
    # training 2021-03-01 .. 03-15 (6-hourly), the rest from 2022-03-05: the test days up to
    # Mar 15 have a (day, hour) slot, the later ones only their hour
    n_train = 15 * 4
    steps = np.arange(200) * SIX_HOURS
    time = np.where(
        np.arange(200) < n_train,
        np.datetime64("2021-03-01T00:00") + steps,
        np.datetime64("2022-03-05T00:00") + steps - n_train * SIX_HOURS,
    )
    fields = _fields(time, 2)
    split = SplitConfig(n_train, 8, 60)  # test: 2022-03-09 .. 03-24, the rest unused
    windows = _windows(fields, time, split)
    climatology = Climatology.fit(windows, mode="day_of_year")
    train = _train_frames(windows)
    assert len(train) == n_train
    by_day = _hand(fields, time, train, _day_and_hour)
    by_hour = _hand(fields, time, train, _hour)
    expected, fallbacks = [], 0
    for _, t0 in windows.windows:
        for k in range(T_OUT):
            d = _datetime(time[t0 + T_IN + k])
            matched = _day_and_hour(d) in by_day
            fallbacks += not matched
            expected.append(by_day[_day_and_hour(d)] if matched else by_hour[_hour(d)])
    expected = np.stack(expected).reshape(len(windows), T_OUT, 1, *GRID)
    assert 0 < fallbacks < len(windows) * T_OUT
    assert climatology.time_of_day_fallbacks == fallbacks and climatology.unmatched_targets == 0
    assert np.allclose(_forecast(climatology, windows), expected, atol=1e-4)
    info = climatology.describe()
    assert (
        info["time_of_day_fallbacks"] == fallbacks
        and f"({fallbacks} target frames)" in (info["definition"])
    )
    # a time of day absent from training too: the all-times mean, counted as unmatched
    shifted = time.copy()
    shifted[n_train:] += np.timedelta64(3, "h")
    windows = _windows(fields, shifted, split)
    climatology = Climatology.fit(windows, mode="day_of_year")
    assert climatology.unmatched_targets == len(windows) * T_OUT
    assert climatology.time_of_day_fallbacks == 0 and (climatology.lookup == 0).all()


def test_build_baselines_passes_the_climatology_mode():
    time, fields = _one_month()
    windows = _windows(fields, time, SplitConfig(0.7, 0.1, 0.2))
    assert build_baselines(windows)["climatology"].mode == "time_of_day"
    forced = build_baselines(windows, ["climatology"], climatology="day_of_year")["climatology"]
    assert forced.mode == "day_of_year"
    assert forced.time_of_day_fallbacks == len(windows) * T_OUT  # test days are not training's
    assert EvaluationConfig.from_params({}).climatology == "auto"
    assert EvaluationConfig.from_params({"climatology": "day_of_year"}).climatology == "day_of_year"


@pytest.mark.bad_input
def test_a_bad_climatology_mode_names_the_parameter():
    with pytest.raises(ConfigError, match=r"evaluate.climatology must be one of 'auto'"):
        EvaluationConfig.from_params({"climatology": "monthly"})
    time, fields = _one_month()
    windows = _windows(fields, time, SplitConfig(0.7, 0.1, 0.2))
    for bad in ("monthly", None, 1):
        with pytest.raises(ConfigError, match=r"evaluate.climatology must be one of"):
            build_baselines(windows, climatology=bad)
