"""The evaluation's figures and compact table: one colour per model and one line style per
method in every figure, legends outside the data, units from the CF metadata, the Pareto
front, seed intervals, the colormaps, the lead-time strip and error maps, the forecast
spectra, and the compact Markdown table's significant figures."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.container import ErrorbarContainer

from sdkd_pipeline.data.raw import make_raw
from sdkd_pipeline.data.tensors import SplitConfig, WindowConfig, build_tensor_dataset
from sdkd_pipeline.data.windows import WindowDataset
from sdkd_pipeline.evaluation import (
    FIGURES,
    EvaluationConfig,
    ModelResult,
    build_table,
    compact_markdown,
    compact_table,
    evaluate_checkpoints,
    pareto_front,
    plot_band_errors,
    plot_band_errors_by_lead,
    plot_forecast_spectra,
    plot_gap_closed,
    plot_pareto,
    plot_prediction_panel,
    plot_step_curves,
    to_markdown,
)
from sdkd_pipeline.evaluation.metrics import ForecastMetrics
from sdkd_pipeline.evaluation.plots import (
    TestPassFields,
    gap_closed_by_seed,
    lead_steps,
    seed_interval,
)
from sdkd_pipeline.evaluation.plots.style import (
    BASELINE_GREYS,
    OKABE_ITO,
    Styles,
    channel_metadata_of,
    combined_metadata,
    field_colormap,
    quantity_label,
    units_suffix,
)
from sdkd_pipeline.models import build_model
from sdkd_pipeline.spectral import radial_energy_spectrum

pytestmark = pytest.mark.usefixtures("one_torch_thread")

VORTICITY = [{"long_name": "vorticity", "units": "1/s"}]


def _metrics(mse: float, steps: int = 3) -> ForecastMetrics:
    per_step = tuple(mse * (1 + 0.5 * t) for t in range(steps))
    return ForecastMetrics(
        mse=mse,
        mae=math.sqrt(mse),
        rmse=math.sqrt(mse),
        psnr=20.0,
        ssim=0.5,
        mse_per_step=per_step,
        mae_per_step=per_step,
        rmse_per_step=per_step,
        psnr_per_step=(20.0,) * steps,
        ssim_per_step=(0.5,) * steps,
        band_mse={"low": mse / 2, "mid": mse / 4, "high": mse / 4},
        band_mse_per_step={
            "low": tuple(v / 2 for v in per_step),
            "mid": tuple(v / 4 for v in per_step),
            "high": tuple(v / 4 for v in per_step),
        },
        band_cutoffs=(2.5, 6.0),
        data_range=(1.0,),
        n_samples=4,
    )


def _result(role, model, method, mse, latency=1.0):
    return ModelResult(
        role=role,
        model=model,
        method=method,
        metrics=_metrics(mse),
        params=1000,
        flops=2_000_000,
        latency_ms={1: latency, 8: 4 * latency},
        best_val_loss=mse,
    )


def _results() -> list[ModelResult]:
    return [
        _result("teacher", "simvp", "supervised", 1.0, latency=9.0),
        _result("baseline", "persistence", "baseline", 4.0, latency=0.01),
        _result("baseline", "climatology", "baseline", 3.0, latency=0.02),
        _result("student", "unet", "none", 3.5, latency=1.0),
        _result("student", "unet", "sdkd", 2.0, latency=1.0),
        _result("student", "resnet", "none", 3.2, latency=2.0),
        _result("student", "resnet", "sdkd", 2.5, latency=2.0),
    ]


def _drawn(figure):
    FigureCanvasAgg(figure).draw()
    return figure


# -- one encoding for every figure --------------------------------------------------------------


def test_styles_give_one_colour_per_model_and_one_line_style_per_method():
    results = _results()
    styles = Styles.of(results)
    # learned models take Okabe-Ito in row order, the baselines greys
    assert [styles.colors[m] for m in ("simvp", "unet", "resnet")] == list(OKABE_ITO[:3])
    assert [styles.colors[m] for m in ("persistence", "climatology")] == list(BASELINE_GREYS[:2])
    figure = plot_step_curves(results, styles=styles, channel_metadata=VORTICITY)
    lines = figure.axes[0].get_lines()
    assert len(lines) == len(results)
    by_model, by_method = {}, {}
    for r, line in zip(results, lines, strict=True):
        by_model.setdefault(r.model, set()).add(line.get_color())
        by_method.setdefault(r.method, set()).add(str(line.get_linestyle()) + line.get_marker())
    assert all(len(colors) == 1 for colors in by_model.values())
    assert len({c for colors in by_model.values() for c in colors}) == len(by_model)
    assert all(len(styles_) == 1 for styles_ in by_method.values())
    assert len({s for styles_ in by_method.values() for s in styles_}) == len(by_method)
    assert len({str(styles.methods[m][0]) for m in by_method}) == len(by_method)
    # the same series has the same colour and line style in another figure of the run
    lead = plot_band_errors_by_lead(results, styles=styles, channel_metadata=VORTICITY)
    for r, line in zip(results, lead.axes[2].get_lines(), strict=True):
        assert line.get_gid() == f"high:{r.key}"
        assert line.get_color() == styles.colors[r.model]
        assert list(line.get_ydata()) == list(r.metrics.band_mse_per_step["high"])


def test_legend_is_outside_every_axes_and_names_models_and_methods():
    results = _results()
    for figure in (
        plot_step_curves(results),
        plot_band_errors(results),
        plot_band_errors_by_lead(results),
        plot_pareto(results),
    ):
        _drawn(figure)
        assert all(ax.get_legend() is None for ax in figure.axes)
        (legend,) = figure.legends
        texts = [t.get_text() for t in legend.get_texts()]
        assert texts[0] == "model" and "method" in texts
        assert {"simvp", "unet", "resnet", "persistence"} <= set(texts)
        assert {"supervised", "baseline", "none", "sdkd"} <= set(texts)
        box = legend.get_window_extent()
        for ax in figure.axes:
            assert not box.overlaps(ax.get_window_extent()), figure


def test_axis_labels_carry_the_cf_units_and_fall_back_cleanly():
    figure = plot_step_curves(_results(), channel_metadata=VORTICITY)
    assert figure.axes[0].get_ylabel() == "MSE of vorticity [(1/s)²]"
    unknown = plot_step_curves(_results(), channel_metadata=None)
    assert "[units unknown]" in unknown.axes[0].get_ylabel()
    assert "physical units" not in unknown.axes[0].get_ylabel()
    mixed = combined_metadata(
        [{"long_name": "u", "units": "m/s"}, {"long_name": "T", "units": "K"}]
    )
    assert mixed == {"long_name": "u, T", "units": "mixed"}
    assert quantity_label(mixed, "MSE", 2) == "MSE of u, T [mixed units]"
    same = combined_metadata(
        [{"long_name": "u", "units": "m/s"}, {"long_name": "v", "units": "m/s"}]
    )
    assert units_suffix(same, 2) == "[(m/s)²]" and units_suffix({"units": "1"}) == "[dimensionless]"
    # a long label is broken into lines that fit the axis
    long = quantity_label({"long_name": "sea surface temperature anomaly", "units": "K"}, "MSE", 2)
    assert "\n" in long and all(len(part) <= 38 for part in long.split("\n"))


def test_channel_metadata_from_a_store_with_and_without_cf_coordinates():
    bare = SimpleNamespace(channels=["u", "v"], coords={})
    assert channel_metadata_of(bare) == [
        {"long_name": "u", "units": "unknown"},
        {"long_name": "v", "units": "unknown"},
    ]
    with_cf = SimpleNamespace(
        channels=["u", "v"],
        coords={
            "channel_long_name": np.array(["eastward wind", "northward wind"]),
            "channel_units": np.array(["m s-1", "m s-1"]),
        },
    )
    assert channel_metadata_of(with_cf)[1] == {"long_name": "northward wind", "units": "m s-1"}


# -- Pareto front and seeds ---------------------------------------------------------------------


def test_pareto_front_of_a_hand_made_table():
    #            0    1    2    3    4    5     6         7
    errors = [4.0, 2.0, 3.0, 1.0, 2.0, 5.0, math.nan, 1.0]
    costs = [0.1, 1.0, 1.0, 9.0, 1.0, 0.1, 0.01, 20.0]
    # 0: cheapest (5 ties its cost with a worse error); 1 and 4 tie exactly; 2 is dominated by
    # 1; 3 the most accurate; 6 has no error; 7 ties 3's error at a higher cost
    assert pareto_front(errors, costs) == [0, 1, 4, 3]
    assert pareto_front([1.0], [1.0]) == [0]
    assert pareto_front([], []) == []
    with pytest.raises(ValueError, match="2 errors for 1 costs"):
        pareto_front([1.0, 2.0], [1.0])


def test_pareto_plot_draws_and_highlights_the_front():
    results = _results()
    figure = plot_pareto(results, channel_metadata=VORTICITY)
    ax = figure.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert ax.get_xlabel() == "CPU latency, batch 1 [ms]"
    assert ax.get_ylabel() == "test MSE of vorticity [(1/s)²]"
    # front: persistence (0.01 ms, 4.0), climatology (0.02, 3.0), unet/sdkd (1, 2), simvp
    front = next(line for line in ax.get_lines() if line.get_gid() == "pareto_front")
    assert list(front.get_xdata()) == [0.01, 0.02, 1.0, 9.0]
    assert list(front.get_ydata()) == [4.0, 3.0, 2.0, 1.0]
    points = {line.get_gid(): line for line in ax.get_lines() if line.get_gid() != "pareto_front"}
    filled = {gid for gid, line in points.items() if line.get_markerfacecolor() != "none"}
    assert filled == {
        "point:simvp/supervised",
        "point:persistence/baseline",
        "point:climatology/baseline",
        "point:unet/sdkd",
    }
    labels = {text.get_text() for text in ax.texts}
    assert labels == {"simvp", "persistence", "climatology", "unet (sdkd)"}
    # another batch size moves the points
    other = plot_pareto(results, batch_size=8)
    assert other.axes[0].get_xlabel() == "CPU latency, batch 8 [ms]"


def test_seed_interval_is_a_student_t_interval():
    assert seed_interval([0.4]) == (0.4, pytest.approx(math.nan, nan_ok=True), 1)
    assert math.isnan(seed_interval([0.4])[1])
    mean, half, n = seed_interval([0.2, 0.4, 0.6, math.nan])
    # t_{0.975, 2} = 4.302653, s = 0.2
    assert (mean, n) == (pytest.approx(0.4), 3)
    assert half == pytest.approx(4.302653 * 0.2 / math.sqrt(3), rel=1e-6)
    assert seed_interval([])[2] == 0


def test_gap_closed_by_seed_takes_the_distilled_students_of_the_table():
    table = pd.DataFrame(
        {
            "role": ["teacher", "student", "student", "student", "student"],
            "model": ["simvp", "unet", "unet", "unet", "unet"],
            "method": ["supervised", "none", "sdkd", "sdkd", "aekd"],
            "gap_closed_mse": [math.nan, 0.0, 0.5, 0.7, math.nan],
            "gap_closed_mae": [math.nan, 0.0, 0.4, 0.6, 0.1],
        }
    )
    # one row per seed; `none` is the reference (0), a blank cell is no value
    assert gap_closed_by_seed(table) == {
        "mse": {("unet", "sdkd"): [0.5, 0.7]},
        "mae": {("unet", "sdkd"): [0.4, 0.6], ("unet", "aekd"): [0.1]},
    }


def test_gap_closed_bars_say_one_seed_and_draw_intervals_with_more():
    one = plot_gap_closed(
        {"mse": {("unet", "sdkd"): [0.5], ("unet", "aekd"): [0.2]}}, reference_teacher="simvp"
    )
    ax = one.axes[0]
    bars = [p for p in ax.patches if str(p.get_gid()).startswith("gap:")]
    assert sorted(p.get_height() for p in bars) == pytest.approx([0.2, 0.5])
    assert not ax.texts  # the title says it once
    assert not any(isinstance(c, ErrorbarContainer) for c in ax.containers)
    assert "1 seed per bar" in one.get_suptitle()
    legend = [t.get_text() for t in one.legends[0].get_texts()]
    assert "1 = teacher simvp" in legend
    many = plot_gap_closed({"mse": {("unet", "sdkd"): [0.4, 0.5, 0.6]}})
    ax = many.axes[0]
    assert [t.get_text() for t in ax.texts] == ["3 seeds"]
    assert any(isinstance(c, ErrorbarContainer) for c in ax.containers)
    assert "Student-t" in many.get_suptitle()
    empty = plot_gap_closed({"mse": {}, "mae": {}})
    assert empty.axes[0].texts[0].get_gid() == "no_data"


# -- prediction panel ---------------------------------------------------------------------------


def test_field_colormap_sequential_for_non_negative_diverging_for_signed():
    assert field_colormap(0.0, 120.0) == ("viridis", 0.0, 120.0, False)  # traffic counts
    assert field_colormap(250.0, 300.0)[:3] == ("viridis", 250.0, 300.0)  # K
    assert field_colormap(-0.5, 2.0) == ("RdBu_r", -2.0, 2.0, True)
    # the split's sign wins over the shown window's
    assert field_colormap(0.1, 2.0, sign_from=-1.0) == ("RdBu_r", -2.0, 2.0, True)


def test_lead_steps_span_the_first_to_the_chosen_step():
    assert lead_steps(12) == [0, 4, 7, 11]
    assert lead_steps(3) == [0, 1, 2]
    assert lead_steps(12, step=5) == [0, 2, 3, 5]
    assert lead_steps(12, step=-6, count=2) == [0, 6]
    assert lead_steps(1) == [0]


def test_panel_has_a_lead_strip_and_error_maps_with_the_right_colormaps():
    torch.manual_seed(0)
    counts = torch.rand(1, 5, 1, 8, 8) * 50  # non-negative, like traffic
    forecast = counts + torch.randn_like(counts)
    figure = plot_prediction_panel(
        counts,
        {"a": forecast, "b": counts * 0.5},
        channel_metadata={"long_name": "inflow", "units": "1"},
    )
    fields = [im for ax in figure.axes for im in ax.images if im.get_gid().startswith("field:")]
    errors = [im for ax in figure.axes for im in ax.images if im.get_gid().startswith("error:")]
    leads = lead_steps(5)
    assert len(fields) == 3 * len(leads) and len(errors) == 2 * len(leads)
    assert {im.get_cmap().name for im in fields} == {"viridis"}
    assert len({im.get_clim() for im in fields}) == 1
    assert {im.get_cmap().name for im in errors} == {"magma_r"}
    assert {im.get_clim()[0] for im in errors} == {0.0}
    # the error map is |forecast - truth| at that lead
    first = next(im for im in errors if im.get_gid() == "error:b")
    expected = (counts * 0.5 - counts).abs()[0, leads[0], 0].double().numpy()
    assert np.allclose(first.get_array(), expected)
    titles = [ax.get_title() for ax in figure.axes if ax.get_title()]
    assert titles == [f"lead {s + 1}" for s in leads]
    signed = plot_prediction_panel(counts - 25, {"a": forecast - 25})
    fields = [im for ax in signed.axes for im in ax.images if im.get_gid().startswith("field:")]
    assert {im.get_cmap().name for im in fields} == {"RdBu_r"}
    low, high = fields[0].get_clim()
    assert low == -high
    # a split with negative values makes a non-negative window diverging too
    split = plot_prediction_panel(counts, {"a": forecast}, value_range=(-3.0, 60.0))
    assert split.axes[0].images[0].get_cmap().name == "RdBu_r"


# -- forecast spectra ---------------------------------------------------------------------------


def test_test_pass_fields_stream_the_spectra_and_the_truth_range():
    torch.manual_seed(1)
    truth = torch.randn(6, 2, 2, 16, 16)
    forecast = truth * 0.5
    fields = TestPassFields()
    for start in (0, 4):  # batches of 4 and 2
        fields.observe(None, truth[start : start + 4])
        fields.observe("m/x", forecast[start : start + 4])
    k, whole = radial_energy_spectrum(truth, reduce_dims=(0, 1))
    assert np.allclose(fields.spectrum(None), whole)
    assert np.allclose(fields.spectrum("m/x"), 0.25 * whole)
    assert np.array_equal(fields.k, k) and fields.keys == ["m/x"]
    assert np.allclose(fields.truth_min, truth.amin((0, 1, 3, 4)).double().numpy())
    assert np.allclose(fields.truth_max, truth.amax((0, 1, 3, 4)).double().numpy())
    assert fields.spectrum("missing") is None


def test_forecast_spectra_figure_draws_the_truth_and_each_forecast_log_log():
    results = [
        _result("teacher", "simvp", "supervised", 1.0),
        _result("student", "unet", "sdkd", 2.0),
    ]
    k = np.arange(9, dtype=float)
    truth = np.stack([np.r_[5.0, k[1:] ** -3.0], np.r_[1.0, k[1:] ** -2.0]])
    forecasts = {"simvp/supervised": truth, "unet/sdkd": truth * np.exp(-k / 4)}
    metas = [{"long_name": "u", "units": "m/s"}, {"long_name": "T", "units": "K"}]
    figure = plot_forecast_spectra(
        k, truth, forecasts, results, channel_metadata=metas, band_cutoffs=(2.5, 6.0)
    )
    top, ratio = figure.axes[0], figure.axes[2]  # channel 0: spectrum, then its ratio
    assert top.get_xscale() == "log" and top.get_yscale() == "log"
    gids = {line.get_gid(): line for line in top.get_lines()}
    assert {"spectrum_truth_0", "spectrum_simvp/supervised_0", "spectrum_unet/sdkd_0"} <= set(gids)
    assert list(gids["spectrum_truth_0"].get_xdata()) == list(k[1:])  # the mean is left out
    assert top.get_ylabel() == "E(k) of u [(m/s)²]"
    assert figure.axes[1].get_ylabel() == "E(k) of T [K²]"
    lines = {line.get_gid(): line for line in ratio.get_lines()}
    assert np.allclose(lines["ratio_simvp/supervised_0"].get_ydata(), 1.0)
    assert np.allclose(lines["ratio_unet/sdkd_0"].get_ydata(), np.exp(-k[1:] / 4))
    assert sum(1 for line in top.get_lines() if line.get_gid() == "band_cutoff") == 2
    assert plot_forecast_spectra(None, None, {}, results).axes[0].texts[0].get_gid() == "no_data"


# -- the compact table --------------------------------------------------------------------------


def test_compact_table_has_fewer_columns_units_and_three_significant_figures():
    results = _results()
    results[0].metrics = _metrics(0.012345)
    table = build_table(
        results,
        teachers=["simvp"],
        students=["unet", "resnet"],
        methods=["none", "sdkd"],
        batch_sizes=[1, 8],
    )
    compact = compact_table(table, channel_metadata=VORTICITY, reference_teacher="simvp")
    assert list(compact.columns) == [
        "role",
        "model",
        "method",
        "params",
        "GFLOPs",
        "MSE [(1/s)²]",
        "MAE [1/s]",
        "PSNR [dB]",
        "SSIM",
        "high-band MSE [(1/s)²]",
        "CPU latency b=1 [ms]",
        "speedup vs simvp [×]",
        "gap closed (MSE)",
    ]
    assert len(compact.columns) < len(table.columns)
    text = compact_markdown(table, channel_metadata=VORTICITY, reference_teacher="simvp")
    lines = text.splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:9]]
    column = {name: [row[i] for row in rows] for i, name in enumerate(header)}
    # 3 significant figures, one notation per column
    assert column["MSE [(1/s)²]"] == ["0.0123", "4.00", "3.00", "3.50", "2.00", "3.20", "2.50"]
    assert column["CPU latency b=1 [ms]"] == [
        "9.00",
        "0.0100",
        "0.0200",
        "1.00",
        "1.00",
        "2.00",
        "2.00",
    ]
    assert column["speedup vs simvp [×]"] == ["1.00", "900", "450", "9.00", "9.00", "4.50", "4.50"]
    assert column["params"] == ["1,000"] * 7
    assert column["gap closed (MSE)"][0] == ""  # a teacher: blank, never nan
    assert "nan" not in text
    assert lines[-1] == "`teacher_check`: simvp: ok."
    # the full table keeps full precision in the CSV
    assert table.loc[0, "mse"] == 0.012345


def test_to_markdown_significant_figures_pick_one_notation_per_column():
    table = pd.DataFrame(
        {"a": [0.5, 12.345, 999.6], "b": [1e-5, 0.25, 3.0], "c": [123456.0, 2.0, math.inf]}
    )
    lines = to_markdown(table, significant=3).splitlines()
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    assert [row[0] for row in cells] == ["0.500", "12.3", "1000"]
    assert [row[1] for row in cells] == ["1.00e-05", "2.50e-01", "3.00e+00"]
    assert [row[2] for row in cells] == ["1.23e+05", "2.00e+00", "inf"]
    # without it, the old fixed-decimals format
    assert "0.5000" in to_markdown(table)


# -- the whole evaluation -----------------------------------------------------------------------


def test_evaluate_checkpoints_draws_every_figure_from_one_pass():
    rng = np.random.default_rng(0)
    fields = rng.gamma(2.0, 3.0, size=(3, 9, 1, 16, 16)).astype(np.float32)  # counts: >= 0
    raw = make_raw(
        fields,
        dataset="demo",
        source="test:demo",
        channels=["inflow"],
        time=np.arange(9, dtype=np.float64),
        long_names=["crowd inflow"],
        units=["1"],
    )
    windows = WindowDataset(
        build_tensor_dataset(raw, split=SplitConfig(1, 1, 1), window=WindowConfig(2, 3)).load(),
        "test",
    )
    shape = {"in_frames": 2, "out_frames": 3, "channels": 1, "height": 16, "width": 16}
    entries = []
    for role, method, seed in (("teacher", "supervised", 0), ("student", "none", 1)):
        torch.manual_seed(seed)
        model = build_model("unet", **shape, hidden=8, base_width=8, levels=2).eval()
        entries.append((role, "unet" if role == "student" else "big", method, model, {}))
    cfg = EvaluationConfig.from_params(
        {
            "batch_size": 2,
            "latency": {"repeats": 1, "warmup": 0, "batch_sizes": [1]},
            "device": "cpu",
            "exported_latency": {"formats": []},
        }
    )
    result = evaluate_checkpoints(entries, windows, cfg, dataset="demo")
    assert list(result.figures) == list(FIGURES)
    assert result.step_figure is result.figures["metrics_per_step"]
    spectra = result.figures["forecast_spectra"].axes[0]
    gids = {line.get_gid() for line in spectra.get_lines()}
    assert {"spectrum_truth_0", "spectrum_big/supervised_0", "spectrum_unet/none_0"} <= gids
    assert "spectrum_persistence/baseline_0" in gids
    assert spectra.get_ylabel() == "E(k) of crowd inflow [dimensionless]"
    panel = result.figures["predictions"]
    cmaps = {im.get_cmap().name for ax in panel.axes for im in ax.images}
    assert cmaps == {"viridis", "magma_r"}  # counts: sequential
    for figure in result.figures.values():
        _drawn(figure)
