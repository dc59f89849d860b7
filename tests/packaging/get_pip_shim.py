"""Stands in for pip's get-pip.py bootstrap script, which ansible-test downloads from a host
this machine cannot reach, to put pip into the virtual environments it creates for each sanity
test. It installs pip from the Python's own ensurepip, then the packages ansible-test asked
for (pip at its pinned version, from PyPI). tests/packaging.sh copies it to where ansible-test
looks for its cached copy, under a temporary HOME."""

import subprocess
import sys

# get-pip.py's own options; pip does not know them.
arguments = [argument for argument in sys.argv[1:] if argument not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade", "--default-pip"], stdout=subprocess.DEVNULL)
subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet"] + arguments)
