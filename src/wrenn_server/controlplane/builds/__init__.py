"""Template builds below the services: recipe parsing, build archives and the build queue. The
workers that run builds are jobs (`jobs/build_workers.py`, `jobs/build_runner.py`)."""
