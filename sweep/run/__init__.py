"""Running a sweep: the validated spec and its work units (spec), one unit end to end (worker),
Ray actors (distribute, the only Ray import), atomic Parquet results (store), the run's
provenance (manifest) and its progress file and bar (progress)."""
