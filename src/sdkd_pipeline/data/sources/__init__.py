"""One module per dataset. Each returns a *raw dataset* as defined in ``raw.py``."""
