"""Wavenumber bands, radial energy spectra and the spectral analysis stage's library, in torch and
numpy only (no Kedro, MLflow, Zarr or Dask): ``grid`` holds the wavenumber grid, the FFT helpers
and the conventions all modules share (``radial_wavenumber``, ``rfft_weights``); ``bands`` the
Parseval-exact band operators ``BandSplit`` of the distillation losses and the evaluation's band
MSE; ``spectra`` radial spectra, detrending and windowing, power-law and exponential fits and
the spectrum statistics (centroid, high-band fraction, adaptive cutoff); ``wavelet`` the
orthogonal wavelet bands per region ``WaveletSplit`` (a band split that varies in space); and,
for the ``spectral`` stage (``kedro run --pipelines=spectral``), ``config`` its settings
(``SpectralConfig``), ``measure`` the spectra of the data and of a teacher's latents over a
dataset, ``shares`` the band shares of the data and of the teacher's error, ``plots`` its figure
and ``analysis`` the whole analysis, which gathers the stage's public names. This package
re-exports the bands, wavelet, grid and spectra names; the stage library is imported from
``sdkd_pipeline.spectral.analysis`` (not here, so that ``import sdkd_pipeline.spectral`` stays as
light as the losses and metrics need).
"""

from sdkd_pipeline.spectral.bands import BandSplit
from sdkd_pipeline.spectral.grid import radial_wavenumber, rfft_weights
from sdkd_pipeline.spectral.spectra import (
    ExponentialFit,
    PowerLawFit,
    detrend_and_window,
    energy_fraction_cutoff,
    fit_exponential,
    fit_power_law,
    high_band_fraction,
    radial_energy_spectrum,
    spectral_centroid,
)
from sdkd_pipeline.spectral.wavelet import WaveletSplit

__all__ = [
    "BandSplit",
    "ExponentialFit",
    "PowerLawFit",
    "detrend_and_window",
    "energy_fraction_cutoff",
    "fit_exponential",
    "fit_power_law",
    "high_band_fraction",
    "radial_energy_spectrum",
    "radial_wavenumber",
    "rfft_weights",
    "WaveletSplit",
    "spectral_centroid",
]
