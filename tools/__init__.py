"""Tools built on the library: evaluation (``tools.eval``), synthetic scenes (``tools.synth``), benchmarks
(``tools.bench``) and the ground-truth oracle (``tools.oracle``).

A floor beside ``training`` and ``app``: tools import ``recon`` and ``backbone``; the library never imports tools.
"""
