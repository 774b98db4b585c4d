"""One job of the `local` launcher, in its own process: the config the launcher composed (pickled with the
task function, as submitit does) runs through Hydra's run_job, so a grid point is composed once.

    python -m hydra_plugins.lic_sweep_launcher.job JOB.pkl
"""

import sys

import cloudpickle
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import run_job, setup_globals


def main(path: str) -> int:
    with open(path, "rb") as f:
        job = cloudpickle.load(f)
    setup_globals()
    HydraConfig.instance().set_config(job["config"])
    ret = run_job(hydra_context=job["hydra_context"], task_function=job["task_function"], config=job["config"],
                  job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
    ret.return_value  # re-raises what the task raised (the task itself records failures: entry.task_wrapper)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
