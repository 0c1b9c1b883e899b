"""Safety classifier: corpus loaders, group-aware splits, the build and the calibrated hate classifier.

See :mod:`simplesafe.safety.build` (``simplesafe models build-safety``; its steps in
:mod:`~simplesafe.safety.build_data`, :mod:`~simplesafe.safety.heads` and :mod:`~simplesafe.safety.calibration`),
:mod:`simplesafe.safety.classifier` (scoring) and :mod:`simplesafe.text.toxicity` (the
``ensemble`` backend that curation, rewards and evaluation use). Docs: ``docs/safety.md``.
"""
