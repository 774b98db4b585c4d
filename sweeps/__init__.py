"""The sweep: a grid of runs as one Hydra multirun (sweep.py is its command line).

    grid      the grid's jobs, expanded as Hydra's basic sweeper expands them
    plan      each job's config, run directory, fingerprint and estimated cost (--dry-run, status)
    ladder    the lambda ladder's multiruns: anchors from scratch, then fine-tunes
    slurm     a ladder on Slurm: every step submitted at once, fine-tunes behind their anchors
    launch    starting a multirun (`run.py -m`)
    summary   the end of every multirun (a Hydra callback): states, report, exit status
"""
