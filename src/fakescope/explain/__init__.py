"""Explanations, in four parts that depend on each other in this order only:

cam.py           the CAM maths: hook machinery, methods as pure functions, one table of methods
render.py        paste a crop's map back onto the frame, coloured overlays, the comparison strip
stage.py         the pipeline stage: maps and images for the chosen frames of a verdict
faithfulness.py  metrics: Table 1, deletion / insertion, localisation, randomisation sanity check
xai_eval.py      the `xai-eval` runner over labelled faces and self-blended pseudo-fakes
"""
