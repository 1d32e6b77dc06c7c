"""`python -m tfd_sweep`: one run, or a sweep with -m."""

from tfd_sweep.app import main

if __name__ == "__main__":
    main()
