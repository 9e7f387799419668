"""``python -m sdkd_pipeline.data.sources.rayleigh_benard``: download The Well's RBC files."""

from sdkd_pipeline.data.sources.rayleigh_benard import main

if __name__ == "__main__":
    raise SystemExit(main())
