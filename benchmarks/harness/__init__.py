"""What the benchmarks share, so that no script is a library for another one.

- :mod:`.memory`: a command run to its end in a process of its own, its wall time split into
  start-up, work and end, and its peak RSS (the kernel's high-water mark, and the process tree's
  polled sum); disk use.
- :mod:`.timing`: timing inside a process: medians of repeated calls, Keras epochs timed.
- :mod:`.children`: the lines a benchmark's own child processes (references, floors, bare fits)
  print for the parent to read, and the entry point that runs such a child.
- :mod:`.runs`: clean copies of the project and the stages run in them, as DVC runs them.
- :mod:`.training`: the Keras tasks' train stage against a bare ``model.fit``, their shared goals.
- :mod:`.report`: goal rows (a measured ratio against its goal), the printed tables, the results
  file.

The scripts run as ``python benchmarks/<name>.py``: their folder is ``sys.path[0]`` and they
import this package as ``harness``; tests import it as ``benchmarks.harness`` from the repository
root. So its modules import one another relatively, which works under both names. They import
only the standard library at the top (odpipe, psutil and TensorFlow inside the functions that need
them): a benchmark runs itself as child processes whose start-up must be a bare script's, and
TensorFlow loaded in the parent would sit under every child's peak RSS (see
:func:`.memory.measure`).
"""
