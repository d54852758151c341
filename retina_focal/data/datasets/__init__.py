"""Datasets: the embedded synthetic one (:mod:`.synthetic`, registered by :mod:`.builtin`)
and COCO-format files named on the command line (:mod:`.coco`)."""
