"""`python -m benchmarks.profile`: see benchmarks/profile/run.py."""

from benchmarks.profile.run import main

main()
