"""What the tests and the benchmarks share, importable as `tests.support.<module>` from the
repository root (pytest's `pythonpath = ["."]`; `python -m benchmarks.bench_x`):

    runs          synthetic run folders written by the engine's own writer (make_fixture_run, make_scale_run)
    claim_runs    run folders built to satisfy or violate each claim (make_claims_run)
    encoders      tiny encoder factories, named in specs as `tests.support.encoders:<factory>`
    tiny_models   small timm ViTs, named as `tests.support.tiny_models:tiny_vit` / `micro_vit`
    reference     the authors' `match` loop (the probe's reference in tests, the baseline in bench_match)
    sweeps        pair shards, specs, reading results back, a leak-free environment for Ray processes
    messy_folder  an ImageNet-style folder with every awkward image (the shard tests)
    s3            moto's standalone S3 server on a free local port
    cli_inproc    `vitsweep ARGS` through the CLI's entry point inside the test process
"""
