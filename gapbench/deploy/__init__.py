"""After training: export a run's sparse weights and masks, and measure real inference speed."""
