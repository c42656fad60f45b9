from pyctr.runtime.cli import run

run()
