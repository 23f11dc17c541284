"""Is a backend right: lockstep parity against the float64 oracle, calibrated targets, agreement, check and compare."""
