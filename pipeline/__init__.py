"""streamcast: streaming time-series forecasting pipeline."""
