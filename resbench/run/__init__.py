"""Running a suite: the driver, its jobs, cell identity, the trial loop, executors and the results store."""
