"""One sweep's lifecycle: the driver that runs a spec top-down as stages (driver: checks, cost
estimate, Ray, lease, manifest, progress, the sweep, the labels pass, the end), the validated
spec and its work units (spec), one unit end to end (worker), Ray actors and the pull loop
(distribute, the only Ray import), the run directory's storage: atomic Parquet writes, the one
reader of result tables, small JSON files, the S3 client (store), one driver per run directory
(lease), the run's provenance (manifest) and its progress file and bar (progress). Operations
on a finished run (labels pass, replay) are in sweep/finished/, cost planning in sweep/planning/."""
