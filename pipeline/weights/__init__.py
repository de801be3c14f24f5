"""Where every pretrained file comes from: one module per job.

- :mod:`~pipeline.weights.registry`: what each file is (Hub repo, name, size/sha256, licence) and the weights folder;
- :mod:`~pipeline.weights.download`: :func:`~pipeline.weights.download.resolve_weight` (folder, pip package copy,
  then the Hub, verified before it is used);
- :mod:`~pipeline.weights.checks`: local checks, ``.verified`` markers and the status report;
- :mod:`~pipeline.weights.stand_in`: seeded random weights in the real formats, and the stand-in note;
- :mod:`~pipeline.weights.cli`: ``python -m pipeline.weights {list,status,verify,download,make-test-weights}``.

:func:`pipeline.models.load_models` resolves every file (the dlib landmark model included) through these.
"""
