"""``python -m sdkd_pipeline.data.sources.weatherbench``: download WeatherBench 1 variables."""

from sdkd_pipeline.data.sources.weatherbench import main

if __name__ == "__main__":
    raise SystemExit(main())
