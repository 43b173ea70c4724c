"""Explanations, in parts that depend only on the ones listed above them:

cam.py           the CAM maths: hook machinery, methods as pure functions, one table of methods
render.py        paste a crop's map back onto the frame (and landmarks into the crop), overlays,
                 the comparison strip
regions.py       face regions from the box and 5 landmarks; each region's share of a map
stage.py         the pipeline stage: maps, images and evidence per region for a verdict's
                 chosen frames
agnostic.py      LIME, KernelSHAP and occlusion (Captum) and a centre prior, for xai-eval
faithfulness.py  metrics: Table 1, deletion / insertion, localisation, randomisation sanity check
xai_eval.py      the `xai-eval` runner over labelled faces and self-blended pseudo-fakes
"""

# The product's map: what analyze, the API, the web page and the reports show by default, and
# whose evidence is reported per face region. Here, where the CLI reads it without torch.
DEFAULT = "hirescam++"
