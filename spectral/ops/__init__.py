"""Operating the server: the command line (``cli``), ``spectral doctor`` (``doctor``),
Prometheus metrics (``metrics``) and structured logs (``logs``)."""
