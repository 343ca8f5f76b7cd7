"""Docker's data-root storage: which disks to use (plan), make them (ensure), measure them (probe),
and move data-root onto them (move)."""
