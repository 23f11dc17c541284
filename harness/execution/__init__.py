"""Running one job: the parent-side runner, the child worker, compile caches, devices and the floor probe."""
