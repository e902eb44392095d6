"""SkinVL: generative visual question answering on skin images (work in progress).

What exists so far: question/answer pairs generated from the atlas annotations
(:mod:`skinvl.qa`). The model, training and generation are not built yet.
"""
