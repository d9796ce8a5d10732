"""The experiment harness behind the book: ``pip install "gofau[lab]"``.

``config`` (a run's settings and id), ``data`` (image data sets), ``models``, ``train`` (one run,
``gofau-train``), ``grid`` (a resumable grid of runs, ``gofau-grid``), ``records`` (one JSON file
per run), ``analysis`` (summaries and tests over records), ``functions`` and ``landscape`` (the
2D test functions and their protocol), ``chapter`` (what the book's notebooks share), and
``provenance`` (git commit and device). ``import gofau`` never imports this package.
"""
