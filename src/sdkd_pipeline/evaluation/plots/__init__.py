"""The evaluation's figures, as matplotlib ``Figure`` objects (no pyplot state), one visual
encoding for all of them (``style``: colour = model, line style / marker / hatch = method,
legends outside the data, units from the store's CF metadata):

- ``curves``: MSE and SSIM per forecast step, band MSE bars, band MSE against lead time;
- ``spectra``: the forecasts' radial energy spectra against the truth's, from the
  ``TestPassFields`` gathered in the test pass;
- ``tradeoffs``: the accuracy-latency Pareto plot and the gap-closed bars (seed intervals);
- ``panels``: the prediction panel (lead-time strip and error maps);
- ``build``: every figure of one evaluation (``FIGURES``, ``evaluation_figures``).

matplotlib is imported inside the drawing functions, so importing this package needs only
numpy, torch and scipy (for a seed interval).
"""

from sdkd_pipeline.evaluation.plots.build import FIGURES, evaluation_figures, gap_closed_by_seed
from sdkd_pipeline.evaluation.plots.curves import (
    plot_band_errors,
    plot_band_errors_by_lead,
    plot_step_curves,
)
from sdkd_pipeline.evaluation.plots.panels import lead_steps, plot_prediction_panel
from sdkd_pipeline.evaluation.plots.spectra import TestPassFields, plot_forecast_spectra
from sdkd_pipeline.evaluation.plots.style import Styles, field_colormap
from sdkd_pipeline.evaluation.plots.tradeoffs import (
    pareto_front,
    plot_gap_closed,
    plot_pareto,
    seed_interval,
)

__all__ = [
    "FIGURES",
    "Styles",
    "TestPassFields",
    "evaluation_figures",
    "field_colormap",
    "gap_closed_by_seed",
    "lead_steps",
    "pareto_front",
    "plot_band_errors",
    "plot_band_errors_by_lead",
    "plot_forecast_spectra",
    "plot_gap_closed",
    "plot_pareto",
    "plot_prediction_panel",
    "plot_step_curves",
    "seed_interval",
]
